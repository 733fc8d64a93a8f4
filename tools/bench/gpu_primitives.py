"""MLX CUDA primitive alternatives for the Stable Audio DiT (one-off probe, H100/H200): matmul
with a transposed vs a contiguous weight, and RoPE as ``mx.fast.rope`` vs a compiled
cos/sin formula, on 1.0's shapes. Prints median milliseconds and max differences."""

from __future__ import annotations

import statistics
import time

import mlx.core as mx


def med(fn, runs: int = 30) -> float:  # type: ignore[no-untyped-def]
    mx.eval(fn())
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        mx.eval(fn())
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e3


def main() -> None:
    import sys

    B, L, D, H, hd = 2, int(sys.argv[1]) if len(sys.argv) > 1 else 1025, 1536, 24, 64
    h = mx.random.normal((B, L, D)).astype(mx.float16)
    for n in (3 * D, 8 * D, D):
        w = mx.random.normal((n, D)).astype(mx.float16)
        wt = mx.contiguous(w.T)
        mx.eval(w, wt)
        a, b = med(lambda w=w: h @ w.T), med(lambda wt=wt: h @ wt)
        err = float(mx.abs(h @ w.T - h @ wt).max())
        print(
            f"matmul {B * L}x{D}@{D}x{n}: x @ W.T {a:.3f} ms, x @ Wt(contiguous) {b:.3f} ms, diff {err:.1e}"
        )
    w2 = mx.random.normal((D, 4 * D)).astype(mx.float16)
    w2t = mx.contiguous(w2.T)
    x4 = mx.random.normal((B, L, 4 * D)).astype(mx.float16)
    print(
        f"matmul {B * L}x{4 * D}@{4 * D}x{D}: x @ W.T {med(lambda: x4 @ w2.T):.3f} ms, x @ Wt {med(lambda: x4 @ w2t):.3f} ms"
    )

    qkv = mx.random.normal((B, L, 3 * D)).astype(mx.float16)
    q_view = qkv.reshape(B, L, 3, H, hd).transpose(2, 0, 3, 1, 4)[0]
    q = mx.contiguous(q_view)
    mx.eval(q)
    rope = lambda x: mx.fast.rope(x, hd, traditional=False, base=1e4, scale=1.0, offset=0)  # noqa: E731
    half = hd // 2
    inv = 1.0 / (10000 ** (mx.arange(0, half, dtype=mx.float32) / half))
    ang = mx.arange(L, dtype=mx.float32)[:, None] * inv[None]
    cos = mx.concatenate([mx.cos(ang), mx.cos(ang)], axis=-1).astype(mx.float16)
    sin = mx.concatenate([-mx.sin(ang), mx.sin(ang)], axis=-1).astype(mx.float16)
    perm = mx.concatenate([mx.arange(half, hd), mx.arange(0, half)])

    def formula(x: mx.array) -> mx.array:
        # x·cos + swap_halves(x)·(∓sin): rotate_half without a concatenate of negated halves
        return x * cos + mx.take(x, perm, axis=-1) * sin

    fc = mx.compile(formula)
    ref = rope(q)
    print(f"rope fast, contiguous q: {med(lambda: rope(q)):.3f} ms")
    print(f"rope fast, strided q (qkv view): {med(lambda: rope(q_view)):.3f} ms")
    print(
        f"rope compiled formula: {med(lambda: fc(q)):.3f} ms, diff {float(mx.abs(fc(q) - ref).max()):.1e}"
    )
    print(f"rope compiled formula, strided q: {med(lambda: fc(q_view)):.3f} ms")
    print(f"contiguous copy of q view: {med(lambda: mx.contiguous(q_view)):.3f} ms")
    print(
        f"sdpa self: {med(lambda: mx.fast.scaled_dot_product_attention(q, q, q, scale=0.125)):.3f} ms"
    )
    k16 = q[:, :, :, :]
    print(f"elementwise add (same size as q): {med(lambda: q + k16):.3f} ms")


if __name__ == "__main__":
    main()
