"""Where a batch-2 MusicGen decode step's time goes on an MLX GPU, and what the matvec form of the
step's linears (``audiogen_musicgen.decoder.project``) buys.

1. Per-op cost in a chain of dependent ops: an elementwise add, LayerNorm, the single-query
   SDPA over 750 cached keys, and a pair of decoder-shaped linears ``D -> F -> D`` as
   ``x @ W.T`` (cuBLASLt for a 2-row block) and as batched matvecs ``W @ x_b`` (MLX's gemv).
   ``issue`` is the host time to build the chain and hand it to the device (``mx.async_eval``),
   ``total`` adds the wait: when the two are close the chain is bound by the host.
2. The decoder loop (random full-size weights, fp16, CFG batch 2, a 20-token prompt, top-k 250):
   steps/s from two generation lengths (so the one-time fold and first step cancel), for the
   eager step with the matvec form off / on and (``--fused``) the compiled fused step of
   ``cuda_step``; and the host issue time of 200 bare eager steps against their total.
3. The primitives in one step (``mx.export_to_dot``), per kind.

    python3 tools/bench/decode_step.py [--models small,medium,large] [--dtype float16]
"""

from __future__ import annotations

import _bootstrap

STUBBED = _bootstrap.bootstrap()

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import mlx.core as mx  # noqa: E402

from audiogen_musicgen import sampling  # noqa: E402
from audiogen_musicgen.config import DecoderConfig  # noqa: E402
from audiogen_musicgen.decoder import MusicGenDecoder  # noqa: E402
from audiogen_musicgen.sampling import generate_codes  # noqa: E402

MODELS = {"small": (24, 1024), "medium": (48, 1536), "large": (48, 2048)}


def _median_time(fn, reps: int) -> float:  # type: ignore[no-untyped-def]
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def chain_cost(op, x: mx.array, n: int = 64, reps: int = 7) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(issue, total) seconds per op of ``n`` dependent applications of ``op``."""
    issue: list[float] = []

    def run() -> None:
        t = time.perf_counter()
        y = x
        for _ in range(n):
            y = op(y)
        mx.async_eval(y)
        issue.append(time.perf_counter() - t)
        mx.eval(y)

    total = _median_time(run, reps)
    return statistics.median(issue[1:]) / n, total / n


def micro(dt: mx.Dtype) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    x = mx.random.normal((2, 1, 1024)).astype(dt)
    q = mx.random.normal((2, 16, 1, 64)).astype(dt)
    cache = mx.random.normal((2, 16, 1500, 64)).astype(dt)
    k, v = cache[:, :, :750], cache[:, :, :750]
    w = mx.ones((1024,), dt)
    mx.eval(x, q, cache)
    cases = {
        "add": (lambda y: y + 1, x),
        "layer_norm": (lambda y: mx.fast.layer_norm(y, w, None, 1e-5), x),
        "sdpa 1 query x 750 keys": (
            lambda y: mx.fast.scaled_dot_product_attention(y, k, v, scale=0.125),
            q,
        ),
    }
    for name, (op, arg) in cases.items():
        issue, total = chain_cost(op, arg)
        rows.append({"op": name, "issue_us": issue * 1e6, "total_us": total * 1e6})
    for d, f in ((1024, 4096), (1536, 6144), (2048, 8192)):
        w1 = (mx.random.normal((f, d)) * 0.02).astype(dt)
        w2 = (mx.random.normal((d, f)) * 0.02).astype(dt)
        xd = mx.random.normal((2, 1, d)).astype(dt)
        mx.eval(w1, w2, xd)

        def cublas(y: mx.array, w1: mx.array = w1, w2: mx.array = w2) -> mx.array:
            return (y @ w1.T) @ w2.T

        def gemv(y: mx.array, w1: mx.array = w1, w2: mx.array = w2) -> mx.array:
            b, _, kk = y.shape
            h = w1 @ y.reshape(b, kk, 1)
            return (w2 @ h).reshape(b, 1, -1)

        err = mx.max(mx.abs(cublas(xd) - gemv(xd))).item()
        for name, op in (("x @ W.T", cublas), ("W @ x_b", gemv)):
            issue, total = chain_cost(op, xd, n=32)
            nbytes = 2 * d * f * (2 if dt != mx.float32 else 4)
            rows.append(
                {
                    "op": f"{name} {d}->{f}->{d} (per linear)",
                    "issue_us": issue / 2 * 1e6,
                    "total_us": total / 2 * 1e6,
                    "GB/s": nbytes / total / 1e9,
                    "max_diff_vs_cublas": err,
                }
            )
    return rows


def build(name: str, dt: mx.Dtype) -> MusicGenDecoder:
    layers, d = MODELS[name]
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
    return dec


def loop(
    dec: MusicGenDecoder, dt: mx.Dtype, matvec: bool, static: bool | None, lag: int = 0
) -> float:
    """steps/s; ``lag`` > 0: with an ``on_step`` callback trailing by that many steps."""
    d = dec.config.hidden_size
    states = (mx.random.normal((1, 20, d)) * 0.5).astype(dt)
    mask = mx.ones((1, 20), mx.int32)
    mx.eval(states)
    dec.matvec = matvec

    def gen(frames: int) -> float:
        t = time.perf_counter()
        sampling.PROGRESS_LAG = sampling.GPU_SYNC_EVERY = max(lag, 1)
        on_step = (lambda done, total: None) if lag else None
        codes = generate_codes(
            dec, states, mask, frames, top_k=250, key=1, static=static, on_step=on_step
        )
        mx.eval(codes)
        return time.perf_counter() - t

    gen(20)
    short = statistics.median(gen(50) for _ in range(2))
    long = statistics.median(gen(350) for _ in range(2))
    return 300 / (long - short)


def issue_vs_total(dec: MusicGenDecoder, dt: mx.Dtype, matvec: bool) -> tuple[float, float]:
    d = dec.config.hidden_size
    dec.matvec = matvec
    states = mx.concatenate([mx.random.normal((1, 20, d)).astype(dt)] * 2)
    cache = dec.make_cache(states, mx.ones((2, 20), mx.int32), 520)
    ids = mx.zeros((2, 4, 1), mx.int32)
    for _ in range(300):  # attention over ~300-500 keys, as mid-generation
        mx.eval(dec.step(ids, cache))
    t = time.perf_counter()
    outs = []
    for _ in range(200):
        outs.append(dec.step(ids, cache))
        mx.async_eval(outs[-1])
    issue = time.perf_counter() - t
    mx.eval(outs)
    return issue / 200, (time.perf_counter() - t) / 200


def fused_issue_vs_total(dec: MusicGenDecoder, dt: mx.Dtype) -> tuple[float, float]:
    """Host time to issue one compiled fused step (decoder + CFG + top-k sampling, as
    ``generate_codes`` runs it) and its total time, per step over 200 queued steps."""
    d = dec.config.hidden_size
    states = mx.concatenate([mx.random.normal((1, 20, d)).astype(dt)] * 2)
    cache = dec.make_cache(states, mx.ones((2, 20), mx.int32), 520)
    keys = mx.random.split(mx.random.key(0), 520)

    def step(tokens: mx.array, offset: mx.array, key: mx.array) -> mx.array:
        ids = mx.concatenate([tokens, tokens])
        logits = dec.fused_step(ids, offset, cache.kv, cache.cross_kv, cache.cross_mask)
        logits = logits.reshape(2, 4, -1)
        guided = logits[1:] + 3.0 * (logits[:1] - logits[1:])
        return sampling.sample_next(guided, key, top_k=250)[..., None]

    compiled = mx.compile(step)
    offsets = [mx.array([t], mx.int32) for t in range(520)]
    tokens = mx.zeros((1, 4, 1), mx.int32)
    mx.eval(cache.kv, offsets, keys)
    for t in range(300):  # attention over ~300-500 keys, as mid-generation
        tokens = compiled(tokens, offsets[t], keys[t])
        mx.async_eval(tokens)
    mx.eval(tokens)
    t0 = time.perf_counter()
    outs = []
    for t in range(300, 500):
        tokens = compiled(tokens, offsets[t], keys[t])
        outs.append(tokens)
        mx.async_eval(tokens)
    issue = time.perf_counter() - t0
    mx.eval(outs)
    return issue / 200, (time.perf_counter() - t0) / 200


def count_primitives(dec: MusicGenDecoder, dt: mx.Dtype, matvec: bool | None) -> dict[str, int]:
    """Primitives of one eager step (matvec False / True) or one fused step (None)."""
    d = dec.config.hidden_size
    dec.matvec = matvec
    states = mx.concatenate([mx.random.normal((1, 20, d)).astype(dt)] * 2)
    cache = dec.make_cache(states, mx.ones((2, 20), mx.int32), 16)
    ids = mx.zeros((2, 4, 1), mx.int32)
    mx.eval(dec.step(ids, cache))
    if matvec is None:
        offset = mx.array([1], mx.int32)
        mx.eval(cache.kv)
        logits = dec.fused_step(ids, offset, cache.kv, cache.cross_kv, cache.cross_mask)
    else:
        logits = dec.step(ids, cache)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "step.dot"
        mx.export_to_dot(str(path), logits)
        text = path.read_text()
    mx.eval(logits)
    kinds = collections.Counter(
        m.group(1) for m in re.finditer(r'label\s*=\s*"([A-Za-z]+)', text) if m.group(1)
    )
    return dict(kinds.most_common())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="small,medium,large")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--fused", action="store_true", help="also the fused CUDA step")
    ap.add_argument(
        "--lags",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[],
        help="only the fused step, with on_step progress syncing every `lag` steps (0: none)",
    )
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    dt = getattr(mx, args.dtype)
    out: dict[str, object] = {"device": str(mx.default_device()), "dtype": args.dtype}
    if not args.skip_micro:
        out["micro"] = rows = micro(dt)
        for r in rows:
            extra = f"  {r['GB/s']:.0f} GB/s" if "GB/s" in r else ""
            print(
                f"{r['op']:<40} issue {r['issue_us']:7.2f} us  total {r['total_us']:7.2f} us{extra}",
                flush=True,
            )
    models = {}
    for name in args.models.split(","):
        dec = build(name, dt)
        res: dict[str, object] = {}
        if args.lags:
            iss, tot = fused_issue_vs_total(dec, dt)
            res["fused step: issue_ms"] = iss * 1e3
            res["fused step: total_ms"] = tot * 1e3
            res["primitives fused"] = count_primitives(dec, dt, None)
        for lag in args.lags:
            res[f"steps/s fused, progress lag {lag}"] = loop(dec, dt, True, None, lag)
        for matvec in (False, True) if not args.lags else ():
            res[f"primitives matvec={matvec}"] = count_primitives(dec, dt, matvec)
            iss, tot = issue_vs_total(dec, dt, matvec)
            res[f"step matvec={matvec}: issue_ms"] = iss * 1e3
            res[f"step matvec={matvec}: total_ms"] = tot * 1e3
            res[f"steps/s eager matvec={matvec}"] = loop(dec, dt, matvec, False)
        if args.fused and not args.lags:
            res["primitives fused"] = count_primitives(dec, dt, None)
            res["steps/s fused"] = loop(dec, dt, True, None)
        models[name] = res
        for k, v in res.items():
            print(f"{name}: {k}: {v if isinstance(v, dict) else round(v, 3)}", flush=True)
        del dec
        mx.clear_cache()
    out["models"] = models
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
