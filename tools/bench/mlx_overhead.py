"""Where a MusicGen decode step's time goes on this device: per-primitive cost of MLX
(chained tiny ops, matvecs at decoder shapes) vs torch, and our decoder's step split into
graph building (host) and evaluation.

    python3 tools/bench/mlx_overhead.py [--layers 24 --width 1024 --dtype float16]
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


def timed(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def _chain_from(x, op, n):  # type: ignore[no-untyped-def]
    y = x
    for _ in range(n):
        y = op(y)
    return y


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--dtype", default="float16")
    args = ap.parse_args()
    dt = getattr(mx, args.dtype)
    d = args.width
    print("device", mx.default_device())
    x = mx.ones((2, 1, d), dt)
    mx.eval(x)

    def chain(op, n):  # type: ignore[no-untyped-def]
        def run() -> None:
            y = x
            for _ in range(n):
                y = op(y)
            mx.eval(y)

        return run

    for n in (1, 100, 1000):
        t = timed(chain(lambda y: y + 1, n), 5)
        print(f"chained add x{n}: {t * 1e3:.3f} ms total, {t / n * 1e6:.2f} us/op")
    w = mx.random.normal((d, d)).astype(dt) * 0.01
    mx.eval(w)
    for n in (100, 1000):
        t = timed(chain(lambda y: y @ w, n), 5)
        print(f"chained matvec (2x{d})@({d}x{d}) x{n}: {t / n * 1e6:.2f} us/op")
    x1 = x[:1]
    t = timed(lambda: mx.eval(_chain_from(x1, lambda y: y @ w, 1000)), 3)
    print(f"chained matvec M=1 x1000: {t / 1000 * 1e6:.2f} us/op")
    wt = mx.array(w.T)
    mx.eval(wt)
    t = timed(lambda: mx.eval(_chain_from(x, lambda y: mx.matmul(y, wt.T), 1000)), 3)
    print(f"chained matvec y @ W^T (nn.Linear layout) x1000: {t / 1000 * 1e6:.2f} us/op")
    for bits in (4, 8):
        wq, scales, biases = mx.quantize(wt, group_size=64, bits=bits)
        mx.eval(wq, scales, biases)

        def qop(y, wq=wq, scales=scales, biases=biases, bits=bits):  # type: ignore[no-untyped-def]
            return mx.quantized_matmul(
                y, wq, scales, biases, transpose=True, group_size=64, bits=bits
            )

        t = timed(lambda qop=qop: mx.eval(_chain_from(x, qop, 1000)), 3)
        print(f"chained quantized matvec {bits}-bit x1000: {t / 1000 * 1e6:.2f} us/op")
    w4 = mx.random.normal((d, 4 * d)).astype(dt) * 0.01
    w4t = mx.random.normal((4 * d, d)).astype(dt) * 0.01
    mx.eval(w4, w4t)
    t = timed(chain(lambda y: (y @ w4) @ w4t, 200), 5)
    print(f"chained ffn pair {d}->{4 * d}->{d} x200: {t / 200 * 1e6:.2f} us/pair")
    ln = nn.LayerNorm(d)
    t = timed(chain(lambda y: ln(y), 500), 5)
    print(f"chained LayerNorm x500: {t / 500 * 1e6:.2f} us/op")
    q = mx.ones((2, 16, 1, d // 16), dt)
    kv = mx.ones((2, 16, 1503, d // 16), dt)
    mx.eval(q, kv)
    t = timed(
        chain(
            lambda y: (
                mx.fast.scaled_dot_product_attention(q, kv, kv, scale=0.1)
                + y.reshape(2, 1, 16, -1).transpose(0, 2, 1, 3) * 0
            ),
            300,
        ),
        3,
    )
    print(f"chained sdpa (1x1503) x300: {t / 300 * 1e6:.2f} us/op")

    # Our decoder step: build time vs eval time.
    from audiogen_musicgen.config import DecoderConfig
    from audiogen_musicgen.decoder import MusicGenDecoder

    cfg = DecoderConfig.from_dict(
        {
            "hidden_size": d,
            "num_hidden_layers": args.layers,
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
    cache = dec.make_cache(states, mx.ones((2, 20), mx.int32), 600)
    ids = mx.zeros((2, 4, 1), mx.int32)
    mx.eval(ids)
    for _ in range(5):
        mx.eval(dec.step(ids, cache))
    n = 100
    build = evalt = 0.0
    for _ in range(n):
        t0 = time.perf_counter()
        out = dec.step(ids, cache)
        t1 = time.perf_counter()
        mx.eval(out)
        t2 = time.perf_counter()
        build += t1 - t0
        evalt += t2 - t1
    print(
        f"decoder step (eager, synced): build {build / n * 1e3:.2f} ms + eval {evalt / n * 1e3:.2f} ms"
    )
    t0 = time.perf_counter()
    outs = []
    for _ in range(n):
        outs.append(dec.step(ids, cache))
        mx.async_eval(outs[-1])
    mx.eval(outs)
    print(f"decoder step (eager, async): {(time.perf_counter() - t0) / n * 1e3:.2f} ms/step")
    from audiogen_musicgen.sampling import generate_codes

    for static in (False, True):
        for frames in (20, 20, 220):
            t0 = time.perf_counter()
            mx.eval(
                generate_codes(
                    dec,
                    states,
                    mx.ones((2, 20), mx.int32),
                    frames,
                    guidance_scale=None,
                    key=0,
                    static=static,
                )
            )
            dt_ = time.perf_counter() - t0
            if frames == 20:
                short = dt_
        print(f"generate_codes static={static}: {(dt_ - short) / 200 * 1e3:.2f} ms/step (marginal)")
    try:
        import torch

        tx = torch.ones((2, 1, d), dtype=getattr(torch, args.dtype), device="cuda")
        tw = torch.randn((d, d), dtype=tx.dtype, device="cuda") * 0.01

        def tchain(n: int) -> None:
            y = tx
            for _ in range(n):
                y = y @ tw
            torch.cuda.synchronize()

        tchain(10)
        t = time.perf_counter()
        tchain(1000)
        print(f"torch chained matvec x1000: {(time.perf_counter() - t) / 1000 * 1e6:.2f} us/op")
    except Exception as e:
        print("torch skipped:", e)


if __name__ == "__main__":
    main()
