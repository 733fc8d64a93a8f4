"""Audio files in and out, resampling, channel conversion, level normalisation and playback.

Every array here is numpy ``float32`` shaped ``(channels, samples)``; a 1-D ``(samples,)`` array is
accepted wherever audio comes in and treated as mono.

Level policy: no function in this module silently produces samples outside [-1, 1].
``write`` clips (with a warning) because every integer subtype would wrap or clip anyway and float
files with overs play back distorted on most players; the normalisers lower their gain so the
peak lands at exactly 1.0 (with a warning saying which level was reached instead of the target),
a plain gain change that adds no distortion.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess  # nosec B404
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from audiogen_core.errors import AudioFileError, AudiogenError, InvalidInputError

import numpy as np
import soundfile
import soxr

PathLike = str | os.PathLike[str]

# Suffix -> (libsndfile format, default subtype). wav stays 16-bit PCM for compatibility (what
# audiocraft's audio_write does); flac is lossless anyway, so 24-bit costs little.
WRITE_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_24"),
    ".ogg": ("OGG", "VORBIS"),
}

# What libsndfile 1.2 accepts per format (measured): more channels fail to open for wav/flac,
# and Vorbis with 256 channels segfaults inside libsndfile, so the limit is checked before it.
MAX_CHANNELS: dict[str, int] = {"WAV": 1024, "FLAC": 8, "OGG": 255}

RESAMPLE_QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")

# BS.1770 gating block; pyloudnorm refuses shorter clips.
LOUDNESS_BLOCK_S = 0.4

# pyloudnorm's channel weights cover 5 channels (L, R, C, Ls, Rs).
_LOUDNESS_MAX_CHANNELS = 5

_PLAYERS: tuple[tuple[str, tuple[str, ...], frozenset[str] | None], ...] = (
    # (executable, arguments before the path, suffixes it can play or None for anything)
    ("afplay", (), frozenset({".wav", ".flac", ".mp3", ".aiff", ".aif", ".caf"})),
    ("paplay", (), None),
    ("aplay", (), frozenset({".wav"})),  # raw PCM/WAV only: it would play flac as noise
    ("ffplay", ("-nodisp", "-autoexit", "-loglevel", "error"), None),
)


def _as_audio(audio: Any, what: str = "audio") -> np.ndarray:
    """A float32 (C, N) view/copy of ``audio``; rejects non-float dtypes and other ranks."""
    arr = np.asarray(audio)
    if not np.issubdtype(arr.dtype, np.floating):
        raise InvalidInputError(
            f"{what} must be a float array with samples in [-1, 1], got dtype {arr.dtype}"
        )
    if arr.ndim == 1:
        arr = arr[None, :]
    elif arr.ndim != 2:
        raise InvalidInputError(
            f"{what} must be shaped (samples,) or (channels, samples), got shape {arr.shape}"
        )
    return np.ascontiguousarray(arr, dtype=np.float32)


def _check_finite(arr: np.ndarray, what: str = "audio") -> None:
    if not np.isfinite(arr).all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(np.isinf(arr).sum())
        raise InvalidInputError(f"{what} contains {n_nan} NaN and {n_inf} infinite samples")


def _check_rate(rate: Any, name: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, int | float | np.integer | np.floating):
        raise InvalidInputError(f"{name} must be a positive number, got {rate!r}")
    value = float(rate)
    if not np.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{name} must be a positive number, got {rate!r}")
    return value


def _check_int_rate(rate: Any, name: str) -> int:
    value = _check_rate(rate, name)
    if value != int(value):
        raise InvalidInputError(f"{name} must be a whole number of Hz, got {rate!r}")
    return int(value)


def _check_dbfs(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidInputError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not np.isfinite(v) or v > 0:
        # Above 0 dBFS the result could only be reached by going past full scale.
        raise InvalidInputError(f"{name} must be finite and <= 0, got {value!r}")
    return v


def read(
    path: PathLike, *, sample_rate: int | None = None, channels: int | None = None
) -> tuple[np.ndarray, int]:
    """Decode any file libsndfile reads (wav, flac, ogg, mp3, aiff...) to float32 (C, N).

    ``sample_rate`` resamples (soxr HQ) and ``channels`` converts (see ``to_channels``) after
    decoding. Returns ``(audio, sample_rate)``. Missing, unreadable, empty, non-finite or non-audio
    files raise ``AudioFileError`` naming the file.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise AudioFileError(f"{p}: audio file not found")
    if p.is_dir():
        raise AudioFileError(f"{p}: is a directory, not an audio file")
    try:
        data, sr = soundfile.read(str(p), dtype="float32", always_2d=True)
    except soundfile.SoundFileError as e:
        # libsndfile sniffs the content, so a text file named .wav lands here too.
        raise AudioFileError(f"{p}: cannot decode audio ({e})") from e
    except OSError as e:
        raise AudioFileError(f"{p}: cannot read audio file ({e.strerror or e})") from e
    if data.shape[0] == 0:
        raise AudioFileError(f"{p}: audio file is empty (0 frames)")
    audio = np.ascontiguousarray(data.T)
    if not np.isfinite(audio).all():
        raise AudioFileError(f"{p}: audio file contains NaN or infinite samples")
    sr = int(sr)
    try:
        if sample_rate is not None:
            target = _check_int_rate(sample_rate, "sample_rate")
            audio = resample(audio, sr, target)
            sr = target
        if channels is not None:
            audio = to_channels(audio, channels)
    except InvalidInputError as e:
        raise InvalidInputError(f"{p}: {e}") from e
    return audio, sr


def resample(audio: Any, sr_in: float, sr_out: float, quality: str = "HQ") -> np.ndarray:
    """Band-limited resampling with soxr, channel by channel; float32 (C, M) out.

    The output has ``round(N * sr_out / sr_in)`` samples. Equal rates return a copy.
    """
    arr = _as_audio(audio)
    rate_in = _check_rate(sr_in, "sr_in")
    rate_out = _check_rate(sr_out, "sr_out")
    if quality not in RESAMPLE_QUALITIES:
        raise InvalidInputError(
            f"quality must be one of {', '.join(RESAMPLE_QUALITIES)}, got {quality!r}"
        )
    _check_finite(arr)
    if rate_in == rate_out:
        return arr.copy()
    # soxr wants (frames, channels) and keeps float32.
    out = soxr.resample(arr.T, rate_in, rate_out, quality=quality)
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32).T)


def to_mono(audio: Any) -> np.ndarray:
    """Average of the channels, shaped (1, N)."""
    arr = _as_audio(audio)
    return arr.mean(axis=0, keepdims=True, dtype=np.float32)


def to_channels(audio: Any, n: int) -> np.ndarray:
    """Mono to ``n`` identical channels, or ``n``-channel to mono by averaging.

    Other conversions (e.g. stereo to 5.1) have no single right answer and are refused.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise InvalidInputError(f"channels must be a positive integer, got {n!r}")
    arr = _as_audio(audio)
    c = arr.shape[0]
    if c == n:
        return arr.copy()
    if c == 1:
        return np.repeat(arr, int(n), axis=0)
    if n == 1:
        return to_mono(arr)
    raise InvalidInputError(
        f"cannot convert {c} channels to {n}: only mono to n channels and n channels to mono "
        f"are supported (audio shape {arr.shape}, expected (channels, samples))"
    )


def _check_output_path(path: PathLike, mkdir_parents: bool) -> Path:
    given = Path(path).expanduser()
    if ".." in given.parts:
        raise InvalidInputError(f"{path}: output path must not contain '..' components")
    p = given.resolve()
    parent = p.parent
    if not parent.exists():
        if not mkdir_parents:
            raise InvalidInputError(
                f"{p}: directory {parent} does not exist (create it, or pass mkdir_parents=True)"
            )
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AudioFileError(f"{p}: cannot create directory {parent}: {e}") from e
    if not parent.is_dir():
        raise InvalidInputError(f"{p}: {parent} is not a directory")
    if p.is_dir():
        raise InvalidInputError(f"{p}: is a directory")
    return p


def _temp_sibling(p: Path) -> Path:
    """Create an empty, exclusive temp file beside ``p``.

    Opened with mode 0o666 so the umask applies as it would to ``p`` itself (mkstemp's 0o600
    would leave the final file private after the rename).
    """
    for _ in range(100):
        tmp = p.with_name(f".{p.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        except OSError as e:
            raise AudioFileError(f"{p}: cannot create a file in {p.parent}: {e}") from e
        os.close(fd)
        return tmp
    raise AudioFileError(f"{p}: cannot create a temporary file in {p.parent}")


def write(
    path: PathLike,
    audio: Any,
    sample_rate: int,
    *,
    subtype: str | None = None,
    mkdir_parents: bool = False,
) -> Path:
    """Write ``audio`` ((N,) or (C, N) floats in [-1, 1]) to a wav, flac or ogg file, atomically.

    The format follows the suffix; ``subtype`` overrides the default (wav PCM_16, flac PCM_24,
    ogg VORBIS; ``"FLOAT"`` gives an exact float32 wav). Samples beyond [-1, 1] are clipped with a
    warning. The data goes to a temp file in the destination directory that is renamed over the
    target only once complete, so a failure never leaves a partial file or damages an existing
    one. Returns the resolved path written.
    """
    p = _check_output_path(path, mkdir_parents)
    suffix = p.suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise InvalidInputError(
            f"{p}: unsupported output format {p.suffix or '(no suffix)'!r}; "
            f"supported: {', '.join(WRITE_FORMATS)}"
        )
    fmt, default_subtype = WRITE_FORMATS[suffix]
    st = (subtype or default_subtype).upper()
    if not soundfile.check_format(fmt, st):
        raise InvalidInputError(
            f"{p}: subtype {subtype!r} cannot be written as {suffix}; "
            f"supported: {', '.join(soundfile.available_subtypes(fmt))}"
        )
    rate = _check_int_rate(sample_rate, "sample_rate")

    arr = _as_audio(audio)
    c, n = arr.shape
    if n == 0:
        raise InvalidInputError(f"{p}: refusing to write empty audio (shape {arr.shape})")
    if c > MAX_CHANNELS[fmt]:
        hint = " (did you pass (samples, channels)? use audio.T)" if c > n else ""
        raise InvalidInputError(
            f"{p}: {suffix} holds at most {MAX_CHANNELS[fmt]} channels, got {c} "
            f"from shape {arr.shape}, expected (channels, samples){hint}"
        )
    _check_finite(arr)
    peak = float(np.abs(arr).max())
    if peak > 1.0:
        n_over = int((np.abs(arr) > 1.0).sum())
        warnings.warn(
            f"{p}: clipping {n_over} samples beyond [-1, 1] (peak {peak:.3f}); "
            "normalise the audio first to avoid distortion",
            stacklevel=2,
        )
        arr = np.clip(arr, -1.0, 1.0)

    tmp = _temp_sibling(p)
    try:
        soundfile.write(str(tmp), arr.T, rate, format=fmt, subtype=st)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except soundfile.SoundFileError as e:
        raise AudioFileError(f"{p}: cannot encode {suffix} ({st}, {rate} Hz): {e}") from e
    except OSError as e:
        raise AudioFileError(f"{p}: cannot write audio file: {e}") from e
    finally:
        # After a successful os.replace the temp name is gone; otherwise remove the partial file,
        # whatever the failure (KeyboardInterrupt included).
        tmp.unlink(missing_ok=True)
    return p


def _finish_gain(arr: np.ndarray, gain: float, what: str, target: str) -> np.ndarray:
    """Apply ``gain``, lowering it to keep the peak at 1.0 when it would go beyond."""
    peak = float(np.abs(arr).max()) * gain
    if peak > 1.0:
        gain /= peak
        warnings.warn(
            f"{what}: reaching {target} would push the peak to {20 * np.log10(peak):+.2f} dBFS; "
            "gain lowered so the peak is 0 dBFS instead",
            stacklevel=3,
        )
    return (arr * np.float32(gain)).astype(np.float32)


def peak_normalize(audio: Any, target_dbfs: float = -1.0) -> np.ndarray:
    """Scale so the largest absolute sample (over all channels) is ``target_dbfs``.

    Silence is returned unchanged.
    """
    target = _check_dbfs(target_dbfs, "target_dbfs")
    arr = _as_audio(audio)
    _check_finite(arr)
    peak = float(np.abs(arr).max()) if arr.size else 0.0
    if peak == 0.0:
        return arr.copy()
    return (arr * np.float32(10 ** (target / 20) / peak)).astype(np.float32)


def rms_normalize(audio: Any, target_dbfs: float = -20.0) -> np.ndarray:
    """Scale so the RMS over all samples of all channels is ``target_dbfs`` (0 dBFS = RMS 1).

    Silence is returned unchanged. When the gain would push the peak beyond full scale it is
    lowered to a 0 dBFS peak and a warning says so.
    """
    target = _check_dbfs(target_dbfs, "target_dbfs")
    arr = _as_audio(audio)
    _check_finite(arr)
    rms = float(np.sqrt(np.mean(np.square(arr, dtype=np.float64)))) if arr.size else 0.0
    if rms == 0.0:
        return arr.copy()
    return _finish_gain(arr, 10 ** (target / 20) / rms, "rms_normalize", f"{target} dBFS RMS")


def loudness(audio: Any, sr: int) -> float:
    """Integrated loudness in LUFS (ITU-R BS.1770-4 via pyloudnorm; -inf for silence).

    Clips shorter than the 400 ms gating block cannot be gated: they are measured as one block
    spanning the whole clip, i.e. the K-weighted mean-square loudness without gating (what
    BS.1770 gives for a single block).
    """
    rate = _check_int_rate(sr, "sr")
    arr = _as_audio(audio)
    _check_finite(arr)
    c, n = arr.shape
    if c > _LOUDNESS_MAX_CHANNELS:
        raise InvalidInputError(
            f"loudness: BS.1770 weights cover at most {_LOUDNESS_MAX_CHANNELS} channels, got {c}"
        )
    if n == 0:
        raise InvalidInputError("loudness: audio is empty")
    if not np.any(arr):
        return float("-inf")
    block = LOUDNESS_BLOCK_S
    if n < block * rate:
        block = n / rate
        if block * rate > n:  # float rounding must not trip pyloudnorm's length check
            block = float(np.nextafter(block, 0.0))
    # Imported here: pyloudnorm imports scipy.signal, 3.4 s of every `import audiogen_musicgen`
    # on this 2-core CPU (measured with -X importtime) for a function most runs never call.
    import pyloudnorm

    meter = pyloudnorm.Meter(rate, block_size=block)
    data = arr[0].astype(np.float64) if c == 1 else arr.T.astype(np.float64)
    return float(meter.integrated_loudness(data))


def loudness_normalize(audio: Any, sr: int, target_lufs: float = -14.0) -> np.ndarray:
    """Scale to ``target_lufs`` integrated loudness (see ``loudness``).

    Silence (or audio below the -70 LUFS absolute gate) is returned unchanged. When the gain would
    push the peak beyond full scale it is lowered to a 0 dBFS peak and a warning says so.
    """
    target = _check_dbfs(target_lufs, "target_lufs")
    arr = _as_audio(audio)
    level = loudness(arr, sr)
    if not np.isfinite(level):
        return arr.copy()
    return _finish_gain(arr, 10 ** ((target - level) / 20), "loudness_normalize", f"{target} LUFS")


def _find_player(suffix: str) -> tuple[str, Sequence[str]] | None:
    for name, args, suffixes in _PLAYERS:
        if suffixes is not None and suffix not in suffixes:
            continue
        exe = shutil.which(name)
        if exe:
            return exe, args
    return None


def play(path: PathLike) -> None:
    """Play an audio file with the first system player found (afplay, paplay, aplay, ffplay).

    The resolved, absolute path is passed as one list argument, never through a shell, so no
    character in a file name can be interpreted as a command or an option.
    """
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise AudioFileError(f"{p}: audio file not found")
    found = _find_player(p.suffix.lower())
    if found is None:
        names = ", ".join(name for name, _, _ in _PLAYERS)
        raise AudiogenError(
            f"{p}: no audio player found for {p.suffix or 'this file'} (looked for {names}); "
            "install one (e.g. ffmpeg for ffplay) or open the file yourself"
        )
    exe, args = found
    try:
        subprocess.run([exe, *args, str(p)], check=True)  # noqa: S603  # nosec B603
    except subprocess.CalledProcessError as e:
        raise AudiogenError(
            f"{p}: {Path(exe).name} exited with status {e.returncode} while playing it"
        ) from e
    except OSError as e:
        raise AudiogenError(f"{p}: cannot run {exe}: {e}") from e


__all__ = [
    "MAX_CHANNELS",
    "RESAMPLE_QUALITIES",
    "WRITE_FORMATS",
    "loudness",
    "loudness_normalize",
    "peak_normalize",
    "play",
    "read",
    "resample",
    "rms_normalize",
    "to_channels",
    "to_mono",
    "write",
]
