"""Style conditioner (after MERT) timing: ours (MLX) vs audiocraft's modules (torch), full-size
musicgen-style shapes with random weights, one 3 s excerpt (224 MERT frames), eval_q 3.

    uv run python tools/bench/style.py [--runs 5]    (needs torch and audiocraft --no-deps)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path
from typing import Any

import audiogen_core  # noqa: F401  - OpenBLAS before mlx

import mlx.core as mx

from audiogen_musicgen.style import StyleConfig, load_style

SHAPE: dict[str, Any] = {"dim": 512, "num_heads": 8, "num_layers": 8, "ffn_dim": 2048, "output_dim": 1536,
         "n_q": 6, "bins": 1024, "ds_factor": 15}  # fmt: skip


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    path = Path(__file__).resolve().parents[1] / "fixtures" / "style.py"
    spec = importlib.util.spec_from_file_location("style_builder", path)
    assert spec and spec.loader
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    ac = builder.import_audiocraft(torch, conditioners=False)
    blocks = builder.make_blocks(torch, ac, SHAPE, seed=0)
    state = {builder.PREFIX + k: v.numpy() for k, v in blocks.state_dict().items()}
    model = load_style(StyleConfig(**SHAPE), state, source="bench")
    feats = torch.randn(1, 224, 768)
    feats_mx = mx.array(feats.numpy())
    lengths = torch.tensor([15.0])

    def ours() -> None:
        mx.eval(model(feats_mx, eval_q=3).tokens)

    def ref() -> None:
        builder.reference_tokens(torch, blocks, feats, eval_q=3, ds_factor=15, lengths=lengths)

    times: dict[str, list[float]] = {"ours": [], "audiocraft": []}
    for fn in (ours, ref):
        fn()  # warm-up
    for _ in range(args.runs):  # interleaved
        for name, fn in (("ours", ours), ("audiocraft", ref)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"style conditioner, 1 x 224 frames, device {mx.default_device()}, load {os.getloadavg()}"
    )
    for k, v in med.items():
        print(f"  {k:11s} {v * 1000:8.1f} ms (median of {args.runs})")
    print(f"  ratio ours/audiocraft {med['ours'] / med['audiocraft']:.2f}")


if __name__ == "__main__":
    main()
