"""MERT-v1-95M speed: ours (MLX) vs transformers' ``HubertModel`` (torch CPU fp32) in one run.

MERT-v1-95M's exact config with random weights (MERT is HubertModel with its CQT/DeepNorm flags
off), on what MusicGen-style feeds it: a 3 s excerpt at 24 kHz → (1, 224, 768). Warm-up, then the
median of several runs, alternating ours and torch run by run; prints seconds, the ratio (> 1
means ours is faster), the max abs difference of the outputs and the load average before and
after (the machine may be shared: multithreaded BLAS slows down sharply when oversubscribed).
``--gelu-erf`` times ours with MLX's own ``nn.gelu`` (scalar erf on the CPU) for comparison.

    uv run python tools/bench/mert.py [--runs 5] [--seconds 3] [--threads 2]
    python3 tools/bench/mert.py --device gpu     # MLX CUDA vs torch CUDA (fp32 both)

Without ``audiogen_*`` installed, the packages are imported from ``packages/*/src``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import _bootstrap

_bootstrap.bootstrap(stub_audio_io=False)
torch = importlib.import_module("torch")

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402

from audiogen_musicgen import mert  # noqa: E402
from audiogen_musicgen.mert import MertConfig, MertModel, sanitize  # noqa: E402


def _builder():
    path = Path(__file__).resolve().parents[1] / "fixtures" / "mert.py"
    spec = importlib.util.spec_from_file_location("mert_fixture_builder", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _time(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--gelu-erf", action="store_true", help="also time ours with nn.gelu")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    cuda = args.device == "gpu"
    mx.set_default_device(mx.gpu if cuda else mx.cpu)
    print(f"load average before: {os.getloadavg()}")
    b = _builder()
    config = b.mert_config()
    ref = b.hubert_model(config, seed=0)
    ours = MertModel(MertConfig.from_dict(config))
    weights = {k: mx.array(v.numpy()) for k, v in b.mert_state_dict(ref).items()}
    ours.load_weights(list(sanitize(weights).items()), strict=True)
    mx.eval(ours.parameters())

    samples = round(args.seconds * 24_000)
    audio = (0.3 * np.random.default_rng(0).standard_normal((1, samples))).astype(np.float32)
    xt, xm = torch.from_numpy(audio), mx.array(audio)
    if cuda:
        ref, xt = ref.cuda(), xt.cuda()

    def run_torch() -> np.ndarray:
        with torch.no_grad():
            return ref(xt).last_hidden_state.cpu().numpy()  # .cpu() syncs

    def run_ours() -> np.ndarray:
        return np.array(ours(xm))

    fast_gelu = mert._gelu

    def run_ours_erf() -> np.ndarray:
        mert._gelu = nn.gelu
        try:
            return run_ours()
        finally:
            mert._gelu = fast_gelu

    cases = {"ours (MLX)": run_ours, "HubertModel (torch)": run_torch}
    if args.gelu_erf:
        cases["ours, nn.gelu"] = run_ours_erf
    outs = {name: fn() for name, fn in cases.items()}  # warm-up (and MLX kernel compile)
    ref_out = outs["HubertModel (torch)"]
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, fn in cases.items():
            times[name].append(_time(fn))

    print(
        f"MERT-v1-95M, {args.seconds:g} s at 24 kHz → {ref_out.shape}, "
        f"{'GPU ' + torch.cuda.get_device_name() if cuda else f'CPU, torch threads {args.threads}'}"
        f", median of {args.runs}"
    )
    base = statistics.median(times["HubertModel (torch)"])
    for name, ts in times.items():
        med = statistics.median(ts)
        err = float(np.abs(outs[name] - ref_out).max())
        print(
            f"  {name:22s} {med:7.3f} s   ratio {base / med:5.2f}   max|Δ| vs torch {err:.2e}"
            f"   runs {[round(t, 3) for t in ts]}"
        )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
