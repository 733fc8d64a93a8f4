"""Fused CUDA kernels for one MusicGen decode step on MLX's CUDA backend.

Why: a batch-2 decode step is bound by MLX's host cost per primitive, not by the GPU. On an H100
(tools/bench/decode_step.py, 2026-11-26) building and issuing one primitive costs ~8-12 µs of
host time whatever it computes (an elementwise add 8.7 µs, a LayerNorm 7.9, a batched matvec
11.7), and a small-model step issued 4.5-5.5 ms for ~420 primitives while the GPU was mostly
idle. So each layer here is 7 primitives instead of ~18:

- ``gemv``: ``y = epilogue(W · prologue(x))`` for a few rows: the LayerNorm before a projection
  (statistics recomputed per block: the rows are a few KB), GELU after fc1, the residual add
  after out_proj / fc2, all in the one kernel that streams W;
- ``attention``: one query per (batch, head) against the preallocated K/V cache up to the
  position held in a device array (so the step has fixed shapes and compiles once), reading q
  straight out of the fused qkv projection and writing this position's keys and values into
  the cache in place (no separate cache-update primitive);
- ``folded_cross``: the folded cross-attention's softmax (per head over the text tokens, with
  the padding mask) and its ``P · VW`` product plus the residual.

Numerics follow the unfused MLX graph: float accumulation, and the intermediate results that
MLX stores in the model dtype (LayerNorm output, projection output, softmax probabilities) are
rounded to it at the same places. The kernels are compiled here with NVRTC on first use and kept
on disk (``kernel_cache_dir``; see ``_Nvrtc`` for why not ``mx.fast.cuda_kernel``), then run as
``mx.fast.precompiled_cuda_kernel``. Their template constants are the dtype, the batch rows and
the model widths only; prompt length and cache length are run-time arguments, so a new prompt or
duration does not compile again. They need rows whose byte size is a multiple of 16
(``supported``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import mlx.core as mx

WARPS = 8  # warps per block in the matvec kernels: 8 output rows per block
ATTENTION_THREADS = 128
MAX_ROWS = 8  # batch rows a step may carry (CFG doubles the prompts)
MAX_FOLDED = 4096  # heads × text tokens of a folded cross-attention (float shared memory)
ACTIVATIONS = {"": 0, "gelu": 1, "gelu_new": 2, "gelu_pytorch_tanh": 2, "relu": 3, "silu": 4}

_HEADER = r"""
// No includes: NVRTC compiles this alone in ~0.1 s (with MLX's device headers it took ~2.5 s
// a kernel). The 16-bit types are plain storage converted with the same rounding as cuda_fp16 /
// cuda_bf16 (round to nearest even).
typedef unsigned long long ag_size;
struct ag_f16 { unsigned short bits; };
struct ag_bf16 { unsigned short bits; };
#define AG_INF __int_as_float(0x7f800000)

__device__ __forceinline__ float ag_f(float v) { return v; }
__device__ __forceinline__ float ag_f(ag_f16 v) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
  return f;
}
__device__ __forceinline__ float ag_f(ag_bf16 v) { return __uint_as_float(((unsigned)v.bits) << 16); }

template <typename T> __device__ __forceinline__ T ag_t(float v);
template <> __device__ __forceinline__ float ag_t<float>(float v) { return v; }
template <> __device__ __forceinline__ ag_f16 ag_t<ag_f16>(float v) {
  ag_f16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.bits) : "f"(v));
  return h;
}
template <> __device__ __forceinline__ ag_bf16 ag_t<ag_bf16>(float v) {
  unsigned u = __float_as_uint(v);
  ag_bf16 h;
  if ((u & 0x7fffffffu) > 0x7f800000u) {  // NaN stays a (quiet) NaN
    h.bits = (unsigned short)((u >> 16) | 0x40u);
  } else {
    h.bits = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
  }
  return h;
}
__device__ __forceinline__ float ag_warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffff, v, o);
  return v;
}

__device__ __forceinline__ float ag_warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float ag_block_sum(float v, float* red) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = ag_warp_sum(v);
  __syncthreads();  // red may still be read from the previous call
  if (lane == 0) red[wid] = v;
  __syncthreads();
  float t = lane < nw ? red[lane] : 0.f;
  return ag_warp_sum(t);
}

__device__ __forceinline__ float ag_block_max(float v, float* red) {
  const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = ag_warp_max(v);
  __syncthreads();
  if (lane == 0) red[wid] = v;
  __syncthreads();
  float t = lane < nw ? red[lane] : -AG_INF;
  return ag_warp_max(t);
}

template <int ACT>
__device__ __forceinline__ float ag_act(float v) {
  if constexpr (ACT == 1) {  // exact GELU, as mlx.nn.gelu / torch nn.GELU()
    return v * (1.f + erff(v * 0.7071067811865476f)) * 0.5f;
  } else if constexpr (ACT == 2) {  // tanh approximation
    return 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
  } else if constexpr (ACT == 3) {
    return fmaxf(v, 0.f);
  } else if constexpr (ACT == 4) {
    return v / (1.f + expf(-v));
  } else {
    return v;
  }
}

// Round through the storage type, as the unfused graph stores the value.
template <typename T>
__device__ __forceinline__ float ag_round(float v) {
  return ag_f(ag_t<T>(v));
}
"""

# y (B, N) = epilogue(W (N, K) · prologue(x (B, K))); with PER_ROW each row b has its own
# matrix W[b] (B, N, K) and block row blockIdx.y serves only that row. N is a run-time value:
# the folded cross-attention's score matrix has heads × prompt tokens rows, and a compile-time N
# would compile another kernel (over a second with NVRTC) for each new prompt length.
_GEMV = r"""
template <typename T, int B, int K, int WARPS, bool LN, int ACT, bool RES, bool PER_ROW>
__device__ __forceinline__ void ag_gemv(
    const T* x, const T* w, const T* g, const T* beta, const T* res, T* y, float EPS, int N) {
  constexpr int VEC = 16 / sizeof(T);
  constexpr int ROWS = PER_ROW ? 1 : B;
  __shared__ float red[32];
  __shared__ float stats[2 * ROWS];
  const int b0 = PER_ROW ? blockIdx.y : 0;
  const T* xb = x + (ag_size)b0 * K;
  if constexpr (LN) {
    for (int r = 0; r < ROWS; ++r) {
      const T* xr = xb + (ag_size)r * K;
      float s = 0.f;
      for (int k = threadIdx.x; k < K; k += blockDim.x) s += ag_f(xr[k]);
      const float mean = ag_block_sum(s, red) / K;
      float q = 0.f;
      for (int k = threadIdx.x; k < K; k += blockDim.x) {
        const float d = ag_f(xr[k]) - mean;
        q += d * d;
      }
      const float var = ag_block_sum(q, red) / K;
      if (threadIdx.x == 0) {
        stats[2 * r] = mean;
        stats[2 * r + 1] = rsqrtf(var + EPS);
      }
    }
    __syncthreads();
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n = blockIdx.x * WARPS + warp;
  if (n >= N) return;
  const T* wr = w + (PER_ROW ? (ag_size)b0 * N * K : (ag_size)0) + (ag_size)n * K;
  float acc[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) acc[r] = 0.f;
#pragma unroll 4
  for (int k = lane * VEC; k < K; k += 32 * VEC) {
    const uint4 wv = *reinterpret_cast<const uint4*>(wr + k);
    const T* wh = reinterpret_cast<const T*>(&wv);
    float gk[VEC], bk[VEC];
    if constexpr (LN) {
      const uint4 gv = *reinterpret_cast<const uint4*>(g + k);
      const uint4 bv = *reinterpret_cast<const uint4*>(beta + k);
      const T* gh = reinterpret_cast<const T*>(&gv);
      const T* bh = reinterpret_cast<const T*>(&bv);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        gk[j] = ag_f(gh[j]);
        bk[j] = ag_f(bh[j]);
      }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const uint4 xv = *reinterpret_cast<const uint4*>(xb + (ag_size)r * K + k);
      const T* xh = reinterpret_cast<const T*>(&xv);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        float xf = ag_f(xh[j]);
        if constexpr (LN) {
          xf = ag_round<T>((xf - stats[2 * r]) * stats[2 * r + 1] * gk[j] + bk[j]);
        }
        acc[r] += ag_f(wh[j]) * xf;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const float v = ag_warp_sum(acc[r]);
    if (lane == 0) {
      const int row = b0 + r;
      float o = ag_round<T>(v);
      if constexpr (ACT != 0) o = ag_round<T>(ag_act<ACT>(o));
      if constexpr (RES) o = ag_f(res[(ag_size)row * N + n]) + o;
      y[(ag_size)row * N + n] = ag_t<T>(o);
    }
  }
}
"""

# out (B, H·D): one block per (b, h). The block first writes this step's key and value (from the
# fused projection qkv (B, 3·H·D)) into the cache kv (2, B, H, MAXL, D) at position offset[0],
# in place, then attends q = qkv[b, h·D : (h+1)·D] over keys 0 .. offset: an online softmax per
# thread over its keys, then one combine across the block. B, H and MAXL are run-time values
# (read from the cache's shape), so a new batch or duration does not recompile the kernel.
_ATTENTION = r"""
template <typename T, int D, int THREADS>
__device__ __forceinline__ void ag_attention(
    const T* qkv, const T* kv_in, const int* offset, T* out, int B, int H, int MAXL) {
  constexpr int VEC = 16 / sizeof(T);
  constexpr int NT = THREADS;
  __shared__ float red[32];
  __shared__ float part[NT * (D + 1)];
  const int b = blockIdx.x / H, h = blockIdx.x % H;
  const int pos = offset[0];
  const int L = pos + 1;
  const float scale = rsqrtf((float)D);
  const T* qp = qkv + (ag_size)b * 3 * H * D + (ag_size)h * D;
  // The cache is an input of the MLX graph that this kernel also writes (see ``attention``).
  T* kb = const_cast<T*>(kv_in) + ((ag_size)(0 * B + b) * H + h) * (ag_size)MAXL * D;
  T* vb = const_cast<T*>(kv_in) + ((ag_size)(1 * B + b) * H + h) * (ag_size)MAXL * D;
  for (int d = threadIdx.x; d < D; d += NT) {
    kb[(ag_size)pos * D + d] = qp[(ag_size)H * D + d];
    vb[(ag_size)pos * D + d] = qp[(ag_size)2 * H * D + d];
  }
  __syncthreads();  // the block's global writes are visible to all of its threads after this
  float q[D];
#pragma unroll
  for (int d = 0; d < D; ++d) q[d] = scale * ag_f(qp[d]);
  float m = -AG_INF, s = 0.f;
  float acc[D];
#pragma unroll
  for (int d = 0; d < D; ++d) acc[d] = 0.f;
  for (int j = threadIdx.x; j < L; j += NT) {
    const T* kr = kb + (ag_size)j * D;
    float sc = 0.f;
#pragma unroll
    for (int d = 0; d < D; d += VEC) {
      const uint4 u = *reinterpret_cast<const uint4*>(kr + d);
      const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
      for (int i = 0; i < VEC; ++i) sc += q[d + i] * ag_f(e[i]);
    }
    const float mn = fmaxf(m, sc);
    const float c = expf(m - mn);
    const float p = expf(sc - mn);
    s = s * c + p;
    const T* vr = vb + (ag_size)j * D;
#pragma unroll
    for (int d = 0; d < D; d += VEC) {
      const uint4 u = *reinterpret_cast<const uint4*>(vr + d);
      const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
      for (int i = 0; i < VEC; ++i) acc[d + i] = acc[d + i] * c + p * ag_f(e[i]);
    }
    m = mn;
  }
  const float M = ag_block_max(m, red);
  const float c = (m == -AG_INF) ? 0.f : expf(m - M);
  const float S = ag_block_sum(s * c, red);
#pragma unroll
  for (int d = 0; d < D; ++d) part[threadIdx.x * (D + 1) + d] = acc[d] * c;
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += NT) {
    float t = 0.f;
    for (int i = 0; i < NT; ++i) t += part[i * (D + 1) + d];
    out[(ag_size)b * H * D + (ag_size)h * D + d] = ag_t<T>(t / S);
  }
}
"""

# y (B, N) = res + softmax_per_head(scores (B, H·S) [+ mask (B, S)]) · VWT[b]^T, VWT (B, N, H·S).
# S (prompt tokens) and N are run-time values: one compiled kernel serves every prompt length.
_FOLDED_CROSS = r"""
template <typename T, int H, int MAXHS, int WARPS, bool MASKED>
__device__ __forceinline__ void ag_folded_cross(
    const T* scores, const T* vwt, const T* res, const T* mask, T* y, int S, int N) {
  constexpr int VEC = 16 / sizeof(T);
  const int HS = H * S;
  __shared__ float p[MAXHS];
  const int b = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const T* sb = scores + (ag_size)b * HS;
  for (int hh = warp; hh < H; hh += WARPS) {
    float mx_ = -AG_INF;
    for (int j = lane; j < S; j += 32) {
      float v = ag_f(sb[hh * S + j]);
      if constexpr (MASKED) v = ag_round<T>(v + ag_f(mask[(ag_size)b * S + j]));
      p[hh * S + j] = v;
      mx_ = fmaxf(mx_, v);
    }
    mx_ = ag_warp_max(mx_);
    float sum = 0.f;
    for (int j = lane; j < S; j += 32) {
      const float e = expf(p[hh * S + j] - mx_);
      p[hh * S + j] = e;
      sum += e;
    }
    sum = ag_warp_sum(sum);
    for (int j = lane; j < S; j += 32) p[hh * S + j] = ag_round<T>(p[hh * S + j] / sum);
  }
  __syncthreads();
  const int n = blockIdx.x * WARPS + warp;
  if (n >= N) return;
  const T* wr = vwt + ((ag_size)b * N + n) * HS;
  float acc = 0.f;
  for (int k = lane * VEC; k < HS; k += 32 * VEC) {
    const uint4 wv = *reinterpret_cast<const uint4*>(wr + k);
    const T* wh = reinterpret_cast<const T*>(&wv);
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc += ag_f(wh[j]) * p[k + j];
  }
  acc = ag_warp_sum(acc);
  if (lane == 0) {
    const float o = ag_f(res[(ag_size)b * N + n]) + ag_round<T>(acc);
    y[(ag_size)b * N + n] = ag_t<T>(o);
  }
}
"""


def supported(dtype: mx.Dtype, *widths: int) -> bool:
    """Whether rows of these widths are whole 16-byte vectors in ``dtype``."""
    if dtype not in (mx.float16, mx.bfloat16, mx.float32):
        return False
    per = 16 // dtype.size
    return all(w % per == 0 for w in widths)


def available() -> bool:
    """MLX's CUDA backend with a GPU as the default device."""
    cuda = getattr(mx, "cuda", None)
    return mx.default_device() == mx.gpu and cuda is not None and bool(cuda.is_available())


_DEVICE_CODE = {"gemv": _GEMV, "attention": _ATTENTION, "folded_cross": _FOLDED_CROSS}
_TYPES = {mx.float32: "float", mx.float16: "ag_f16", mx.bfloat16: "ag_bf16"}


class _Nvrtc:
    """The NVRTC library MLX's CUDA backend links (``libnvrtc.so.*``), through ctypes.

    Why not ``mx.fast.cuda_kernel``: MLX compiles those in every process (it keeps only its own
    kernels in its disk cache) with its device headers, which took ~2.5 s a kernel on an H100
    host: 15-16 s before a process's first generation (measured 2026-11-27). Compiled here,
    without headers, the small model's 6 kernels took 8 s once on a fresh machine, and a later
    process loads their cubins from disk (its first fused step: 0.09 s). ``cuda-python`` would wrap the same five calls for a 10 MB dependency."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        self._lib = lib
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), None)
        self.version = f"{major.value}.{minor.value}"

    def _check(self, status: int, prog: ctypes.c_void_p | None) -> None:
        if status == 0:
            return
        lib = self._lib
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        message = lib.nvrtcGetErrorString(status).decode()
        if prog is not None:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            message += ": " + log.value.decode(errors="replace")
        raise RuntimeError(f"NVRTC: {message}")

    def compile(self, source: str, arch: str) -> bytes:
        """The cubin of ``source`` for ``arch`` (``sm_90``)."""
        lib = self._lib
        prog = ctypes.c_void_p()
        self._check(
            lib.nvrtcCreateProgram(
                ctypes.byref(prog), source.encode(), b"audiogen.cu", 0, None, None
            ),
            None,
        )
        try:
            options = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"]
            argv = (ctypes.c_char_p * len(options))(*options)
            self._check(lib.nvrtcCompileProgram(prog, len(options), argv), prog)
            size = ctypes.c_size_t()
            self._check(lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), prog)
            binary = ctypes.create_string_buffer(size.value)
            self._check(lib.nvrtcGetCUBIN(prog, binary), prog)
            return binary.raw
        finally:
            lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _nvrtc_path() -> str | None:
    """The ``libnvrtc`` this process has loaded (MLX's CUDA library links it), else the
    system's."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if "/libnvrtc.so" in path:
                    return path
    except OSError:
        pass
    return ctypes.util.find_library("nvrtc")


@cache
def _compiler() -> tuple[_Nvrtc, str] | None:
    """NVRTC and the GPU's architecture, or None where either is missing."""
    cuda = getattr(mx, "cuda", None)
    if cuda is None or not cuda.is_available():
        return None
    arch = mx.device_info().get("architecture")
    path = _nvrtc_path()
    if not isinstance(arch, str) or not arch.startswith("sm_") or path is None:
        return None
    try:
        return _Nvrtc(path), arch
    except (OSError, AttributeError, RuntimeError):
        return None


def compiler_available() -> bool:
    """Whether the fused kernels can run here: ``available`` and MLX's NVRTC found."""
    return available() and _compiler() is not None


def kernel_cache_dir() -> Path:
    """Where compiled kernels are kept: ``$AUDIOGEN_CACHE/cuda-kernels`` (default
    ``~/.cache/audiogen``)."""
    from audiogen_musicgen.convert import cache_root  # lazy: convert imports the decoder

    return cache_root() / "cuda-kernels"


def cached_compile(
    source: str, arch: str, version: str, compile_fn: Callable[[str, str], bytes], root: Path
) -> bytes:
    """``compile_fn(source, arch)``, kept in ``root`` under a digest of the source, the
    architecture and the compiler's version. The file is written atomically (a temporary file,
    then a rename), so concurrent processes never read half a cubin; an unwritable cache only
    costs the compile in each process."""
    digest = hashlib.sha256(f"{version}\0{arch}\0{source}".encode()).hexdigest()[:32]
    path = root / f"{digest}.cubin"
    try:
        return path.read_bytes()
    except OSError:
        pass
    binary = compile_fn(source, arch)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{digest}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(binary)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
    return binary


@cache
def _kernel(kind: str, dtype: mx.Dtype, consts: tuple[tuple[str, Any], ...]) -> tuple[str, bytes]:
    """(symbol, cubin) of one instantiation: ``kind`` in ``_DEVICE_CODE``, template ``consts``
    as (name, value) pairs in the template's order, plus the wrapper's parameters."""
    compiler = _compiler()
    if compiler is None:
        raise RuntimeError("fused CUDA kernels need MLX's CUDA backend and NVRTC")
    nvrtc, arch = compiler
    t = _TYPES[dtype]
    values = dict(consts)
    if kind == "gemv":
        ln, res = values["LN"], values["RES"]
        params = ["x", "w"] + (["g", "beta"] if ln else []) + (["res"] if res else [])
        signature = ", ".join(f"const T* {n}" for n in params) + ", T* y, int n"
        g, beta = ("g", "beta") if ln else ("nullptr", "nullptr")
        call = (
            f"ag_gemv<T, {values['B']}, {values['K']}, {WARPS}, {_c(ln)}, {values['ACT']}, "
            f"{_c(res)}, {_c(values['PER_ROW'])}>"
            f"(x, w, {g}, {beta}, {'res' if res else 'nullptr'}, y, {values['EPS']!r}f, n)"
        )
    elif kind == "attention":
        signature = "const T* qkv, const T* kv, const int* offset, T* out, int b, int h, int maxl"
        call = (
            f"ag_attention<T, {values['D']}, {ATTENTION_THREADS}>(qkv, kv, offset, out, b, h, maxl)"
        )
    else:
        masked = values["MASKED"]
        signature = (
            "const T* scores, const T* vwt, const T* res"
            + (", const T* mask" if masked else "")
            + ", T* y, int s, int n"
        )
        call = (
            f"ag_folded_cross<T, {values['H']}, {MAX_FOLDED}, {WARPS}, {_c(masked)}>"
            f"(scores, vwt, res, {'mask' if masked else 'nullptr'}, y, s, n)"
        )
    name = "ag_" + hashlib.sha256(repr((kind, t, consts)).encode()).hexdigest()[:16]
    source = (
        f"{_HEADER}\n{_DEVICE_CODE[kind]}\n"
        f"typedef {t} T;\n"
        f'extern "C" __global__ void {name}({signature}) {{ {call}; }}\n'
    )
    return name, cached_compile(source, arch, nvrtc.version, nvrtc.compile, kernel_cache_dir())


def _c(flag: bool) -> str:
    return "true" if flag else "false"


def _launch(
    kernel: tuple[str, bytes],
    inputs: list[mx.array],
    scalars: list[int],
    shape: tuple[int, ...],
    dtype: mx.Dtype,
    grid: tuple[int, int, int],
    threads: int,
) -> mx.array:
    name, binary = kernel
    return mx.fast.precompiled_cuda_kernel(
        name=name,
        compiled_source=binary,
        inputs=inputs,
        output_shapes=[shape],
        output_dtypes=[dtype],
        scalars=scalars,
        grid=grid,
        threadgroup=(threads, 1, 1),
        # A non-contiguous input is copied first; the caches are contiguous by construction
        # (a copy of one would lose the attention kernel's in-place writes).
        ensure_row_contiguous=True,
    )[0]


def gemv(
    x: mx.array,
    w: mx.array,
    *,
    norm: tuple[mx.array, mx.array, float] | None = None,
    activation: str = "",
    residual: mx.array | None = None,
    per_row: bool = False,
) -> mx.array:
    """``epilogue(prologue(x) @ W^T)`` for ``x (B, K)`` and ``W (N, K)`` (``(B, N, K)`` with
    ``per_row``): ``norm`` = (weight, bias, eps) of a LayerNorm applied to x first,
    ``activation`` one of ``ACTIVATIONS``, ``residual (B, N)`` added last."""
    b, k = x.shape
    n = w.shape[-2]
    inputs = [x, w]
    if norm is not None:
        inputs += [norm[0], norm[1]]
    if residual is not None:
        inputs.append(residual)
    consts = (
        ("B", b),
        ("K", k),
        ("LN", norm is not None),
        ("ACT", ACTIVATIONS[activation]),
        ("RES", residual is not None),
        ("PER_ROW", per_row),
        ("EPS", float(norm[2]) if norm else 0.0),
    )
    blocks = -(-n // WARPS)
    return _launch(
        _kernel("gemv", x.dtype, consts),
        inputs,
        [n],
        (b, n),
        x.dtype,
        (blocks * WARPS * 32, b if per_row else 1, 1),
        WARPS * 32,
    )


def attention(qkv: mx.array, kv: mx.array, offset: mx.array) -> mx.array:
    """Single-query self-attention that also appends to the cache: writes this step's keys and
    values from ``qkv (B, 3·H·D)`` (the fused projection) into ``kv (2, B, H, MAXL, D)`` at
    ``offset`` (an int32 array ``(1,)``), **in place**, then attends keys ``0 .. offset``.
    Returns ``(B, H·D)``.

    Why in place: a functional cache write is one more primitive a layer (a slice update plus
    the views that feed it), and a step is bound by the host cost of its primitives. MLX does
    not know the kernel writes ``kv``, which is sound only because (a) nothing else reads the
    cache between steps except this kernel of the same layer, whose later calls depend on this
    one through the decoded tokens, and (b) the cache is row-contiguous, so MLX passes its own
    buffer rather than a copy (``KVCache`` allocates it so; ``MusicGenDecoder.fused_step``)."""
    _, b, h, _, d = kv.shape
    return _launch(
        _kernel("attention", qkv.dtype, (("D", d),)),
        [qkv, kv, offset],
        [b, h, kv.shape[3]],
        (b, h * d),
        qkv.dtype,
        (b * h * ATTENTION_THREADS, 1, 1),
        ATTENTION_THREADS,
    )


def folded_cross(
    scores: mx.array,
    vwt: mx.array,
    residual: mx.array,
    heads: int,
    mask: mx.array | None = None,
) -> mx.array:
    """``residual + P · VW`` with ``P`` the per-head softmax of ``scores (B, H·S)`` (plus the
    additive key ``mask (B, S)``), ``vwt (B, N, H·S)`` (``CrossAttention.fold``)."""
    b, hs = scores.shape
    if hs > MAX_FOLDED:  # the kernel's shared memory holds heads × tokens floats
        raise ValueError(f"folded cross-attention of {hs} > {MAX_FOLDED} heads × tokens")
    n = vwt.shape[1]
    inputs = [scores, vwt, residual] + ([mask] if mask is not None else [])
    return _launch(
        _kernel("folded_cross", scores.dtype, (("H", heads), ("MASKED", mask is not None))),
        inputs,
        [hs // heads, n],
        (b, n),
        scores.dtype,
        (-(-n // WARPS) * WARPS * 32, b, 1),
        WARPS * 32,
    )
