"""The exception hierarchy. Libraries raise these; only the CLI turns them into one red line."""

from __future__ import annotations


class AudiogenError(Exception):
    """Base of every error audiogen raises on purpose."""


class InvalidInputError(AudiogenError, ValueError):
    """An argument or input value is out of range, of the wrong type or shape."""


class AudioFileError(InvalidInputError):
    """An audio file is missing, unreadable, empty or not audio. The message names the file."""


class WeightsError(AudiogenError):
    """Weights or configs are missing, incomplete or corrupt. The message names the file."""


class MissingWeightsError(WeightsError):
    """Parameters the model needs are absent from the checkpoint (or it has keys we do not know)."""


class CorruptWeightsError(WeightsError):
    """A weights file cannot be parsed: truncated, wrong format or inconsistent header."""


class DownloadError(AudiogenError):
    """The hub could not be reached, or a repo/file is not there."""


__all__ = [
    "AudioFileError",
    "AudiogenError",
    "CorruptWeightsError",
    "DownloadError",
    "InvalidInputError",
    "MissingWeightsError",
    "WeightsError",
]
