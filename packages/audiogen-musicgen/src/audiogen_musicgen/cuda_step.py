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
rounded to it at the same places. The kernels are compiled by NVRTC on first use (MLX caches
them, also on disk); their template constants are the dtype and model widths only, while the
batch, prompt length and cache length are read at run time, so a new prompt or duration does not
compile again. They need rows whose byte size is a multiple of 16 (``supported``).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import mlx.core as mx

WARPS = 8  # warps per block in the matvec kernels: 8 output rows per block
ATTENTION_THREADS = 128
MAX_ROWS = 8  # batch rows a step may carry (CFG doubles the prompts)
MAX_FOLDED = 4096  # heads × text tokens of a folded cross-attention (float shared memory)
ACTIVATIONS = {"": 0, "gelu": 1, "gelu_new": 2, "gelu_pytorch_tanh": 2, "relu": 3, "silu": 4}

_HEADER = r"""
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
  float t = lane < nw ? red[lane] : -INFINITY;
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
  return static_cast<float>(static_cast<T>(v));
}
"""

# y (B, N) = epilogue(W (N, K) · prologue(x (B, K))); with PER_ROW each row b has its own
# matrix W[b] (B, N, K) and block row blockIdx.y serves only that row. N is a run-time value:
# the folded cross-attention's score matrix has heads × prompt tokens rows, and a compile-time N
# would recompile the kernel (about a second with NVRTC) for each new prompt length.
_GEMV = r"""
template <typename T, int B, int K, int WARPS, bool LN, int ACT, bool RES, bool PER_ROW>
__device__ __forceinline__ void ag_gemv(
    const T* x, const T* w, const T* g, const T* beta, const T* res, T* y, float EPS, int N) {
  constexpr int VEC = 16 / sizeof(T);
  constexpr int ROWS = PER_ROW ? 1 : B;
  __shared__ float red[32];
  __shared__ float stats[2 * ROWS];
  const int b0 = PER_ROW ? blockIdx.y : 0;
  const T* xb = x + (size_t)b0 * K;
  if constexpr (LN) {
    for (int r = 0; r < ROWS; ++r) {
      const T* xr = xb + (size_t)r * K;
      float s = 0.f;
      for (int k = threadIdx.x; k < K; k += blockDim.x) s += static_cast<float>(xr[k]);
      const float mean = ag_block_sum(s, red) / K;
      float q = 0.f;
      for (int k = threadIdx.x; k < K; k += blockDim.x) {
        const float d = static_cast<float>(xr[k]) - mean;
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
  const T* wr = w + (PER_ROW ? (size_t)b0 * N * K : (size_t)0) + (size_t)n * K;
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
        gk[j] = static_cast<float>(gh[j]);
        bk[j] = static_cast<float>(bh[j]);
      }
    }
#pragma unroll
    for (int r = 0; r < ROWS; ++r) {
      const uint4 xv = *reinterpret_cast<const uint4*>(xb + (size_t)r * K + k);
      const T* xh = reinterpret_cast<const T*>(&xv);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        float xf = static_cast<float>(xh[j]);
        if constexpr (LN) {
          xf = ag_round<T>((xf - stats[2 * r]) * stats[2 * r + 1] * gk[j] + bk[j]);
        }
        acc[r] += static_cast<float>(wh[j]) * xf;
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
      if constexpr (RES) o = static_cast<float>(res[(size_t)row * N + n]) + o;
      y[(size_t)row * N + n] = static_cast<T>(o);
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
    const T* qkv, const T* kv_in, const int32_t* offset, T* out, int B, int H, int MAXL) {
  constexpr int VEC = 16 / sizeof(T);
  constexpr int NT = THREADS;
  __shared__ float red[32];
  __shared__ float part[NT * (D + 1)];
  const int b = blockIdx.x / H, h = blockIdx.x % H;
  const int pos = offset[0];
  const int L = pos + 1;
  const float scale = rsqrtf((float)D);
  const T* qp = qkv + (size_t)b * 3 * H * D + (size_t)h * D;
  // The cache is an input of the MLX graph that this kernel also writes (see ``attention``).
  T* kb = const_cast<T*>(kv_in) + ((size_t)(0 * B + b) * H + h) * (size_t)MAXL * D;
  T* vb = const_cast<T*>(kv_in) + ((size_t)(1 * B + b) * H + h) * (size_t)MAXL * D;
  for (int d = threadIdx.x; d < D; d += NT) {
    kb[(size_t)pos * D + d] = qp[(size_t)H * D + d];
    vb[(size_t)pos * D + d] = qp[(size_t)2 * H * D + d];
  }
  __syncthreads();  // the block's global writes are visible to all of its threads after this
  float q[D];
#pragma unroll
  for (int d = 0; d < D; ++d) q[d] = scale * static_cast<float>(qp[d]);
  float m = -INFINITY, s = 0.f;
  float acc[D];
#pragma unroll
  for (int d = 0; d < D; ++d) acc[d] = 0.f;
  for (int j = threadIdx.x; j < L; j += NT) {
    const T* kr = kb + (size_t)j * D;
    float sc = 0.f;
#pragma unroll
    for (int d = 0; d < D; d += VEC) {
      const uint4 u = *reinterpret_cast<const uint4*>(kr + d);
      const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
      for (int i = 0; i < VEC; ++i) sc += q[d + i] * static_cast<float>(e[i]);
    }
    const float mn = fmaxf(m, sc);
    const float c = expf(m - mn);
    const float p = expf(sc - mn);
    s = s * c + p;
    const T* vr = vb + (size_t)j * D;
#pragma unroll
    for (int d = 0; d < D; d += VEC) {
      const uint4 u = *reinterpret_cast<const uint4*>(vr + d);
      const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
      for (int i = 0; i < VEC; ++i) acc[d + i] = acc[d + i] * c + p * static_cast<float>(e[i]);
    }
    m = mn;
  }
  const float M = ag_block_max(m, red);
  const float c = (m == -INFINITY) ? 0.f : expf(m - M);
  const float S = ag_block_sum(s * c, red);
#pragma unroll
  for (int d = 0; d < D; ++d) part[threadIdx.x * (D + 1) + d] = acc[d] * c;
  __syncthreads();
  for (int d = threadIdx.x; d < D; d += NT) {
    float t = 0.f;
    for (int i = 0; i < NT; ++i) t += part[i * (D + 1) + d];
    out[(size_t)b * H * D + (size_t)h * D + d] = static_cast<T>(t / S);
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
  const T* sb = scores + (size_t)b * HS;
  for (int hh = warp; hh < H; hh += WARPS) {
    float mx_ = -INFINITY;
    for (int j = lane; j < S; j += 32) {
      float v = static_cast<float>(sb[hh * S + j]);
      if constexpr (MASKED) v = ag_round<T>(v + static_cast<float>(mask[(size_t)b * S + j]));
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
  const T* wr = vwt + ((size_t)b * N + n) * HS;
  float acc = 0.f;
  for (int k = lane * VEC; k < HS; k += 32 * VEC) {
    const uint4 wv = *reinterpret_cast<const uint4*>(wr + k);
    const T* wh = reinterpret_cast<const T*>(&wv);
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc += static_cast<float>(wh[j]) * p[k + j];
  }
  acc = ag_warp_sum(acc);
  if (lane == 0) {
    const float o = static_cast<float>(res[(size_t)b * N + n]) + ag_round<T>(acc);
    y[(size_t)b * N + n] = static_cast<T>(o);
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


_KERNEL_HEADER = _HEADER + _GEMV + _ATTENTION + _FOLDED_CROSS


@cache
def _gemv_kernel(ln: bool, res: bool, eps: float) -> Any:
    inputs = ["x", "w"] + (["g", "beta"] if ln else []) + (["res"] if res else [])
    # Unused pointers are null: the template's `if constexpr` never touches them. eps is a
    # float, so it is written into the source (template arguments are ints, bools, dtypes).
    g, beta = ("g", "beta") if ln else ("nullptr", "nullptr")
    source = (
        "  ag_gemv<T, B, K, WARPS, LN, ACT, RES, PER_ROW>("
        f"x, w, {g}, {beta}, {'res' if res else 'nullptr'}, y, {eps!r}f, "
        "w_shape[PER_ROW ? 1 : 0]);\n"
    )
    name = f"ag_gemv{'_ln' if ln else ''}{'_res' if res else ''}"
    return mx.fast.cuda_kernel(
        name=name, input_names=inputs, output_names=["y"], source=source, header=_KERNEL_HEADER
    )


@cache
def _attention_kernel() -> Any:
    return mx.fast.cuda_kernel(
        name="ag_decode_attention",
        input_names=["qkv", "kv", "offset"],
        output_names=["out"],
        source=(
            "  ag_attention<T, D, THREADS>("
            "qkv, kv, offset, out, kv_shape[1], kv_shape[2], kv_shape[3]);\n"
        ),
        header=_KERNEL_HEADER,
    )


@cache
def _folded_cross_kernel(masked: bool) -> Any:
    inputs = ["scores", "vwt", "res"] + (["mask"] if masked else [])
    return mx.fast.cuda_kernel(
        name=f"ag_folded_cross{'_masked' if masked else ''}",
        input_names=inputs,
        output_names=["y"],
        source=(
            "  ag_folded_cross<T, H, MAXHS, WARPS, MASKED>("
            f"scores, vwt, res, {'mask' if masked else 'nullptr'}, y, "
            "scores_shape[1] / H, vwt_shape[1]);\n"
        ),
        header=_KERNEL_HEADER,
    )


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
    kernel = _gemv_kernel(norm is not None, residual is not None, float(norm[2]) if norm else 0.0)
    blocks = -(-n // WARPS)
    return kernel(
        inputs=inputs,
        template=[
            ("T", x.dtype),
            ("B", b),
            ("K", k),
            ("WARPS", WARPS),
            ("LN", norm is not None),
            ("ACT", ACTIVATIONS[activation]),
            ("RES", residual is not None),
            ("PER_ROW", per_row),
        ],
        grid=(blocks * WARPS * 32, b if per_row else 1, 1),
        threadgroup=(WARPS * 32, 1, 1),
        output_shapes=[(b, n)],
        output_dtypes=[x.dtype],
    )[0]


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
    return _attention_kernel()(
        inputs=[qkv, kv, offset],
        template=[
            ("T", qkv.dtype),
            ("D", d),
            ("THREADS", ATTENTION_THREADS),
        ],
        grid=(b * h * ATTENTION_THREADS, 1, 1),
        threadgroup=(ATTENTION_THREADS, 1, 1),
        output_shapes=[(b, h * d)],
        output_dtypes=[qkv.dtype],
    )[0]


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
    return _folded_cross_kernel(mask is not None)(
        inputs=inputs,
        template=[
            ("T", scores.dtype),
            ("H", heads),
            ("MAXHS", MAX_FOLDED),
            ("WARPS", WARPS),
            ("MASKED", mask is not None),
        ],
        grid=(-(-n // WARPS) * WARPS * 32, b, 1),
        threadgroup=(WARPS * 32, 1, 1),
        output_shapes=[(b, n)],
        output_dtypes=[scores.dtype],
    )[0]
