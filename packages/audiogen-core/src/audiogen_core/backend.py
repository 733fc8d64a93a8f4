"""Compute backend set-up: OpenBLAS preload on Linux, device and BLAS reporting, dtype policy.

Why the preload: the Linux ``mlx[cpu]`` wheel links a slow reference BLAS. Loading the system
OpenBLAS (Debian ``libopenblas0-pthread``) with ``RTLD_GLOBAL`` *before* ``mlx.core`` is first
imported makes MLX resolve ``sgemm`` & co. to it: a 1024³ fp32 matmul measured 12-54× faster
(2-core / many-core machines). numpy's bundled OpenBLAS cannot serve: its symbols are prefixed.
This module must not import mlx at module level.
"""

from __future__ import annotations

import ctypes
import os
import sys
import warnings
from functools import cache
from pathlib import Path
from typing import Any

DISABLE_ENV = "AUDIOGEN_NO_OPENBLAS"
"""Set to 1 to skip the OpenBLAS preload (e.g. to compare against MLX's bundled BLAS)."""
PATH_ENV = "AUDIOGEN_OPENBLAS"
"""Path to a specific libopenblas to preload instead of searching the usual places."""

_CANDIDATES = (
    "libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "libopenblas.so",
)

_state: dict[str, Any] = {"done": False, "blas": None, "reason": None}


def _loaded_blas_from_maps() -> str | None:
    """The path of an OpenBLAS already mapped into this process, if any (Linux only)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        if "libopenblas" in line and "/" in line:
            return line[line.index("/") :].strip()
    return None


def _coretype_hint() -> str | None:
    """An OpenBLAS kernel family for this x86 CPU, from /proc/cpuinfo flags.

    Why: Debian's OpenBLAS 0.3.21 does not know recent Xeons (e.g. Sapphire Rapids) and falls
    back to its generic "Prescott" kernels, measured 3-4× slower here (1024³ sgemm: 64 ms
    Prescott, 19 ms Haswell, 14 ms SkylakeX). Both families only need the flags checked below.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    flags = set(line.partition(":")[2].split())
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def _dlopen_with_coretype(candidate: str) -> None:
    """dlopen ``candidate`` globally; unless the user set OPENBLAS_CORETYPE, pass the kernel
    family from ``_coretype_hint`` for the library's start-up only (it reads the variable once,
    while loading), so numpy's own OpenBLAS and child processes are not affected."""
    hint = None if "OPENBLAS_CORETYPE" in os.environ else _coretype_hint()
    if hint:
        os.environ["OPENBLAS_CORETYPE"] = hint
    try:
        ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
    finally:
        if hint:
            del os.environ["OPENBLAS_CORETYPE"]


def openblas_core() -> str | None:
    """The kernel family the loaded OpenBLAS runs (``openblas_get_corename``), if any."""
    path = _loaded_blas_from_maps()
    if not path:
        return None
    try:
        fn = ctypes.CDLL(path).openblas_get_corename
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_char_p
    name = fn()
    return name.decode() if name else None


def preload_openblas() -> str | None:
    """Load the system OpenBLAS globally so MLX's CPU backend uses it. Returns its path or None.

    Idempotent. No-op off Linux or when ``AUDIOGEN_NO_OPENBLAS=1``. Warns once when mlx was
    imported first (too late to help) or when no OpenBLAS is installed.
    """
    if _state["done"]:
        return _state["blas"]
    _state["done"] = True
    if not sys.platform.startswith("linux"):
        _state["reason"] = "not Linux: MLX uses Accelerate/Metal"
        return None
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        _state["reason"] = f"disabled by {DISABLE_ENV}"
        return None
    already = _loaded_blas_from_maps()
    if already:
        _state["blas"] = already
        return already
    if "mlx.core" in sys.modules:
        _state["reason"] = "mlx was imported before audiogen_core"
        warnings.warn(
            "mlx was imported before audiogen_core, so MLX keeps its slow reference BLAS on this "
            "CPU; import audiogen_core (or call audiogen_core.backend.preload_openblas()) first.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    override = os.environ.get(PATH_ENV)
    for candidate in (override,) if override else _CANDIDATES:
        try:
            _dlopen_with_coretype(candidate)
        except OSError:
            continue
        _state["blas"] = _loaded_blas_from_maps() or candidate
        return _state["blas"]
    _state["reason"] = "no system OpenBLAS found"
    warnings.warn(
        "No system OpenBLAS found (Debian/Ubuntu: apt install libopenblas0-pthread); MLX's CPU "
        f"matmuls will be much slower. Set {DISABLE_ENV}=1 to silence this.",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def active_blas() -> str:
    """A one-line description of the BLAS MLX's CPU backend uses in this process."""
    if sys.platform == "darwin":
        return "Accelerate"
    path = _loaded_blas_from_maps()
    if path:
        core = openblas_core()
        return f"OpenBLAS ({path}" + (f", {core} kernels)" if core else ")")
    reason = _state["reason"]
    return "MLX bundled reference BLAS" + (f" ({reason})" if reason else "")


def default_device() -> str:
    """'gpu' (Metal or CUDA) when MLX has one, else 'cpu'."""
    import mlx.core as mx

    return "gpu" if mx.default_device() == mx.gpu else "cpu"


@cache
def _gpu_backend() -> str | None:
    import mlx.core as mx

    if mx.metal.is_available():
        return "metal"
    cuda = getattr(mx, "cuda", None)
    if cuda is not None and cuda.is_available():
        return "cuda"
    return None


def compute_dtype() -> Any:
    """The dtype policy for activations: fp32 on CPU (MLX's fp16/bf16 CPU matmuls are 3-4× slower
    than fp32 + OpenBLAS, measured), fp16 on a GPU."""
    import mlx.core as mx

    return mx.float16 if default_device() == "gpu" else mx.float32


def resolve_dtype(dtype: Any = None) -> Any:
    """An MLX float dtype from None (the ``compute_dtype`` policy), a name ("float32",
    "float16", "bfloat16") or an ``mx.Dtype``; anything else is an InvalidInputError."""
    from audiogen_core.errors import InvalidInputError

    import mlx.core as mx

    names = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}
    if dtype is None:
        return compute_dtype()
    if isinstance(dtype, str):
        if dtype not in names:
            raise InvalidInputError(f"dtype must be one of {', '.join(names)}, got {dtype!r}")
        return names[dtype]
    if dtype not in names.values():
        raise InvalidInputError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
    return dtype


def info() -> dict[str, str]:
    """What the CLI's ``info`` prints: versions, device, GPU backend and BLAS."""
    import platform

    from audiogen_core import __version__

    import mlx.core as mx

    dev = mx.default_device()
    return {
        "audiogen-core": __version__,
        "mlx": getattr(mx, "__version__", "unknown"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "device": str(dev),
        "gpu backend": _gpu_backend() or "none",
        "cpu blas": active_blas(),
    }
