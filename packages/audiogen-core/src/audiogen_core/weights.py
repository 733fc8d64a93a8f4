"""Weight files and layout fixes shared by every model: safetensors I/O, conv layouts,
weight-norm fusion, dtype casting and strict loading into an ``nn.Module``."""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from audiogen_core.errors import (
    CorruptWeightsError,
    InvalidInputError,
    MissingWeightsError,
    WeightsError,
)

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_flatten

Array = Any  # mx.array or np.ndarray: the layout helpers work on both


def _xp(x: Array) -> Any:
    return mx if isinstance(x, mx.array) else np


def _check_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse and sanity-check a safetensors header so a truncated or foreign file gives a clear
    error naming it (mx.load's own message does not say which file or why)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CorruptWeightsError(f"{path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100_000_000:
                raise CorruptWeightsError(f"{path}: not a safetensors file (bad header length {n})")
            header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptWeightsError(f"{path}: not a safetensors file (unreadable header)") from e
    except OSError as e:
        raise WeightsError(f"{path}: cannot read weights file: {e.strerror or e}") from e
    if not isinstance(header, dict):
        raise CorruptWeightsError(f"{path}: not a safetensors file (header is not a table)")
    end = max(
        (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0
    )
    if 8 + n + end > size:
        raise CorruptWeightsError(
            f"{path}: truncated safetensors file ({size} bytes, header promises {8 + n + end})"
        )
    return header


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON object from a config / index / manifest file, with errors that name the file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise WeightsError(f"{p}: not found") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptWeightsError(f"{p}: unreadable JSON: {e}") from e
    if not isinstance(data, dict):
        raise CorruptWeightsError(f"{p}: expected a JSON object")
    return data


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, mx.array]:
    """All tensors of one safetensors file as MLX arrays (bf16 kept as bf16)."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{p}: weights file not found")
    _check_safetensors_header(p)
    try:
        loaded = mx.load(str(p))
    except (RuntimeError, ValueError) as e:
        raise CorruptWeightsError(f"{p}: cannot load safetensors: {e}") from e
    if not isinstance(loaded, dict):
        raise CorruptWeightsError(f"{p}: not a safetensors tensor table")
    return loaded


def safetensors_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` table of a safetensors file (empty when absent)."""
    header = _check_safetensors_header(Path(path))
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def save_safetensors(
    path: str | os.PathLike[str],
    weights: Mapping[str, Array],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``weights`` atomically: a temp file in the same directory, then rename."""
    p = Path(path)
    arrays = {k: v if isinstance(v, mx.array) else mx.array(v) for k, v in weights.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=".safetensors", dir=p.parent)
    os.close(fd)
    try:
        mx.save_safetensors(tmp, arrays, metadata=dict(metadata or {}))
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def float_dtype(tensors: Iterable[mx.array]) -> str:
    """The floating dtype tensors are stored in (a comma-joined list if mixed), for manifests."""
    names = sorted({str(v.dtype).removeprefix("mlx.core.") for v in tensors})
    floats = [n for n in names if n.startswith(("float", "bfloat"))]
    return floats[0] if len(floats) == 1 else ",".join(floats)


def write_model_dir(
    dst: str | os.PathLike[str],
    parts: Mapping[str, tuple[Mapping[str, Any], Mapping[str, mx.array]]],
    tokenizer: Iterable[Path],
    manifest: Mapping[str, Any],
    manifest_name: str = "manifest.json",
) -> Path:
    """Write a converted model directory atomically: ``<part>/config.json`` and
    ``<part>/model.safetensors`` for each ``parts[part] = (config, tensors)``, the
    ``tokenizer`` files under ``tokenizer/``, and the manifest last (a directory with a manifest
    is a complete one), all in a temporary sibling renamed to ``dst``. If ``dst`` appeared
    meanwhile with a manifest (a concurrent conversion finished first), that one is kept;
    on any error nothing is left behind."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        for part, (config, tensors) in parts.items():
            (tmp / part).mkdir()
            (tmp / part / "config.json").write_text(json.dumps(config, indent=1))
            save_safetensors(tmp / part / "model.safetensors", tensors, {"format": "mlx"})
        (tmp / "tokenizer").mkdir()
        for f in tokenizer:
            shutil.copyfile(f, tmp / "tokenizer" / f.name)
        (tmp / manifest_name).write_text(json.dumps(dict(manifest), indent=1))
        try:
            tmp.rename(dst)
        except OSError:
            if not (dst / manifest_name).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def conv1d_to_mlx(w: Array) -> Array:
    """torch Conv1d weight ``(out, in, k)`` → MLX ``(out, k, in)``."""
    return _xp(w).swapaxes(w, 1, 2)


def conv_transpose1d_to_mlx(w: Array) -> Array:
    """torch ConvTranspose1d weight ``(in, out, k)`` → MLX ``(out, k, in)``."""
    return _xp(w).transpose(w, (1, 2, 0))


def fuse_weight_norm(g: Array, v: Array, dim: int = 0) -> Array:
    """``g · v / ‖v‖`` with the norm over every axis but ``dim`` (torch ``weight_norm``)."""
    xp = _xp(v)
    axes = tuple(i for i in range(v.ndim) if i != dim % v.ndim)
    v32 = v.astype(xp.float32)
    norm = xp.sqrt(xp.sum(v32 * v32, axis=axes, keepdims=True))
    return (g.astype(xp.float32) * v32 / norm).astype(v.dtype)


_WN_PAIRS = (
    (".weight_g", ".weight_v", ".weight"),
    (".parametrizations.weight.original0", ".parametrizations.weight.original1", ".weight"),
)


def fuse_weight_norms(weights: Mapping[str, Array]) -> dict[str, Array]:
    """Replace every weight-norm pair (old ``weight_g/_v`` or new ``parametrizations``) by its
    fused ``weight``; other entries pass through unchanged."""
    out: dict[str, Array] = {}
    # A leading dot lets top-level keys ("weight_g" of a bare module) match the suffixes too.
    dotted = {"." + k: v for k, v in weights.items()}
    for key, value in dotted.items():
        for g_suffix, v_suffix, w_suffix in _WN_PAIRS:
            if key.endswith(g_suffix):
                stem = key[: -len(g_suffix)]
                if stem + v_suffix not in dotted:
                    raise MissingWeightsError(
                        f"weight-norm pair incomplete: {(stem + v_suffix)[1:]}"
                    )
                out[(stem + w_suffix)[1:]] = fuse_weight_norm(value, dotted[stem + v_suffix])
                break
            if key.endswith(v_suffix):
                if key[: -len(v_suffix)] + g_suffix not in dotted:
                    raise MissingWeightsError(f"weight-norm pair incomplete: {key[1:]}")
                break
        else:
            out[key[1:]] = value
    return out


def cast_floats(weights: Mapping[str, mx.array], dtype: mx.Dtype) -> dict[str, mx.array]:
    """Cast floating tensors to ``dtype``; integer tensors (codebook indices, counters) stay."""
    return {
        k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) else v for k, v in weights.items()
    }


def _preview(names: Iterable[str], n: int = 5) -> str:
    names = sorted(names)
    more = f" … (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def load_into(
    model: nn.Module,
    weights: Mapping[str, mx.array],
    *,
    source: str | os.PathLike[str] = "weights",
    strict: bool = True,
) -> nn.Module:
    """Load ``weights`` into ``model``; with ``strict``, missing or unexpected keys and shape
    mismatches raise ``MissingWeightsError`` naming ``source`` and the first offending keys."""
    params = dict(tree_flatten(model.parameters()))
    if strict:
        missing = params.keys() - weights.keys()
        unexpected = weights.keys() - params.keys()
        if missing:
            raise MissingWeightsError(f"{source}: missing weights: {_preview(missing)}")
        if unexpected:
            raise MissingWeightsError(f"{source}: unexpected weights: {_preview(unexpected)}")
    bad = [
        f"{k} {tuple(v.shape)} != {tuple(params[k].shape)}"
        for k, v in weights.items()
        if k in params and tuple(v.shape) != tuple(params[k].shape)
    ]
    if bad:
        raise MissingWeightsError(f"{source}: shape mismatch: {_preview(bad, 3)}")
    model.load_weights([(k, v) for k, v in weights.items() if k in params], strict=False)
    mx.eval(model.parameters())
    return model


def quantize_linears(model: nn.Module, bits: int, group_size: int = 64) -> int:
    """Quantize, in place, the ``nn.Linear`` layers of ``model`` whose input size is a multiple
    of ``group_size``; returns how many were quantized.

    Only linears (SPEC §2): embeddings and small tables such as T5's relative attention bias fail
    the group check or lose too much. What it buys is memory (a quarter of float32's bytes at
    8 bits); output is no longer bit-exact with the float model.
    """
    if bits not in (4, 8):
        raise InvalidInputError(f"quantization bits must be 4 or 8, got {bits!r}")
    if group_size not in (32, 64, 128):
        raise InvalidInputError(
            f"quantization group size must be 32, 64 or 128, got {group_size!r}"
        )
    chosen: list[str] = []

    def eligible(path: str, module: nn.Module) -> bool:
        ok = isinstance(module, nn.Linear) and module.weight.shape[1] % group_size == 0
        if ok:
            chosen.append(path)
        return ok

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=eligible)
    mx.eval(model.parameters())
    return len(chosen)


__all__ = [
    "cast_floats",
    "conv1d_to_mlx",
    "conv_transpose1d_to_mlx",
    "fuse_weight_norm",
    "fuse_weight_norms",
    "load_into",
    "load_safetensors",
    "quantize_linears",
    "read_json",
    "safetensors_metadata",
    "save_safetensors",
]
