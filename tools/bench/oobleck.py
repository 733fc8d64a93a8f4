"""Oobleck VAE (Stable Audio Open) decode speed: ours (MLX) vs diffusers ``AutoencoderOobleck``
(torch CPU fp32) in one run.

The real 1.0 / small VAE shape with random weights; decodes 256 latent frames (= 524,288 samples,
11.9 s at 44.1 kHz: small's whole output) by default. Warm-up, then the median of several runs,
alternating diffusers and ours run by run; prints seconds, the ratio (> 1 means ours is faster)
and the load average (the CPU is shared). ``--chunk N`` adds our chunked decode.

    uv run python tools/bench/oobleck.py [--latents 256] [--runs 3] [--threads 2] [--chunk 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import audiogen_core  # noqa: F401  - OpenBLAS preload before mlx
from audiogen_core.oobleck import OobleckConfig, OobleckVAE, sanitize
from audiogen_core.weights import load_into

import mlx.core as mx
import numpy as np


def interleaved_medians(
    fns: list[Callable[[], object]], runs: int
) -> tuple[list[float], list[list[float]]]:
    """Alternate the callables so background load on a shared machine hits all alike."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, acc in zip(fns, times, strict=True):
            t = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t)
    return [statistics.median(t) for t in times], times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--latents", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=0, help="also time chunked decode (frames)")
    args = ap.parse_args()

    import torch
    from diffusers import AutoencoderOobleck

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ref: Any = AutoencoderOobleck()
    ref.eval()
    with torch.no_grad():
        for name, p in ref.named_parameters():
            if name.endswith(("alpha", "beta")):
                p.normal_(0.0, 0.3)
    ours = OobleckVAE(OobleckConfig())
    state = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
    load_into(ours, sanitize(state))

    rng = np.random.default_rng(0)
    z = rng.standard_normal((1, 64, args.latents)).astype(np.float32)
    z_t, z_mx = torch.from_numpy(z), mx.array(z)
    seconds = args.latents * ours.hop_length / ours.sample_rate

    def ref_decode() -> object:
        with torch.no_grad():
            return ref.decode(z_t).sample

    fns: list[Callable[[], object]] = [ref_decode, lambda: ours.decode(z_mx)]
    names = ["diffusers", "ours"]
    if args.chunk:
        fns.append(lambda: ours.decode(z_mx, chunk_size=args.chunk))
        names.append(f"ours chunk {args.chunk}")
    err = float(np.abs(np.array(ours.decode(z_mx)) - ref_decode().numpy()).max())  # type: ignore[attr-defined]
    print(
        f"Oobleck 1.0 shape: decode {args.latents} latents = {seconds:.1f} s of 44.1 kHz stereo; "
        f"torch threads {torch.get_num_threads()}; max |ours − diffusers| = {err:.2e}"
    )
    load0 = os.getloadavg()[0]
    medians, times = interleaved_medians(fns, args.runs)
    load1 = os.getloadavg()[0]
    for name, med, ts in zip(names, medians, times, strict=True):
        runs = " ".join(f"{t:.2f}" for t in ts)
        print(f"{name:16} median {med:7.2f} s  (runs {runs})  {medians[0] / med:5.2f}x diffusers")
    print(f"load average (1 min) before {load0:.2f}, after {load1:.2f}")


if __name__ == "__main__":
    main()
