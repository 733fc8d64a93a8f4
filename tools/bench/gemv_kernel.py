"""Experiment: a warp-per-output GEMV for the decoder's batch-2 linears on MLX CUDA, vs
``x @ W.T`` (cuBLAS), then a decoder step with every per-step linear swapped for it.

    python3 tools/bench/gemv_kernel.py [--dtype float16]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for src in (ROOT / "packages").glob("*/src"):
    sys.path.insert(0, str(src))

import audiogen_core  # noqa: E402, F401

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402

SOURCE = """
    // One warp per output feature n: 16-byte loads of W's row, all M input rows per load.
    const int lane = threadIdx.x & 31;
    const int n = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (n >= N) return;
    const T* wr = w + (size_t)n * K;
    float acc[MR];
    #pragma unroll
    for (int m = 0; m < MR; ++m) acc[m] = 0.f;
    #pragma unroll 4
    for (int k = lane * 8; k < K; k += 256) {
        uint4 wv = *reinterpret_cast<const uint4*>(wr + k);
        const T* wh = reinterpret_cast<const T*>(&wv);
        #pragma unroll
        for (int m = 0; m < MR; ++m) {
            uint4 xv = *reinterpret_cast<const uint4*>(x + m * K + k);
            const T* xh = reinterpret_cast<const T*>(&xv);
            #pragma unroll
            for (int j = 0; j < 8; ++j) acc[m] += static_cast<float>(wh[j]) * static_cast<float>(xh[j]);
        }
    }
    #pragma unroll
    for (int m = 0; m < MR; ++m) {
        float v = acc[m];
        #pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffff, v, o);
        if (lane == 0) out[m * N + n] = static_cast<T>(v);
    }
"""

_kernel = mx.fast.cuda_kernel(
    name="gemv_rows", input_names=["x", "w"], output_names=["out"], source=SOURCE
)


def gemv(x: mx.array, w: mx.array) -> mx.array:
    """``x @ w.T`` for x (..., K) with few rows, w (N, K) (nn.Linear layout)."""
    lead = x.shape[:-1]
    k = x.shape[-1]
    m = 1
    for s in lead:
        m *= s
    n = w.shape[0]
    out = _kernel(
        inputs=[x.reshape(m, k), w],
        template=[("T", x.dtype), ("MR", m), ("N", n), ("K", k)],
        grid=(n * 32, 1, 1),
        threadgroup=(256, 1, 1),
        output_shapes=[(m, n)],
        output_dtypes=[x.dtype],
    )[0]
    return out.reshape(*lead, n)


class FastLinear(nn.Module):
    def __init__(self, weight: mx.array) -> None:
        super().__init__()
        self.weight = weight

    def __call__(self, x: mx.array) -> mx.array:
        if x.size // x.shape[-1] <= 8 and x.shape[-1] % 256 == 0:
            return gemv(x, self.weight)
        return x @ self.weight.T


def timed(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dtype", default="float16")
    args = ap.parse_args()
    dt = getattr(mx, args.dtype)
    print("device", mx.default_device(), args.dtype)
    for n, k in (
        (3072, 1024),
        (1024, 1024),
        (4096, 1024),
        (1024, 4096),
        (6144, 2048),
        (2048, 8192),
    ):
        x = (mx.random.normal((2, 1, k)) * 0.1).astype(dt)
        w = (mx.random.normal((n, k)) * 0.05).astype(dt)
        mx.eval(x, w)
        ref = (x @ w.T).astype(mx.float32)
        got = gemv(x, w).astype(mx.float32)
        err = mx.max(mx.abs(ref - got)).item() / max(mx.max(mx.abs(ref)).item(), 1e-6)
        fast = timed(lambda x=x, w=w: mx.eval([gemv(x, w) for _ in range(200)]), 3) / 200
        dense = timed(lambda x=x, w=w: mx.eval([x @ w.T for _ in range(200)]), 3) / 200
        gbs = n * k * 2 / fast / 1e9
        print(
            f"({n}x{k}): rel err {err:.1e}; kernel {fast * 1e6:.2f} us ({gbs:.0f} GB/s), x@W.T {dense * 1e6:.2f} us"
        )

    from audiogen_musicgen.config import DecoderConfig
    from audiogen_musicgen.decoder import MusicGenDecoder

    for layers, d in ((24, 1024), (48, 1536), (48, 2048)):
        cfg = DecoderConfig.from_dict(
            {
                "hidden_size": d,
                "num_hidden_layers": layers,
                "num_attention_heads": d // 64,
                "ffn_dim": 4 * d,
                "num_codebooks": 4,
                "vocab_size": 2048,
            }
        )
        dec = MusicGenDecoder(cfg)
        dec.set_dtype(dt)
        mx.eval(dec.parameters())
        states = mx.random.normal((2, 20, d)).astype(dt)
        ids = mx.zeros((2, 4, 1), mx.int32)

        def steps(
            dec: MusicGenDecoder = dec, states: mx.array = states, ids: mx.array = ids, n: int = 100
        ) -> float:
            cache = dec.make_cache(states, mx.ones((2, 20), mx.int32), n + 10)
            for _ in range(5):
                mx.eval(dec.step(ids, cache))
            t0 = time.perf_counter()
            outs = []
            for _ in range(n):
                outs.append(dec.step(ids, cache))
                mx.async_eval(outs[-1])
            mx.eval(outs)
            return (time.perf_counter() - t0) / n

        base = steps()
        ref_logits = None
        cache = dec.make_cache(states, mx.ones((2, 20), mx.int32), 4)
        ref_logits = dec.step(ids, cache).astype(mx.float32)
        for layer in dec.layers:
            sa, ca = layer.self_attn, layer.encoder_attn
            sa.qkv_proj, sa.out_proj = (
                FastLinear(sa.qkv_proj.weight),
                FastLinear(sa.out_proj.weight),
            )
            ca.q_proj, ca.out_proj = FastLinear(ca.q_proj.weight), FastLinear(ca.out_proj.weight)
            layer.fc1, layer.fc2 = FastLinear(layer.fc1.weight), FastLinear(layer.fc2.weight)
        dec.lm_heads = FastLinear(dec.lm_heads.weight)
        cache = dec.make_cache(states, mx.ones((2, 20), mx.int32), 4)
        got = dec.step(ids, cache).astype(mx.float32)
        err = mx.max(mx.abs(got - ref_logits)).item()
        fast = steps()
        print(
            f"decoder {layers}x{d}: cuBLAS {base * 1e3:.2f} ms/step ({1 / base:.0f}/s), "
            f"gemv kernel {fast * 1e3:.2f} ms/step ({1 / fast:.0f}/s); logits max diff {err:.2e}"
        )


if __name__ == "__main__":
    main()
