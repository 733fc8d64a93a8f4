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
            ctypes.CDLL(candidate, mode=ctypes.RTLD_GLOBAL)
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
        return f"OpenBLAS ({path})"
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
