"""EnCodec-32k (MusicGen's codec) speed: ours (MLX) vs transformers (torch CPU fp32) in one run.

Real facebook/encodec_32khz shapes with random weights: decode 500 frames × 4 codebooks (10 s) and
encode 10 s of audio. Warm-up, then the median of several runs; prints seconds and the ratio
(> 1 means ours is faster), alternating ours and transformers run by run.

On the CPU ours runs numpy's bundled OpenBLAS (the float32 CPU path of ``audiogen_core.encodec``);
the system OpenBLAS MLX uses (and the kernel family ``audiogen_core.backend`` picked for it) is
printed too. The load average is printed before and after: the machine may be shared, and
multithreaded BLAS calls (ours and torch's) slow down sharply when cores are oversubscribed.

    uv run python tools/bench/encodec.py [--runs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import audiogen_core  # noqa: F401  - OpenBLAS preload before mlx
from audiogen_core import backend
from audiogen_core.encodec import EncodecModel

import mlx.core as mx
import numpy as np

# facebook/encodec_32khz as shipped in the facebook/musicgen-* configs ("audio_encoder").
ENCODEC_32K: dict[str, Any] = {
    "model_type": "encodec",
    "audio_channels": 1,
    "sampling_rate": 32000,
    "num_filters": 64,
    "upsampling_ratios": [8, 5, 4, 4],
    "codebook_size": 2048,
    "hidden_size": 128,
    "num_lstm_layers": 2,
    "norm_type": "weight_norm",
    "use_causal_conv": False,
    "pad_mode": "reflect",
    "target_bandwidths": [2.2],
    "normalize": False,
    "compress": 2,
    "residual_kernel_size": 3,
    "num_residual_layers": 1,
    "trim_right_ratio": 1.0,
    "use_conv_shortcut": False,
    "kernel_size": 7,
    "last_kernel_size": 7,
    "dilation_growth_rate": 2,
    "chunk_length_s": None,
    "overlap": None,
}


def interleaved_runs(
    fn_ours: Callable[[], object], fn_ref: Callable[[], object], runs: int
) -> dict[str, list[float]]:
    """Alternate the two so background load on a shared machine hits both alike. Returns per-run
    wall seconds (``ours``, ``ref``) and process CPU seconds (``ours_cpu``, ``ref_cpu``): CPU
    time is steadier under load, though it also counts threads spinning while they wait."""
    fn_ours()
    fn_ref()
    acc: dict[str, list[float]] = {"ours": [], "ref": [], "ours_cpu": [], "ref_cpu": []}
    for _ in range(runs):
        for fn, key in ((fn_ref, "ref"), (fn_ours, "ours")):
            t, c = time.perf_counter(), time.process_time()
            fn()
            acc[key].append(time.perf_counter() - t)
            acc[key + "_cpu"].append(time.process_time() - c)
    return acc


def blas_core() -> str:
    path = backend._loaded_blas_from_maps()
    if not path:
        return "none"
    lib = ctypes.CDLL(path)
    try:
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return f"{path} ({lib.openblas_get_corename().decode()})"
    except AttributeError:
        return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--frames", type=int, default=500)
    args = ap.parse_args()

    import torch
    from transformers import EncodecConfig as TorchConfig
    from transformers import EncodecModel as TorchModel

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = {k: v for k, v in ENCODEC_32K.items() if k != "model_type"}
    ref = TorchModel(TorchConfig(**cfg)).eval()
    with torch.no_grad():
        for layer in ref.quantizer.layers:
            layer.codebook.embed.normal_()
    with tempfile.TemporaryDirectory() as d:
        ref.save_pretrained(d)
        ours = EncodecModel.from_pretrained(d)

    k, frames = ours.num_codebooks, args.frames
    samples = frames * ours.config.hop_length
    print(f"OpenBLAS: {blas_core()}; torch threads {torch.get_num_threads()}")
    print(f"EnCodec-32k: {k} codebooks, {frames} frames = {samples / ours.sample_rate:.1f} s")

    rng = np.random.default_rng(0)
    codes = rng.integers(0, ours.config.codebook_size, (1, k, frames)).astype(np.int32)
    audio = (0.1 * rng.standard_normal((1, 1, samples))).astype(np.float32)
    codes_t = torch.from_numpy(codes.astype(np.int64))[None]
    audio_t = torch.from_numpy(audio)

    def ref_decode() -> object:
        with torch.no_grad():
            return ref.decode(codes_t, [None])[0]

    def ref_encode() -> object:
        with torch.no_grad():
            return ref.encode(audio_t)[0]

    codes_mx = mx.array(codes)
    audio_mx = mx.array(audio)
    rows = [
        ("decode", lambda: ours.decode(codes_mx), ref_decode),
        ("encode", lambda: ours.encode(audio_mx), ref_encode),
    ]
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(
        f"{'':8} {'ours s':>9} {'torch s':>9} {'ratio':>7}   {'ours cpu':>9} {'torch cpu':>9}"
        "   ratio range (per run pair)"
    )
    for name, fn_ours, fn_ref in rows:
        acc = interleaved_runs(fn_ours, fn_ref, args.runs)
        med = {k: statistics.median(v) for k, v in acc.items()}
        ratios = [r / o for o, r in zip(acc["ours"], acc["ref"], strict=True)]
        print(
            f"{name:8} {med['ours']:9.3f} {med['ref']:9.3f} {med['ref'] / med['ours']:6.2f}x"
            f"   {med['ours_cpu']:9.3f} {med['ref_cpu']:9.3f}"
            f"   {min(ratios):.2f}-{max(ratios):.2f}x (median {statistics.median(ratios):.2f}x);"
            f" ours {min(acc['ours']):.3f}-{max(acc['ours']):.3f} s,"
            f" torch {min(acc['ref']):.3f}-{max(acc['ref']):.3f} s"
        )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
