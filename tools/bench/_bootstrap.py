"""Start-up shared by the benchmark scripts, which also run on a bare GPU machine where nothing
is installed but torch, transformers and the MLX wheel: ``audiogen_*`` from the source tree when
not installed, the import order that machine needs, and stand-ins for the audio-file modules
(``audiogen_core.audio`` imports them; no benchmark reads or writes audio files).

Import it first, as ``import _bootstrap`` (the script's folder is on ``sys.path``)."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AUDIO_IO_MODULES = ("soundfile", "soxr", "pyloudnorm")


def bootstrap(*, stub_audio_io: bool = True) -> list[str]:
    """Make ``audiogen_*`` importable (audiogen_core first: its OpenBLAS preload must precede
    mlx), import torch before mlx (mlx[cuda13] loads an older cuDNN, which torch then refuses to
    use), and stub missing audio-file modules. Returns the stubbed names: pass them to
    ``unstub`` once ``audiogen_*`` is imported."""
    try:
        importlib.import_module("audiogen_core")
    except ImportError:
        sys.path[:0] = [str(p) for p in sorted((ROOT / "packages").glob("*/src"))]
        importlib.import_module("audiogen_core")
    importlib.import_module("torch")
    stubbed = []
    for name in AUDIO_IO_MODULES if stub_audio_io else ():
        try:
            importlib.import_module(name)
        except (ImportError, OSError):  # soundfile raises OSError without libsndfile
            sys.modules[name] = types.ModuleType(name)
            stubbed.append(name)
    return stubbed


def unstub(names: list[str]) -> None:
    """Only audiogen_core.audio needed the stand-ins; others (transformers' find_spec checks)
    must see the modules as absent, not as stubs without a spec."""
    for name in names:
        del sys.modules[name]
