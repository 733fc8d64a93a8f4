"""In-process conversion of an upstream (transformers / hub) MusicGen directory into an audiogen
directory, and the cache that makes it happen once.

Upstream layout (a hub repo such as facebook/musicgen-small): ``config.json`` (the composite
``MusicgenConfig``), ``model.safetensors`` or shards + ``model.safetensors.index.json`` holding
``text_encoder.*``, ``audio_encoder.*``, ``decoder.*`` and ``enc_to_dec_proj.*``, and the T5
tokenizer (``tokenizer.json`` or ``spiece.model``, + ``tokenizer_config.json``).

Converted layout (SPEC §2: one directory, component files, configs, tokenizer, manifest)::

    manifest.json            format, source, revision, audiogen version, dtype, quantization
    decoder/config.json      DecoderConfig fields
    decoder/model.safetensors   our parameter names (fused QKV, stacked embeddings/heads)
    t5/config.json           the composite's text_encoder section
    t5/model.safetensors     T5Encoder parameter names (tied embedding resolved)
    encodec/config.json      the composite's audio_encoder section
    encodec/model.safetensors   MLX layout, weight norm fused, training buffers dropped
    tokenizer/               the tokenizer files, copied

Tensors keep the dtype they were published in; ``MusicGen.from_pretrained(dtype=...)`` casts at
load time, so one converted copy serves every dtype.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from audiogen_core import encodec, t5
from audiogen_core.errors import (
    CorruptWeightsError,
    InvalidInputError,
    MissingWeightsError,
    WeightsError,
)
from audiogen_core.weights import float_dtype, load_safetensors, read_json, write_model_dir

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from audiogen_musicgen import weights as decoder_weights
from audiogen_musicgen.config import DecoderConfig
from audiogen_musicgen.decoder import MusicGenDecoder

FORMAT = "audiogen-musicgen"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "spiece.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
BIN_HINT = (
    'PyTorch .bin weights need the optional reader: pip install "audiogen-convert[torch]" '
    "(it converts them without unrestricted unpickling)"
)


def _version() -> str:
    from audiogen_musicgen import __version__

    return __version__


def is_converted(root: Path) -> bool:
    return (root / MANIFEST).is_file()


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a converted directory, checked to be ours and complete."""
    path = root / MANIFEST
    manifest = read_json(path)
    if manifest.get("format") != FORMAT:
        raise WeightsError(
            f"{path}: not an audiogen MusicGen directory (format {manifest.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WeightsError(
            f"{path}: format_version {version!r} is newer than this audiogen understands "
            f"({FORMAT_VERSION}); upgrade audiogen or convert the model again"
        )
    parts = ["decoder", "t5", "encodec"]
    if manifest.get("model") == "musicgen-style":
        parts += ["mert", "style"]
    for part in parts:
        for name in ("config.json", "model.safetensors"):
            if not (root / part / name).is_file():
                raise MissingWeightsError(f"{root}: incomplete conversion, {part}/{name} missing")
    if not (root / "tokenizer").is_dir():
        raise MissingWeightsError(f"{root}: incomplete conversion, tokenizer/ missing")
    return manifest


MODEL_TYPES = ("musicgen", "musicgen_melody")


def upstream_config(root: Path) -> dict[str, Any]:
    """The composite ``MusicgenConfig`` / ``MusicgenMelodyConfig`` of an upstream directory."""
    path = root / "config.json"
    config = read_json(path)
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES or not all(
        isinstance(config.get(k), dict) for k in ("decoder", "text_encoder", "audio_encoder")
    ):
        raise WeightsError(
            f"{path}: not a MusicGen config (model_type {model_type!r}; expected one of "
            f"{', '.join(MODEL_TYPES)} with decoder, text_encoder and audio_encoder sections)"
        )
    return config


def weight_files(root: Path) -> list[Path]:
    """The weight files of an upstream directory: safetensors (single file or the index's
    shards), else ``pytorch_model*.bin`` when audiogen-convert is installed to read them, else a
    clear error saying what to install."""
    single = root / "model.safetensors"
    index = root / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CorruptWeightsError(f"{index}: no weight_map")
        shards = sorted({str(v) for v in weight_map.values()})
        for shard in shards:
            if Path(shard).name != shard:  # a shard must not point outside the directory
                raise CorruptWeightsError(f"{index}: bad shard name {shard!r}")
            if not (root / shard).is_file():
                raise MissingWeightsError(f"{index}: shard {shard} is missing from {root}")
        return [root / s for s in shards]
    bins = sorted(p.name for p in root.glob("pytorch_model*.bin"))
    if bins or (root / "pytorch_model.bin.index.json").is_file():
        formats = bin_reader()
        if formats is not None:
            return list(formats.detect(root).files)
        shown = ", ".join(bins) if bins else "pytorch_model.bin.index.json"
        raise WeightsError(f"{root}: only PyTorch .bin weights ({shown}). {BIN_HINT}")
    raise MissingWeightsError(
        f"{root}: no model.safetensors or model.safetensors.index.json (repos that publish "
        "only pytorch_model*.bin, such as facebook/musicgen-medium and facebook/musicgen-large, "
        f"are not fetched as such: {BIN_HINT})"
    )


def bin_reader() -> Any:
    """``audiogen_convert.formats`` when installed (it reads ``.bin`` with torch), else None.
    Imported lazily: the dependency points from audiogen-convert to this package, not back."""
    try:
        return importlib.import_module("audiogen_convert.formats")
    except ImportError:
        return None


def _read_weights(path: Path) -> dict[str, mx.array]:
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    return dict(bin_reader().read_bin(path))  # weight_files returns .bin only when it exists


def tokenizer_files(root: Path) -> list[Path]:
    files = [root / n for n in TOKENIZER_FILES if (root / n).is_file()]
    if not any(f.name in ("tokenizer.json", "spiece.model") for f in files):
        raise MissingWeightsError(f"{root}: no tokenizer (tokenizer.json or spiece.model)")
    return files


UPSTREAM_PREFIXES = (
    decoder_weights.DECODER_PREFIX,
    decoder_weights.HEADS_PREFIX,
    decoder_weights.PROJ_PREFIX,
    decoder_weights.AUDIO_PROJ_PREFIX,
    "text_encoder.",
    "audio_encoder.",
)


def split_components(
    upstream: Mapping[str, mx.array], source: str
) -> dict[str, dict[str, mx.array]]:
    """Upstream composite state dict -> our parameters per component (decoder / t5 / encodec).
    Every upstream tensor must have an owner: anything outside the known prefixes is an error
    rather than silently dropped."""
    stray = sorted(k for k in upstream if not k.startswith(UPSTREAM_PREFIXES))
    if stray:
        raise MissingWeightsError(f"{source}: unexpected weights: {', '.join(stray[:5])}")
    return {
        "decoder": decoder_weights.sanitize(upstream, source=source),
        "t5": t5.sanitize(upstream, "text_encoder."),
        "encodec": encodec.sanitize(upstream, "audio_encoder."),
    }


def component_configs(config: Mapping[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """The per-component config dicts of a composite ``MusicgenConfig``."""
    try:
        decoder_config = DecoderConfig.from_composite(config)
    except (InvalidInputError, TypeError) as e:
        raise WeightsError(f"{source}: unsupported MusicGen decoder config: {e}") from e
    return {
        "decoder": asdict(decoder_config),
        "t5": dict(config["text_encoder"]),
        "encodec": dict(config["audio_encoder"]),
    }


def build_models(configs: Mapping[str, Mapping[str, Any]], source: str) -> dict[str, nn.Module]:
    """Uninitialised-by-checkpoint models for the component configs. MLX initialises parameters
    lazily, so building even musicgen-large here allocates nothing until weights are loaded."""
    try:
        return {
            "decoder": MusicGenDecoder(DecoderConfig.from_dict(configs["decoder"])),
            "t5": t5.T5Encoder(t5.T5Config.from_dict(configs["t5"])),
            "encodec": encodec.EncodecModel(encodec.EncodecConfig.from_dict(configs["encodec"])),
        }
    except (InvalidInputError, TypeError) as e:
        raise WeightsError(f"{source}: unsupported MusicGen config: {e}") from e


def check_parameters(model: nn.Module, weights: Mapping[str, mx.array], source: str) -> None:
    """Same keys and shapes as ``model``'s parameters (no data is read)."""
    params = dict(tree_flatten(model.parameters()))
    missing = sorted(params.keys() - weights.keys())
    unexpected = sorted(weights.keys() - params.keys())
    if missing:
        raise MissingWeightsError(f"{source}: missing weights: {', '.join(missing[:5])}")
    if unexpected:
        raise MissingWeightsError(f"{source}: unexpected weights: {', '.join(unexpected[:5])}")
    bad = [
        f"{k} {tuple(weights[k].shape)} != {tuple(v.shape)}"
        for k, v in params.items()
        if tuple(weights[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise MissingWeightsError(f"{source}: shape mismatch: {', '.join(bad[:3])}")


def convert(
    src: Path, dst: Path, *, source: str | None = None, revision: str | None = None
) -> Path:
    """Convert the upstream directory ``src`` into ``dst`` (which must not exist), atomically:
    everything is written to a temporary sibling that is renamed to ``dst`` once complete."""
    config = upstream_config(src)
    files = weight_files(src)
    tokenizer = tokenizer_files(src)
    upstream: dict[str, mx.array] = {}
    for f in files:
        upstream.update(_read_weights(f))  # safetensors lazily: read when saved below
    label = ", ".join(str(f) for f in files)
    configs = component_configs(config, str(src / "config.json"))
    parts = split_components(upstream, label)
    # Checked against our models before anything is written, so the cache never holds a
    # conversion that cannot load.
    for part, model in build_models(configs, str(src / "config.json")).items():
        check_parameters(model, parts[part], label)
    decoder_config = DecoderConfig.from_dict(configs["decoder"])

    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": "musicgen-melody" if decoder_config.is_melody else "musicgen",
        "source": source or str(src),
        "revision": revision,
        "audiogen_version": _version(),
        "dtype": float_dtype(v for part in parts.values() for v in part.values()),
        "quantization": None,
        "audio_channels": decoder_config.audio_channels,
        "num_codebooks": decoder_config.num_codebooks,
    }
    parts_out = {part: (configs[part], tensors) for part, tensors in parts.items()}
    return write_model_dir(dst, parts_out, tokenizer, manifest, MANIFEST)


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$AUDIOGEN_CACHE``, else ``~/.cache/audiogen``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("AUDIOGEN_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "audiogen"


def snapshot_revision(root: Path) -> str | None:
    """The commit of a hub cache snapshot directory (``.../snapshots/<commit>``)."""
    return root.name if root.parent.name == "snapshots" else None


def cache_key(src: Path, source: str | None = None, inputs: list[Path] | None = None) -> str:
    """A readable, collision-safe directory name for the converted copy of ``src``: the source
    name plus a hash of the resolved path and of the size and mtime of every file read
    (``inputs``; default the upstream MusicGen files of ``src``), so an edited checkpoint is
    converted again. Files outside ``src`` are hashed with their full path."""
    h = hashlib.sha256(str(src.resolve()).encode())
    if inputs is None:
        inputs = [src / "config.json", *weight_files(src), *tokenizer_files(src)]
    for f in sorted(inputs):
        st = f.stat()
        name = f.name if f.parent == src else str(f)
        h.update(f"\0{name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    label = re.sub(r"[^A-Za-z0-9._-]+", "--", source or src.name).strip("-.") or "model"
    return f"{label[:80]}-{h.hexdigest()[:16]}"


def cached_conversion(
    key: str, make: Callable[[Path], Path], cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """``<cache>/musicgen/<key>`` when a complete conversion is there, else ``make(dst)`` (which
    must write it atomically). A cache entry without a manifest is not trusted."""
    root = cache_root(cache_dir) / "musicgen"
    dst = root / key
    if is_converted(dst):
        return dst
    if dst.exists():  # not ours to trust: no manifest means an interrupted foreign write
        raise WeightsError(f"{dst}: cache entry without {MANIFEST}; delete it and retry")
    try:
        return make(dst)
    except PermissionError as e:
        raise InvalidInputError(
            f"{root}: cannot write the conversion cache ({e}); pass cache_dir or set AUDIOGEN_CACHE"
        ) from e


def converted_dir(
    src: Path,
    *,
    source: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """The cached converted copy of the upstream directory ``src``, converting on first use."""
    upstream_config(src)  # a clear error for a foreign config before anything else is read
    return cached_conversion(
        cache_key(src, source),
        lambda dst: convert(src, dst, source=source, revision=snapshot_revision(src)),
        cache_dir,
    )


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "build_models",
    "cache_key",
    "cache_root",
    "cached_conversion",
    "check_parameters",
    "component_configs",
    "convert",
    "converted_dir",
    "is_converted",
    "read_manifest",
    "split_components",
    "upstream_config",
    "weight_files",
]
