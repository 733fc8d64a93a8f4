"""T5-base encoder: ours (MLX) vs transformers ``T5EncoderModel`` (torch CPU fp32, 2 threads).

Full t5-base shapes with random weights, a 20-word prompt, batch 1 and batch 2 (CFG-like: prompt +
empty prompt, padded). Run:  uv run python tools/bench/t5.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import audiogen_core  # noqa: F401  - OpenBLAS before mlx
from audiogen_core.backend import active_blas
from audiogen_core.t5 import T5Encoder

import mlx.core as mx
import numpy as np
import torch
from transformers import T5Config, T5EncoderModel

T5_BASE: dict[str, Any] = dict(
    vocab_size=32128,
    d_model=768,
    d_kv=64,
    d_ff=3072,
    num_layers=12,
    num_heads=12,
    feed_forward_proj="relu",
)
PROMPT = (
    "a lofi hip hop beat with warm rhodes piano, dusty drums, vinyl crackle "
    "and soft rain for late night study"
)


def median_times(fns: list[Callable[[], object]], runs: int, warmup: int = 3) -> list[float]:
    """Median seconds of each function, timed alternately so that load from other processes
    on a shared machine hits both sides alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    words = len(PROMPT.split())
    # t5-base's SentencePiece gives ~1.3 tokens a word: ~20 words + </s> ≈ 28 tokens. Random
    # ids of that length (the real vocabulary is not available offline).
    length = 28
    rng = np.random.default_rng(0)
    ids = rng.integers(3, T5_BASE["vocab_size"], size=(2, length)).astype(np.int32)
    ids[:, -1] = 1
    mask = np.ones_like(ids)
    ids[1, 1:], mask[1, 1:] = 0, 0  # the unconditional (empty) prompt: "</s>" then padding
    ids[1, 0] = 1

    ref = T5EncoderModel(T5Config(**T5_BASE)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ref.save_pretrained(tmp)
        ours = T5Encoder.from_pretrained(tmp)

    print(f"T5-base encoder, {words}-word prompt -> {length} tokens, fp32, median of {args.runs}")
    print(f"  ours: MLX {mx.default_device()}, {active_blas()}")
    print(f"  reference: transformers T5EncoderModel, torch {torch.__version__} CPU, 2 threads")
    for batch in (1, 2):
        b_ids, b_mask = ids[:batch], mask[:batch]
        t_ids, t_mask = torch.from_numpy(b_ids.astype(np.int64)), torch.from_numpy(b_mask)
        with torch.no_grad():
            expected = ref(input_ids=t_ids, attention_mask=t_mask).last_hidden_state.numpy()
        got = np.array(ours(b_ids, b_mask))
        err = float(np.abs(got - expected).max())

        def run_ours(b_ids: np.ndarray = b_ids, b_mask: np.ndarray = b_mask) -> None:
            mx.eval(ours(b_ids, b_mask))

        def run_ref(t_ids: torch.Tensor = t_ids, t_mask: torch.Tensor = t_mask) -> None:
            with torch.no_grad():
                ref(input_ids=t_ids, attention_mask=t_mask)

        t_ours, t_ref = median_times([run_ours, run_ref], args.runs)
        print(
            f"batch {batch}: ours {t_ours * 1e3:7.2f} ms  transformers {t_ref * 1e3:7.2f} ms  "
            f"speed-up {t_ref / t_ours:4.2f}x  (max abs diff {err:.1e})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
