"""MusicGen-melody chroma extraction speed: ours (numpy) vs transformers in one run.

30 s of stereo 44.1 kHz audio (a chord progression plus noise) -> one-hot chroma (235, 12):
resample to 32 kHz, mix to mono, 16384-point STFT every 4096 samples, chroma bank, argmax.
Reference: transformers' ``MusicgenMelodyFeatureExtractor`` (torch CPU, torchaudio's pure-Python
resample and Spectrogram; see SPEC §5 for installing torchaudio). Warm-up, then the median of
``--runs`` runs, alternating the two; prints seconds, the ratio (> 1 means ours is faster) and the
load average before and after (the machine may be shared). Also checks the outputs are identical.

    uv run python tools/bench/chroma.py [--runs 5] [--threads 2] [--seconds 30] [--rate 44100]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import audiogen_core  # noqa: F401  - OpenBLAS preload before mlx

import numpy as np

from audiogen_musicgen import chroma


def interleaved_medians(
    fn_ours: Callable[[], object], fn_ref: Callable[[], object], runs: int
) -> tuple[float, float]:
    fn_ours()
    fn_ref()
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    for _ in range(runs):
        for fn, key in ((fn_ref, "ref"), (fn_ours, "ours")):
            t = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t)
    return statistics.median(times["ours"]), statistics.median(times["ref"])


def melody(seconds: float, rate: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    roots = rng.integers(0, 12, size=int(seconds) + 1)[(t * 1.0).astype(int)]
    left = sum(np.sin(2 * np.pi * 261.63 * 2 ** ((roots + s) / 12) * t) for s in (0, 4, 7))
    right = np.roll(left, rate // 3) + 0.05 * rng.standard_normal(t.shape)
    return (0.2 * np.stack([left, right])).astype(np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rate", type=int, default=44100)
    args = ap.parse_args()

    import torch
    from transformers import MusicgenMelodyFeatureExtractor
    from transformers.utils import logging

    torch.set_num_threads(args.threads)
    logging.set_verbosity_error()
    fe = MusicgenMelodyFeatureExtractor()
    audio = melody(args.seconds, args.rate)
    tensor = torch.from_numpy(audio)[None]  # (1, channels, samples): one stereo melody

    def ours() -> np.ndarray:
        return chroma.chroma_features(audio, args.rate)

    def ref() -> np.ndarray:
        out = fe(tensor, sampling_rate=args.rate, return_tensors="np")  # type: ignore[arg-type]
        result: np.ndarray = out["input_features"][0]
        return result

    a, b = ours(), ref()
    same = np.array_equal(a, b)
    print(f"load before: {os.getloadavg()}")
    print(
        f"chroma of {args.seconds:g} s stereo {args.rate} Hz -> {a.shape}; "
        f"identical to transformers: {same}"
    )
    t_ours, t_ref = interleaved_medians(ours, ref, args.runs)
    print(f"ours (numpy)            {t_ours:.3f} s")
    print(f"transformers (torch)    {t_ref:.3f} s")
    print(f"ratio ref/ours          {t_ref / t_ours:.2f}x")
    print(f"load after: {os.getloadavg()}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
