"""Detect and read upstream checkpoints (SPEC §2), whatever file format they were published in.

``detect(directory)`` tries the layouts in this order and returns the first that matches:

==========================  ==========================================================
``safetensors``             ``model.safetensors`` (transformers ``save_pretrained``)
``safetensors-sharded``     ``model.safetensors.index.json`` + its shards
``bin``                     ``pytorch_model.bin`` (transformers < 4.35 default)
``bin-sharded``             ``pytorch_model.bin.index.json`` + its shards
``audiocraft``              ``state_dict.bin`` (+ ``compression_state_dict.bin``)
``stable-audio-tools``      ``model_config.json`` + ``model.safetensors`` or ``model.ckpt``
==========================  ==========================================================

A stable-audio-tools repo also holds a ``model.safetensors``; it is told apart from a transformers
one by having ``model_config.json`` and no ``config.json``.

``.bin`` / ``.ckpt`` files are pickles: they are read with ``torch.load(weights_only=True)``,
never unrestricted unpickling, and torch is an optional extra (``audiogen-convert[torch]``).
Tensors keep their dtype (bf16 stays bf16).
"""

from __future__ import annotations

import importlib
import os
import pickle  # nosec B403 - only for its exception type; torch.load(weights_only=True) reads
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core.errors import CorruptWeightsError, MissingWeightsError, WeightsError
from audiogen_core.weights import load_safetensors, read_json

import mlx.core as mx
import numpy as np

SAFETENSORS = "safetensors"
SAFETENSORS_SHARDED = "safetensors-sharded"
BIN = "bin"
BIN_SHARDED = "bin-sharded"
AUDIOCRAFT = "audiocraft"
STABLE_AUDIO_TOOLS = "stable-audio-tools"
FORMATS = (SAFETENSORS, SAFETENSORS_SHARDED, BIN, BIN_SHARDED, AUDIOCRAFT, STABLE_AUDIO_TOOLS)

TORCH_HINT = 'pip install "audiogen-convert[torch]"'


@dataclass(frozen=True)
class Checkpoint:
    """An upstream checkpoint found in ``root``: its format tag, the weight files in reading
    order and the config file that describes the model (``None`` when the format has none)."""

    format: str
    root: Path
    files: tuple[Path, ...]
    config: Path | None

    @property
    def needs_torch(self) -> bool:
        return any(f.suffix != ".safetensors" for f in self.files)

    def tensors(self) -> Iterator[tuple[str, mx.array]]:
        """``(key, array)`` pairs, one file at a time (safetensors are memory-mapped lazily by
        MLX; a pickle is mapped by torch and copied tensor by tensor)."""
        for f in self.files:
            yield from read_weights(f).items()

    def load(self) -> dict[str, mx.array]:
        """Every tensor of every file; a key present in two files is an error."""
        out: dict[str, mx.array] = {}
        for f in self.files:
            weights = read_weights(f)
            dup = sorted(weights.keys() & out.keys())
            if dup:
                raise CorruptWeightsError(f"{f}: keys also in another shard: {', '.join(dup[:5])}")
            out.update(weights)
        return out


def index_shards(index: Path) -> tuple[Path, ...]:
    """The shard files an index json names (sorted), each checked to exist beside it."""
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptWeightsError(f"{index}: no weight_map")
    shards = sorted({str(v) for v in weight_map.values()})
    for shard in shards:
        if Path(shard).name != shard or shard in (".", ".."):  # must stay inside the directory
            raise CorruptWeightsError(f"{index}: bad shard name {shard!r}")
        if not (index.parent / shard).is_file():
            raise MissingWeightsError(f"{index}: shard {shard} is missing from {index.parent}")
    return tuple(index.parent / s for s in shards)


def _optional(path: Path) -> Path | None:
    return path if path.is_file() else None


def detect(directory: str | os.PathLike[str]) -> Checkpoint:
    """The checkpoint in ``directory`` (SPEC §2 order); ``MissingWeightsError`` naming the
    directory and what was looked for when nothing matches."""
    root = Path(directory)
    if not root.is_dir():
        raise WeightsError(f"{root}: not a directory")
    config = _optional(root / "config.json")
    sa_config = _optional(root / "model_config.json")
    stable_audio = sa_config is not None and config is None

    if (root / "model.safetensors").is_file() and not stable_audio:
        return Checkpoint(SAFETENSORS, root, (root / "model.safetensors",), config)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        return Checkpoint(SAFETENSORS_SHARDED, root, index_shards(index), config)
    if (root / "pytorch_model.bin").is_file():
        return Checkpoint(BIN, root, (root / "pytorch_model.bin",), config)
    index = root / "pytorch_model.bin.index.json"
    if index.is_file():
        return Checkpoint(BIN_SHARDED, root, index_shards(index), config)
    if (root / "state_dict.bin").is_file():
        files = [root / "state_dict.bin"]
        if (root / "compression_state_dict.bin").is_file():
            files.append(root / "compression_state_dict.bin")
        return Checkpoint(AUDIOCRAFT, root, tuple(files), None)
    if sa_config is not None:
        for name in ("model.safetensors", "model.ckpt"):
            if (root / name).is_file():
                return Checkpoint(STABLE_AUDIO_TOOLS, root, (root / name,), sa_config)
    present = sorted(p.name for p in root.iterdir())[:10]
    raise MissingWeightsError(
        f"{root}: no checkpoint audiogen recognises (looked for model.safetensors, "
        "model.safetensors.index.json, pytorch_model.bin, pytorch_model.bin.index.json, "
        "state_dict.bin, model_config.json with model.safetensors or model.ckpt); "
        f"found: {', '.join(present) or 'nothing'}"
    )


def import_torch(path: Path) -> ModuleType:
    """torch, or a ``WeightsError`` naming the file that needs it and the pip command."""
    try:
        return importlib.import_module("torch")
    except ImportError as e:
        raise WeightsError(
            f"{path}: a PyTorch pickle; reading it needs torch: {TORCH_HINT} "
            "(or convert a safetensors copy of the checkpoint)"
        ) from e


def _check_container(path: Path) -> None:
    """A zip-format pickle (torch >= 1.6) must have its central directory: a truncated one makes
    torch fail with a bare ``OSError: Invalid argument``, which would not say why."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
        if magic == b"PK\x03\x04":
            with zipfile.ZipFile(path):
                pass
    except zipfile.BadZipFile as e:
        raise CorruptWeightsError(
            f"{path}: truncated or not a PyTorch checkpoint (broken zip container: {e})"
        ) from e
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights file: {e.strerror or e}") from e


def _torch_load(torch: ModuleType, path: Path) -> Any:
    _check_container(path)
    try:
        try:
            return torch.load(path, weights_only=True, map_location="cpu", mmap=True)
        except RuntimeError as e:
            # mmap needs the zip container (torch >= 1.6 default); old files are read whole.
            if "mmap" not in str(e) and "zipfile" not in str(e):
                raise
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as e:
        # weights_only refuses anything but tensors and plain containers: never unpickle code.
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorruptWeightsError(
            f"{path}: not a plain tensor checkpoint (weights_only load refused it: {first})"
        ) from e
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CorruptWeightsError(f"{path}: truncated or not a PyTorch checkpoint ({first})") from e
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights file: {e.strerror or e}") from e


def _state_dict(torch: ModuleType, obj: Any, path: Path) -> dict[str, Any]:
    """The tensor table inside a pickle: a plain state dict, audiocraft's export
    (``{"best_state": ..., "xp.cfg": yaml}``) or a Lightning checkpoint (``{"state_dict": ...}``)."""
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
        for key in ("best_state", "state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            break
    raise CorruptWeightsError(f"{path}: no tensor table found in the PyTorch checkpoint")


def _to_mx(torch: ModuleType, t: Any) -> mx.array:
    """A CPU torch tensor as an MLX array of the same dtype (bf16 via its bit pattern, since
    numpy has no bfloat16)."""
    if t.dtype == torch.bfloat16:
        return mx.array(t.contiguous().view(torch.int16).numpy()).view(mx.bfloat16)
    a = t.numpy()
    if a.dtype == np.float64:  # MLX's GPU has no float64; nothing upstream needs it
        a = a.astype(np.float32)
    return mx.array(a)


def read_bin(path: str | os.PathLike[str]) -> dict[str, mx.array]:
    """The tensors of one PyTorch pickle (``.bin`` / ``.ckpt``) as MLX arrays."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: weights file not found")
    torch = import_torch(p)
    table = _state_dict(torch, _torch_load(torch, p), p)
    out: dict[str, mx.array] = {}
    for key, value in table.items():
        if not isinstance(value, torch.Tensor):
            raise CorruptWeightsError(f"{p}: {key!r} is not a tensor")
        out[str(key)] = _to_mx(torch, value.detach())
    return out


def read_audiocraft(path: str | os.PathLike[str]) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """An audiocraft export (``state_dict.bin``: ``{"best_state": tensors, "xp.cfg": yaml text,
    ...}``) as MLX arrays plus the parsed training config (``{}`` when the file has none). The
    YAML is read with ``yaml.safe_load``: plain data only, never objects."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: weights file not found")
    torch = import_torch(p)
    obj = _torch_load(torch, p)
    table = _state_dict(torch, obj, p)
    cfg: dict[str, Any] = {}
    raw = obj.get("xp.cfg") if isinstance(obj, dict) else None
    if isinstance(raw, str):
        try:
            loaded = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise CorruptWeightsError(f"{p}: unreadable xp.cfg ({e})") from e
        if not isinstance(loaded, dict):
            raise CorruptWeightsError(f"{p}: xp.cfg is not a mapping")
        cfg = loaded
    out: dict[str, mx.array] = {}
    for key, value in table.items():
        if not isinstance(value, torch.Tensor):
            raise CorruptWeightsError(f"{p}: {key!r} is not a tensor")
        out[str(key)] = _to_mx(torch, value.detach())
    return out, cfg


def read_weights(path: str | os.PathLike[str]) -> dict[str, mx.array]:
    """One weights file of any supported format, by its suffix."""
    p = Path(path)
    if p.suffix == ".safetensors":
        return load_safetensors(p)
    return read_bin(p)


__all__ = [
    "AUDIOCRAFT",
    "BIN",
    "BIN_SHARDED",
    "FORMATS",
    "SAFETENSORS",
    "SAFETENSORS_SHARDED",
    "STABLE_AUDIO_TOOLS",
    "TORCH_HINT",
    "Checkpoint",
    "detect",
    "import_torch",
    "index_shards",
    "read_audiocraft",
    "read_bin",
    "read_weights",
]
