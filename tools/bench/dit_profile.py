"""Where a Stable Audio Open 1.0 DiT evaluation spends its time on a GPU: ours (MLX) per part and
per primitive, beside the same primitives in torch, in one run.

Full-size 1.0 shapes (24 blocks × 1536, 24 heads, 1024 latents + 1 token, 130 condition tokens),
random fp16 weights, CFG batch 2. Prints the median of ``--runs`` timings (after a warm-up) of:
one whole DiT eval (eager and ``mx.compile``d); one block's self-attention, cross-attention and
feed-forward (×24 gives their share); the attention and matmul primitives alone, MLX vs torch.

    python3 tools/bench/dit_profile.py            # on the GPU box (MLX CUDA + torch CUDA)
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import time
from collections.abc import Callable
from typing import Any

import _bootstrap

_bootstrap.bootstrap(stub_audio_io=False)
torch = importlib.import_module("torch")  # imported by bootstrap, before mlx

import mlx.core as mx  # noqa: E402

from audiogen_stableaudio.config import DiTConfig  # noqa: E402
from audiogen_stableaudio.dit import StableAudioDiT  # noqa: E402


def _median(fn: Callable[[], Any], sync: Callable[[Any], None], runs: int) -> float:
    sync(fn())
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--latents", type=int, default=1024)
    args = ap.parse_args()
    mx.random.seed(0)
    cfg = DiTConfig()
    model = StableAudioDiT(cfg)
    model.set_dtype(mx.float16)
    mx.eval(model.parameters())
    B, T, S, D = 2, args.latents, 130, cfg.embed_dim
    x = mx.random.normal((B, cfg.io_channels, T)).astype(mx.float16)
    t = mx.array([0.5, 0.5])
    cond = mx.random.normal((B, S, cfg.cond_token_dim)).astype(mx.float16)
    glob = mx.random.normal((B, cfg.global_cond_dim)).astype(mx.float16)
    ev = mx.eval
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rows: list[tuple[str, float, float | None]] = []
    DT = torch.float16 if dev == "cuda" else torch.float32  # float32 for CPU smoke runs

    def ours(name: str, fn: Callable[[], Any], torch_fn: Callable[[], Any] | None = None) -> None:
        mine = _median(fn, ev, args.runs)
        theirs = None
        if torch_fn is not None:
            theirs = _median(
                torch_fn, lambda _: torch.cuda.synchronize() if dev == "cuda" else None, args.runs
            )
        rows.append((name, mine, theirs))

    ours("DiT eval (eager)", lambda: model(x, t, cond, None, glob))
    compiled = mx.compile(model)
    ours("DiT eval (mx.compile)", lambda: compiled(x, t, cond, None, glob))
    block = model.transformer_blocks[0]
    h = mx.random.normal((B, T + 1, D)).astype(mx.float16)
    ctx = mx.random.normal((B, S, cfg.cross_attention_dim)).astype(mx.float16)
    ours("block: self-attention", lambda: block.attn1(block.norm1(h)))
    ours("block: cross-attention", lambda: block.attn2(block.norm2(h), ctx, None))
    ours("block: feed-forward", lambda: block.ff(block.norm3(h)))
    ours("block: whole", lambda: block(h, ctx, None))

    th = torch.randn(B, T + 1, D, device=dev, dtype=DT)
    q = mx.random.normal((B, cfg.num_heads, T + 1, cfg.head_dim)).astype(mx.float16)
    tq = torch.randn(B, cfg.num_heads, T + 1, cfg.head_dim, device=dev, dtype=DT)
    f = torch.nn.functional
    ours(
        "sdpa self (1025 x 1025)",
        lambda: mx.fast.scaled_dot_product_attention(q, q, q, scale=0.125),
        lambda: f.scaled_dot_product_attention(tq, tq, tq),
    )
    kc = mx.random.normal((B, cfg.num_key_value_heads, S, cfg.head_dim)).astype(mx.float16)
    tk = torch.randn(B, cfg.num_heads, S, cfg.head_dim, device=dev, dtype=DT)
    ours(
        "sdpa cross (1025 x 130, GQA)",
        lambda: mx.fast.scaled_dot_product_attention(q, kc, kc, scale=0.125),
        lambda: f.scaled_dot_product_attention(tq, tk, tk),
    )
    ours(
        "rope q (64 of 64 dims)",
        lambda: mx.fast.rope(q, cfg.rotary_dim, traditional=False, base=1e4, scale=1.0, offset=0),
    )
    for n_out in (3 * D, 8 * D, D):
        w = mx.random.normal((n_out, D)).astype(mx.float16)
        tw = torch.randn(n_out, D, device=dev, dtype=DT)
        ours(
            f"matmul {B * (T + 1)}x{D} @ {D}x{n_out}",
            lambda w=w: h @ w.T,
            lambda tw=tw: th @ tw.T,
        )
    w = mx.random.normal((4 * D, D)).astype(mx.float16)
    tw = torch.randn(4 * D, D, device=dev, dtype=DT)
    ours(
        f"matmul {B * (T + 1)}x{4 * D} @ {4 * D}x{D}",
        lambda: (h @ w.T) @ w,
        lambda: (th @ tw.T) @ tw,
    )
    ours("layer_norm", lambda: block.norm1(h), lambda: f.layer_norm(th, (D,)))

    print(
        f"Stable Audio 1.0 DiT, B={B}, T={T}+1, fp16, median of {args.runs}; {mx.default_device()}"
    )
    print(f"  {'part':36s} {'ours ms':>9s} {'torch ms':>9s}")
    for name, mine, theirs in rows:
        other = f"{theirs * 1e3:9.3f}" if theirs is not None else f"{'':>9s}"
        print(f"  {name:36s} {mine * 1e3:9.3f} {other}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
