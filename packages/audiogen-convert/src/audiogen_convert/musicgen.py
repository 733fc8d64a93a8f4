"""Convert an upstream (transformers) MusicGen checkpoint, in any file format ``formats`` reads,
into an audiogen directory.

The conversion itself is audiogen_musicgen's (``audiogen_musicgen.convert.convert``, the same code
``MusicGen.from_pretrained`` runs in-process); this module adds what an explicit, one-off conversion
needs: format detection, an optional dtype cast, overwrite rules, and a manifest that records the
upstream format. Whether the model is mono or stereo comes from its config, never its name.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audiogen_core import backend
from audiogen_core.errors import InvalidInputError, WeightsError
from audiogen_core.weights import cast_floats, load_safetensors, save_safetensors

import mlx.core as mx

from audiogen_convert import __version__
from audiogen_convert import formats as fmt

DTYPES: dict[str, mx.Dtype] = {
    "float32": mx.float32,
    "float16": mx.float16,
    "bfloat16": mx.bfloat16,
}
# Formats whose keys are transformers' MusicgenForConditionalGeneration state dict.
TRANSFORMERS_FORMATS = (fmt.SAFETENSORS, fmt.SAFETENSORS_SHARDED, fmt.BIN, fmt.BIN_SHARDED)
COMPONENTS = ("decoder", "t5", "encodec")


@dataclass(frozen=True)
class Conversion:
    """What ``convert_musicgen`` found and wrote."""

    out_dir: Path
    format: str
    variant: str  # "mono" | "stereo" | "melody" | "stereo-melody" | "style"
    dtype: str
    num_codebooks: int


def _hub_patterns() -> tuple[list[str], list[str]]:
    """(what every hub MusicGen conversion fetches, the pickles fetched only when a repo has no
    safetensors): .bin files are big duplicates of the safetensors where both exist."""
    from audiogen_musicgen.convert import TOKENIZER_FILES

    first = [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "model-*.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
        *TOKENIZER_FILES,
    ]
    pickles = ["pytorch_model.bin", "pytorch_model-*.bin", "state_dict.bin"]  # last: audiocraft
    return first, pickles


def resolve_source(
    name_or_path: str | os.PathLike[str],
    *,
    offline: bool | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[Path, str, str | None]:
    """``(local directory, source label, revision)`` for a local upstream directory or a hub
    repo id; for a repo without safetensors the ``.bin`` files are fetched in a second pass."""
    from audiogen_core import hub

    from audiogen_musicgen.convert import snapshot_revision

    if Path(os.fspath(name_or_path)).expanduser().is_dir():
        root = hub.resolve(name_or_path)
        return root, str(root), snapshot_revision(root)
    first, pickles = _hub_patterns()
    kw: dict[str, Any] = {
        "offline": offline,
        "revision": revision,
        "trust_remote_code": trust_remote_code,
    }
    root = hub.resolve(name_or_path, allow_patterns=first, **kw)
    has_safetensors = (root / "model.safetensors").is_file() or (
        root / "model.safetensors.index.json"
    ).is_file()
    if not has_safetensors:
        root = hub.resolve(name_or_path, allow_patterns=first + pickles, **kw)
    return root, os.fspath(name_or_path), snapshot_revision(root)


def variant(config: dict[str, Any], path: Path) -> str:
    """``"mono"``, ``"stereo"``, ``"melody"`` or ``"stereo-melody"`` from a composite MusicGen
    config (``model_type`` and the decoder's ``audio_channels``; never the repo's name)."""
    model_type = config.get("model_type")
    decoder = config.get("decoder")
    channels = decoder.get("audio_channels", 1) if isinstance(decoder, dict) else None
    if model_type not in ("musicgen", "musicgen_melody") or channels not in (1, 2):
        raise WeightsError(
            f"{path}: not a MusicGen config (model_type {model_type!r}, decoder audio_channels "
            f"{channels!r}; expected 'musicgen' or 'musicgen_melody' with 1 or 2 channels)"
        )
    kind = "stereo" if channels == 2 else "mono"
    if model_type == "musicgen_melody":
        return "melody" if kind == "mono" else "stereo-melody"
    return kind


def check_out_dir(out_dir: Path, *, force: bool, src: Path | None = None) -> Path:
    """SPEC §3 output rules, resolved path returned: no ``..``, parent must exist, never the
    (resolved) source or a folder holding it, an existing target only with ``force`` (and only
    a directory)."""
    if ".." in out_dir.parts:
        raise InvalidInputError(f"{out_dir}: output path must not contain '..'")
    out = out_dir.expanduser().resolve()
    if not out.parent.is_dir():
        raise InvalidInputError(f"{out_dir}: parent directory {out.parent} does not exist")
    if src is not None and (out == src or out in src.parents):
        raise InvalidInputError(f"{out_dir}: output would overwrite the source {src}")
    if out.exists() or out.is_symlink():
        if not force:
            raise InvalidInputError(f"{out_dir}: already exists (pass --force to replace it)")
        if not out.is_dir() or out.is_symlink():
            raise InvalidInputError(f"{out_dir}: exists and is not a directory; not replacing it")
    return out


def move_into_place(built: Path, target: Path, scratch: Path) -> None:
    """Rename the complete conversion ``built`` to ``target``. An existing ``target`` (``--force``)
    is first moved into ``scratch`` and put back if the second rename fails, so the target is
    always either the old or the new copy, never half of either."""
    if target.exists():
        previous = scratch / "previous"
        target.rename(previous)
        try:
            built.rename(target)
        except OSError:
            previous.rename(target)
            raise
    else:
        built.rename(target)


def _as_dtype(dtype: str | mx.Dtype | None) -> mx.Dtype | None:
    """None keeps the checkpoint's dtypes; otherwise ``backend.resolve_dtype``'s rules."""
    if dtype is None:
        return None
    resolved: mx.Dtype = backend.resolve_dtype(dtype)
    return resolved


def _dtype_name(dtype: mx.Dtype) -> str:
    return str(dtype).removeprefix("mlx.core.")


def convert_musicgen(
    src_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    dtype: str | mx.Dtype | None = None,
    source: str | None = None,
    revision: str | None = None,
    force: bool = False,
    companions: dict[str, str | os.PathLike[str]] | None = None,
    offline: bool | None = None,
) -> Conversion:
    """Convert the upstream MusicGen directory ``src_dir`` into ``out_dir``.

    ``dtype`` casts floating tensors (default: keep the published dtype). ``source`` /
    ``revision`` are recorded in the manifest (default: the source directory). The result
    appears atomically: it is built in a temporary sibling and renamed into place; with
    ``force`` an existing ``out_dir`` is replaced only once the new copy is complete.

    An audiocraft export (MusicGen-style's ``state_dict.bin``) also needs the parts audiocraft
    loads by name: ``companions`` maps ``t5`` / ``mert`` / ``encodec`` to local directories or
    hub ids (default ``audiogen_musicgen.convert_style.COMPANIONS``, fetched unless ``offline``).
    """
    from audiogen_musicgen import convert as mg

    src = Path(src_dir).expanduser().resolve()
    target = check_out_dir(Path(out_dir), force=force, src=src)
    cast_to = _as_dtype(dtype)
    checkpoint = fmt.detect(src)
    style = checkpoint.format == fmt.AUDIOCRAFT
    if not style and checkpoint.format not in TRANSFORMERS_FORMATS:
        raise WeightsError(
            f"{src}: a {checkpoint.format} checkpoint; MusicGen conversion reads transformers "
            f"checkpoints (config.json with {', '.join(TRANSFORMERS_FORMATS)} weights); "
            f"{checkpoint.format} is not yet supported"
        )
    if checkpoint.needs_torch or style:
        fmt.import_torch(checkpoint.files[0])  # the pip hint before any work
    dirs: dict[str, Path] = {}
    if style:
        from audiogen_core import hub

        from audiogen_musicgen import convert_style

        kind = "style"
        # The checkpoint first: a bad file fails before any companion download.
        style_parts = convert_style.read_style_checkpoint(src / convert_style.STYLE_FILE)
        for name, default in convert_style.COMPANIONS.items():
            dirs[name] = hub.resolve(
                (companions or {}).get(name, default),
                allow_patterns=convert_style.COMPANION_PATTERNS[name],
                offline=offline,
            )
    else:
        if checkpoint.config is None:
            raise WeightsError(f"{src}: no config.json beside the weights")
        kind = variant(mg.read_json(checkpoint.config), checkpoint.config)

    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        if style:
            built = convert_style.convert_style(
                src,
                tmp / "model",
                dirs,
                source=source or str(src),
                revision=revision,
                checkpoint_parts=style_parts,
            )
            parts: tuple[str, ...] = convert_style.PARTS
        else:
            built = mg.convert(src, tmp / "model", source=source or str(src), revision=revision)
            parts = COMPONENTS
        manifest = mg.read_json(built / mg.MANIFEST)
        if cast_to is not None:
            for part in parts:
                path = built / part / "model.safetensors"
                weights = cast_floats(load_safetensors(path), cast_to)
                save_safetensors(path, weights, {"format": "mlx"})
            manifest["dtype"] = _dtype_name(cast_to)
        manifest.update(
            source_format=checkpoint.format,
            variant=kind,
            converter=f"audiogen-convert {__version__}",
        )
        (built / mg.MANIFEST).write_text(json.dumps(manifest, indent=1))
        mg.read_manifest(built)  # complete and ours before it replaces anything
        move_into_place(built, target, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Conversion(
        out_dir=target,
        format=checkpoint.format,
        variant=kind,
        dtype=str(manifest["dtype"]),
        num_codebooks=int(manifest["num_codebooks"]),
    )


__all__ = [
    "DTYPES",
    "Conversion",
    "check_out_dir",
    "convert_musicgen",
    "move_into_place",
    "resolve_source",
    "variant",
]
