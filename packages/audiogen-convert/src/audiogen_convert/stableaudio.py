"""Convert an upstream Stable Audio Open checkpoint (stable-audio-tools ``model_config.json`` with
``model.safetensors`` or ``model.ckpt``, or diffusers' ``StableAudioPipeline`` folders) into an
audiogen directory.

The conversion itself is audiogen_stableaudio's (``pipeline.read_upstream`` + ``pipeline.convert``,
the code ``StableAudio.from_pretrained`` runs in-process); this module adds format detection
(``formats.detect``: a ``model.ckpt`` is read with ``torch.load(weights_only=True)``), an optional
dtype cast, the overwrite rules shared with MusicGen and a manifest recording the upstream format.
Which conditioners and objective the model has come from its config, never its name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from audiogen_core.errors import WeightsError

import mlx.core as mx

from audiogen_convert import __version__
from audiogen_convert import formats as fmt
from audiogen_convert.musicgen import _as_dtype, _dtype_name, check_out_dir, move_into_place

STABLE_AUDIO_REPO_PREFIX = "stabilityai/stable-audio"


@dataclass(frozen=True)
class StableAudioConversion:
    """What ``convert_stableaudio`` found and wrote."""

    out_dir: Path
    format: str  # "stable-audio-tools" | "diffusers"
    objective: str  # "v" | "rf_denoiser"
    conditioners: tuple[str, ...]
    dtype: str


def is_stableaudio(name_or_path: str | os.PathLike[str]) -> bool:
    """Whether ``name_or_path`` is a Stable Audio model: a local directory with a
    stable-audio-tools ``model_config.json`` (and no transformers ``config.json``), a diffusers
    ``model_index.json`` or an audiogen Stable Audio manifest; or a ``stabilityai/stable-audio*``
    hub repo id."""
    p = Path(os.fspath(name_or_path)).expanduser()
    if p.is_dir():
        if (p / "model_index.json").is_file():
            return True
        if (p / "model_config.json").is_file() and not (p / "config.json").is_file():
            return True
        manifest = p / "manifest.json"
        if manifest.is_file():
            try:
                return bool(json.loads(manifest.read_text()).get("model") == "stable-audio")
            except (OSError, ValueError):
                return False
        return False
    return os.fspath(name_or_path).startswith(STABLE_AUDIO_REPO_PREFIX)


def convert_stableaudio(
    src: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dtype: str | mx.Dtype | None = None,
    offline: bool | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    force: bool = False,
) -> StableAudioConversion:
    """Convert ``src`` (a hub repo id or a local upstream directory) into ``out_dir``.

    ``dtype`` casts floating tensors (default: keep the published dtype). The result appears
    atomically: built in a temporary sibling and renamed into place; with ``force`` an existing
    ``out_dir`` is replaced only once the new copy is complete.
    """
    from audiogen_stableaudio import pipeline as sa

    check_out_dir(Path(out_dir), force=force)  # before any download
    cast_to = _as_dtype(dtype)
    found = sa.resolve(src, offline=offline, revision=revision, trust_remote_code=trust_remote_code)
    root = found.root
    target = check_out_dir(Path(out_dir), force=force, src=root)
    if found.layout == "audiogen":
        raise WeightsError(f"{root}: already an audiogen conversion")
    weights = None
    source_format = "diffusers"
    if found.layout == "sat":
        checkpoint = fmt.detect(root)
        if checkpoint.format != fmt.STABLE_AUDIO_TOOLS:
            raise WeightsError(
                f"{root}: model_config.json beside a {checkpoint.format} checkpoint; expected "
                "stable-audio-tools model.safetensors or model.ckpt"
            )
        if checkpoint.needs_torch:
            fmt.import_torch(checkpoint.files[0])  # the pip hint before any work
        weights = checkpoint.load()
        source_format = fmt.STABLE_AUDIO_TOOLS
    up = sa.read_upstream(
        root, t5_dir=found.t5_dir, tokenizer_dir=found.tokenizer_dir, weights=weights
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        built = sa.convert(
            up,
            tmp / "model",
            source=found.source,
            revision=revision or sa.snapshot_revision(root),
            dtype=cast_to,
            extra={
                "source_format": source_format,
                "converter": f"audiogen-convert {__version__}",
            },
        )
        manifest = sa.read_manifest(built)
        move_into_place(built, target, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return StableAudioConversion(
        out_dir=target,
        format=source_format,
        objective=str(manifest["objective"]),
        conditioners=tuple(manifest["conditioners"]),
        dtype=_dtype_name(cast_to) if cast_to is not None else str(manifest["dtype"]),
    )


__all__ = ["StableAudioConversion", "convert_stableaudio", "is_stableaudio"]
