"""MusicGen load time: ours ``MusicGen.from_pretrained`` vs transformers'
``MusicgenForConditionalGeneration.from_pretrained``, from one local upstream-format directory.

The directory is what the hub repo holds: ``config.json`` + ``model.safetensors`` (full-size
random weights, saved by transformers' ``save_pretrained``) + tokenizer files (the small test
tokenizer: the vocabulary does not change the load). Each load runs in a fresh process, so
nothing is reused in memory; imports are timed apart from the load. The files are read once
before timing, so every load reads them from the page cache.

- ``transformers``: ``from_pretrained`` (fp32, eval mode) — weights only, no tokenizer;
- ``ours cold``: the first ``from_pretrained`` of the directory, which converts the upstream
  safetensors into a fresh audiogen cache (fp32 on the CPU) and loads the converted copy;
- ``ours warm``: a later ``from_pretrained``, which loads the converted copy (and the tokenizer).

Ours counts until every parameter is materialised (``mx.eval``). transformers maps the
safetensors file and may read a page only when the first forward touches it, so each side also
times its first generation after the load (10 frames, CFG 3.0, greedy for transformers), and
``ready`` = import + load + first generation is what a user waits for before the first audio.

    uv run python tools/bench/load.py [--variant small] [--runs 3]
"""

from __future__ import annotations

import _bootstrap

_bootstrap.bootstrap()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "tests" / "fixtures" / "musicgen_pipeline" / "mono"
FIRST_FRAMES = 10  # the first generation after the load: 0.2 s of audio

TORCH_LOAD = """
import json, sys, time
t = time.perf_counter()
import torch
from transformers import MusicgenForConditionalGeneration
i = time.perf_counter() - t
torch.set_num_threads({threads})
t = time.perf_counter()
model = MusicgenForConditionalGeneration.from_pretrained(sys.argv[1]).eval()
load = time.perf_counter() - t
t = time.perf_counter()
with torch.no_grad():
    ids = torch.arange(10, 30)[None]
    model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                   guidance_scale=3.0, max_new_tokens={frames} + 3)
print(json.dumps({{"import_s": i, "load_s": load, "first_s": time.perf_counter() - t}}))
"""

OURS_LOAD = """
import json, sys, time
t = time.perf_counter()
import audiogen_core
import mlx.core as mx
from audiogen_musicgen import MusicGen
i = time.perf_counter() - t
t = time.perf_counter()
model = MusicGen.from_pretrained(sys.argv[1], cache_dir=sys.argv[2])
mx.eval(model.decoder.parameters(), model.text_encoder.parameters(),
        model.audio_encoder.parameters())
load = time.perf_counter() - t
t = time.perf_counter()
model.generate("an upbeat lofi track", {frames} / 50, guidance_scale=3.0, seed=0)
print(json.dumps({"import_s": i, "load_s": load, "first_s": time.perf_counter() - t}))
"""


def _child(code: str, *args: str) -> dict[str, float]:
    # This interpreter on fixed code, with paths made here.
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def save_upstream(variant: str, directory: Path) -> int:
    """Write a full-size random ``variant`` as the hub repo lays it out; returns its bytes."""
    import torch
    from musicgen import build_torch

    model = build_torch(torch, variant, seed=0)
    model.save_pretrained(directory)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(TOKENIZER / name, directory / name)
    del model
    return sum(p.stat().st_size for p in directory.iterdir())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="small")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "upstream"
        src.mkdir()
        size = save_upstream(args.variant, src)
        for p in src.iterdir():  # into the page cache, for every load alike
            p.read_bytes()
        print(f"{args.variant}: upstream directory {size / 1e9:.2f} GB", flush=True)
        runs: dict[str, list[dict[str, float]]] = {"transformers": [], "cold": [], "warm": []}
        for r in range(args.runs):
            runs["transformers"].append(
                _child(TORCH_LOAD.format(threads=args.threads, frames=FIRST_FRAMES), str(src))
            )
            cache = Path(tmp) / f"cache{r}"
            ours = OURS_LOAD.replace("{frames}", str(FIRST_FRAMES))
            runs["cold"].append(_child(ours, str(src), str(cache)))
            runs["warm"].append(_child(ours, str(src), str(cache)))
            shutil.rmtree(cache)
            print(
                "  run " + ", ".join(f"{k} {v[-1]['load_s']:.2f} s" for k, v in runs.items()),
                flush=True,
            )
    metrics = ("import_s", "load_s", "first_s", "ready_s")
    for v in runs.values():
        for x in v:
            x["ready_s"] = x["import_s"] + x["load_s"] + x["first_s"]
    med = {k: {m: statistics.median(x[m] for x in v) for m in metrics} for k, v in runs.items()}
    ref = med["transformers"]
    print(f"median of {args.runs}, load avg {os.getloadavg()[0]:.2f} (transformers / ours):")
    for k, v in med.items():
        print(
            f"  {k:<13}"
            + "  ".join(f"{m[:-2]} {v[m]:6.2f} s ({ref[m] / v[m]:.2f}x)" for m in metrics)
        )
    if args.json:
        args.json.write_text(json.dumps({"variant": args.variant, "runs": runs, "median": med}))


if __name__ == "__main__":
    main()
