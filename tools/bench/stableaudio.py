"""Stable Audio Open text-to-audio speed: ours (MLX) vs diffusers ``StableAudioPipeline`` (torch)
in one run, same machine.

Full-size random-weight models, built once with diffusers' classes (``StableAudioDiTModel``,
``StableAudioProjectionModel``, ``AutoencoderOobleck`` 1.0 shape, T5-base ``T5EncoderModel``) on
the meta device and filled directly (seeded; much faster than the classes' own init). OUR
``StableAudio`` gets the same tensors in memory, through the converter's sanitizers
(``sanitize_dit`` / ``sanitize_conditioners`` / ``oobleck.sanitize`` / ``t5.sanitize``).

Variants:

- ``small``: Stable Audio Open small's shapes expressed with diffusers' classes: DiT width 1024,
  depth 16, 8 heads of 128, cond tokens 768 projected to the width, T5-base (max length 64),
  256 latents (11.9 s), 8 steps, cfg 1 (no guidance pass: batch 1). diffusers has no q/k
  LayerNorm and no seconds_total-only conditioning, so BOTH sides run diffusers' plain DiT at
  these shapes (ours with ``qk_norm`` off) with diffusers' two seconds conditioners (global
  condition 2 × 768 instead of small's 768: one 1536→1024 instead of 768→1024 projection).
  diffusers samples with its only scheduler (``CosineDPMSolverMultistepScheduler``, DPM++ 2M SDE
  on the v objective); ours with small's ping-pong (rectified flow, the real model's sampler)
  and, as ``ours-2m``, with ``dpmpp-2m-sde`` like diffusers (the like-for-like sampler).
- ``1.0``: Stable Audio Open 1.0: width 1536, depth 24, 24 heads (12 K/V heads in
  cross-attention), T5-base (max length 128), 1024 latents (47.5 s), 100 steps, cfg 7 (batch 2);
  ours with ``dpmpp-2m-sde`` (what diffusers' scheduler is; ours' own 1.0 default is 3M SDE).

Each run is one end-to-end generation from a prompt to audio (``e2e``: tokenise, T5 +
conditioners, the sampler loop, the VAE decode), timed by light hooks:

- ``text``: from the call to the first DiT evaluation (T5, projections, noise);
- ``DiT evals/s``: DiT evaluations per second over the loop (one evaluation = one DiT forward at
  batch 2 with cfg, 1 without), from the first DiT call to the last step's result;
- ``VAE``: from the end of the loop to the returned audio (Oobleck decode of the whole window).

diffusers is timed with a forward pre-hook on its transformer and its per-step ``callback`` (with a
device sync on a GPU); ours with a wrapper around the DiT (the first call evaluates the
conditioning, so T5's lazy graph is not billed to the loop), ``generate``'s ``progress`` (which
evaluates every step) and a wrapper around the VAE's ``decode``.

Tokenisers: no T5 tokenizer files are available offline. diffusers gets the small SentencePiece
tokenizer of tests/fixtures/t5 (it pads every prompt to the max length anyway, so only the ids
differ); ours gets fixed ids of a realistic prompt length (28 tokens, as t5-base's tokenizer gives
the prompt), because ours pads to the longest prompt, as transformers' ``padding="longest"``,
where diffusers pads to ``model_max_length`` (64 here for small, 128 for 1.0): ours runs T5
and cross-attention over 28 + 2 seconds tokens, diffusers over 64 + 2 or 128 + 2.

A warm-up generation (``--warmup-steps`` steps, the full window) precedes ``--runs`` runs that
alternate diffusers and ours. ``speed-up`` is ours ÷ diffusers for DiT evals/s and diffusers ÷
ours for seconds: > 1 means ours is faster. torch runs with ``OMP_WAIT_POLICY=PASSIVE`` (set here
unless the environment sets it): on a shared CPU, spinning OpenMP threads lose their turn.

    uv run python tools/bench/stableaudio.py --variants small --runs 2
    uv run python tools/bench/stableaudio.py --variants 1.0 --latents 16 --steps 2 --runs 1
    python3 tools/bench/stableaudio.py --device gpu --variants small,1.0 --torch-dtype float16 \\
        --json sa.json

Without ``audiogen_*`` installed, the packages are imported from ``packages/*/src``. Needs numpy,
mlx (``mlx[cuda13]`` for ``--device gpu`` on Linux), torch, diffusers, transformers, torchsde
(diffusers' SDE scheduler). soundfile, soxr and pyloudnorm are replaced by stubs when missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _bootstrap

ROOT = Path(__file__).resolve().parents[2]
TOKENIZER = ROOT / "tests" / "fixtures" / "t5" / "tokenizer"


os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
STUBBED = _bootstrap.bootstrap()

import audiogen_core  # noqa: E402  - OpenBLAS preload before mlx
from audiogen_core import backend, oobleck, t5  # noqa: E402
from audiogen_core.oobleck import OobleckConfig, OobleckVAE  # noqa: E402
from audiogen_core.t5 import T5Config, T5Encoder  # noqa: E402
from audiogen_core.weights import cast_floats, load_into  # noqa: E402

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mlx.utils import tree_flatten  # noqa: E402

from audiogen_stableaudio import StableAudio  # noqa: E402
from audiogen_stableaudio import weights as sa_weights  # noqa: E402
from audiogen_stableaudio.conditioners import StableAudioConditioners  # noqa: E402
from audiogen_stableaudio.config import ConditioningConfig, DiTConfig  # noqa: E402
from audiogen_stableaudio.dit import StableAudioDiT  # noqa: E402

_bootstrap.unstub(STUBBED)

# name: DiT kwargs (diffusers StableAudioDiTModel), T5 max length, latents, steps, cfg, our sampler
VARIANTS: dict[str, dict[str, Any]] = {
    "small": {
        "dit": {
            "num_layers": 16,
            "attention_head_dim": 128,
            "num_attention_heads": 8,
            "num_key_value_attention_heads": 8,
            "cross_attention_dim": 1024,
        },
        "max_length": 64,
        "latents": 256,
        "steps": 8,
        "cfg": 1.0,
        # ours-qk: the real small layout (q/k LayerNorms, identity-initialised so the output is
        # the same network's): what stable-audio-open-small costs per step.
        "ours": [
            ("ours", "rf_denoiser", "pingpong"),
            ("ours-qk", "rf_denoiser", "pingpong"),
            ("ours-2m", "v", "dpmpp-2m-sde"),
        ],
    },
    "1.0": {
        "dit": {
            "num_layers": 24,
            "attention_head_dim": 64,
            "num_attention_heads": 24,
            "num_key_value_attention_heads": 12,
            "cross_attention_dim": 768,
        },
        "max_length": 128,
        "latents": 1024,
        "steps": 100,
        "cfg": 7.0,
        "ours": [("ours", "v", "dpmpp-2m-sde")],
    },
}
DIT_COMMON = {
    "in_channels": 64,
    "out_channels": 64,
    "time_proj_dim": 256,
    "global_states_input_dim": 1536,
    "cross_attention_input_dim": 768,
}
PROJECTION = {"text_encoder_dim": 768, "conditioning_dim": 768, "min_value": 0, "max_value": 512}
T5_BASE: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 768,
    "d_kv": 64,
    "d_ff": 3072,
    "num_layers": 12,
    "num_heads": 12,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "relu",
    "is_encoder_decoder": True,
}
SIGMA_MIN, SIGMA_MAX = 0.3, 500.0
PROMPT = (
    "an upbeat lofi hip hop track with warm rhodes piano, dusty drums, deep bass, vinyl crackle "
    "and soft falling rain"
)
PROMPT_TOKENS = 28  # t5-base's SentencePiece: ~1.3 tokens a word + </s>
SEED = 0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def fill_random(module: Any, seed: int) -> None:
    """Every parameter (and float buffer) drawn afresh: matrices N(0, 1/fan_in), norm gains 1,
    biases 0, Oobleck's snake α/β N(0, 0.3) (log-scale), Fourier features N(0, 1). Upstream
    zero-initialises some output projections, which would make parts of the networks no-ops."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        tensors = dict(module.named_parameters())
        tensors.update({k: b for k, b in module.named_buffers() if b.is_floating_point()})
        for name, p in tensors.items():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("alpha", "beta"):
                p.normal_(0.0, 0.3, generator=g)
            elif "time_proj" in name:
                p.normal_(0.0, 1.0, generator=g)
            elif leaf in ("weight_g", "original0"):
                p.fill_(1.0)  # weight norm: unit-norm rows of the direction below
            elif p.ndim >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5, generator=g)
            elif "norm" in name and leaf in ("weight", "gamma"):
                p.fill_(1.0)
            else:
                p.zero_()


def _meta_build(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """``cls(*args, **kwargs)`` without running its initialisers: built on the meta device, then
    given uninitialised CPU storage (filled by ``fill_random``)."""
    with torch.device("meta"):
        model = cls(*args, **kwargs)
    return model.to_empty(device="cpu").eval()


def build_torch(variant: str, latents: int, seed: int) -> Any:
    """A random-weight diffusers ``StableAudioPipeline`` in fp32 on CPU."""
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
    )
    from diffusers.pipelines.stable_audio import StableAudioProjectionModel
    from transformers import AutoTokenizer, T5EncoderModel
    from transformers import T5Config as HFT5Config

    spec = VARIANTS[variant]
    dit = _meta_build(StableAudioDiTModel, sample_size=latents, **DIT_COMMON, **spec["dit"])
    projection = _meta_build(StableAudioProjectionModel, **PROJECTION)
    text = _meta_build(T5EncoderModel, HFT5Config(**T5_BASE))
    vae = _meta_build(AutoencoderOobleck)
    for i, module in enumerate((dit, projection, text, vae)):
        fill_random(module, seed + i)
    vae.apply(_refresh_weight_norm)
    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER), model_max_length=spec["max_length"])
    scheduler = CosineDPMSolverMultistepScheduler(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX)
    pipe: Any = StableAudioPipeline(
        vae=vae,
        text_encoder=text,
        projection_model=projection,
        tokenizer=tokenizer,
        transformer=dit,
        scheduler=scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _refresh_weight_norm(module: Any) -> None:
    """Weight-normed convolutions (old-style hooks) recompute ``weight`` from g/v in a pre-forward
    hook; the meta-built module's cached ``weight`` attribute is garbage until then."""
    for hook in getattr(module, "_forward_pre_hooks", {}).values():
        if type(hook).__name__ == "WeightNorm":
            hook(module, None)


class FixedTokenizer:
    """Stands in for our ``T5Tokenizer``: the same fixed ids for every prompt (see the module
    docstring)."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids.astype(np.int32)

    def __call__(self, texts: list[str], max_length: int = 512) -> tuple[np.ndarray, np.ndarray]:
        ids = np.repeat(self.ids[None, :max_length], len(texts), axis=0)
        return ids, np.ones_like(ids)


def prompt_ids() -> np.ndarray:
    rng = np.random.default_rng(SEED)
    ids = rng.integers(3, T5_BASE["vocab_size"] - 100, size=PROMPT_TOKENS)
    ids[-1] = 1  # </s>
    return ids


def _mx_state(module: Any) -> dict[str, mx.array]:
    return {k: mx.array(v.detach().float().numpy()) for k, v in module.state_dict().items()}


def build_ours(pipe: Any, variant: str, dtype: mx.Dtype) -> dict[str, StableAudio]:
    """Our ``StableAudio`` (one per sampler setting of the variant, sharing the networks) from the
    diffusers pipeline's tensors, through the converter's sanitizers."""
    spec = VARIANTS[variant]
    source = "random weights (in memory)"
    dit_config = DiTConfig.from_diffusers(dict(pipe.transformer.config))
    cond_config = ConditioningConfig.from_diffusers(
        dict(pipe.projection_model.config), max_length=spec["max_length"]
    )
    dit = StableAudioDiT(dit_config)
    load_into(
        dit,
        cast_floats(sa_weights.sanitize_dit(_mx_state(pipe.transformer), "diffusers"), dtype),
        source=source,
    )
    conditioners = StableAudioConditioners(cond_config)
    state = sa_weights.sanitize_conditioners(
        _mx_state(pipe.projection_model), "diffusers", config=cond_config
    )
    load_into(conditioners, cast_floats(state, dtype), source=source)
    vae = OobleckVAE(OobleckConfig.from_dict(dict(pipe.vae.config)))
    load_into(vae, cast_floats(oobleck.sanitize(_mx_state(pipe.vae)), dtype), source=source)
    text = T5Encoder(T5Config.from_dict(pipe.text_encoder.config.to_dict()))
    t5_weights = cast_floats(t5.sanitize(_mx_state(pipe.text_encoder)), dtype)
    if dtype == mx.float16:
        # As T5Encoder.from_pretrained: transformers keeps ``wo`` in fp32 (FF outputs overflow).
        t5_weights = {
            k: v.astype(mx.float32) if ".DenseReluDense.wo." in k else v
            for k, v in t5_weights.items()
        }
    load_into(text, t5_weights, source=source)
    dits = {"": dit}
    if any(name.endswith("-qk") for name, _, _ in spec["ours"]):
        qk = StableAudioDiT(dataclasses.replace(dit_config, qk_norm="ln"))
        weights = dict(tree_flatten(dit.parameters()))
        for key, value in tree_flatten(qk.parameters()):
            if ".norm_q." in key or ".norm_k." in key:
                fill = 1.0 if key.endswith("weight") else 0.0
                weights[key] = mx.full(value.shape, fill, dtype=dtype)
        load_into(qk, weights, source=source)
        dits["-qk"] = qk
    for model in (*dits.values(), conditioners, vae, text):
        mx.eval(model.parameters())
    tokenizer = FixedTokenizer(prompt_ids())
    return {
        name: StableAudio(
            dits["-qk" if name.endswith("-qk") else ""],
            conditioners,
            text,
            tokenizer,  # type: ignore[arg-type]
            vae,
            objective=objective,
            sigma_min=SIGMA_MIN,
            sigma_max=SIGMA_MAX,
            source=source,
        )
        for name, objective, _ in spec["ours"]
    }


def check_same_weights(pipe: Any, model: StableAudio) -> dict[str, float]:
    """Max |ours - diffusers| of one DiT evaluation (16 frames, 7 condition tokens, batch 2) and
    of a VAE decode (8 latents), relative to the reference's max |output|: shows both sides hold
    the same networks. The diffusers side runs on CPU in fp32 here."""
    from diffusers.models.embeddings import get_1d_rotary_pos_embed

    g = torch.Generator().manual_seed(1)
    cfg = pipe.transformer.config
    x = torch.randn(2, cfg.in_channels, 16, generator=g)
    t = torch.rand(2, generator=g)
    cross = torch.randn(2, 7, cfg.cross_attention_input_dim, generator=g)
    glob = torch.randn(2, cfg.global_states_input_dim, generator=g)
    rot = get_1d_rotary_pos_embed(
        cfg.attention_head_dim // 2, 17, use_real=True, repeat_interleave_real=False
    )
    z = torch.randn(1, pipe.vae.config.decoder_input_channels, 8, generator=g)
    with torch.no_grad():
        want_dit = pipe.transformer(
            x,
            t,
            encoder_hidden_states=cross,
            global_hidden_states=glob[:, None],
            rotary_embedding=rot,
            return_dict=False,
        )[0].numpy()
        want_vae = pipe.vae.decode(z).sample.numpy()
    xs, ts, cs, gs = (mx.array(a.numpy()) for a in (x, t, cross, glob))
    got_dit = np.array(model.dit(xs, ts, cs, None, gs), dtype=np.float32)
    got_vae = np.array(model.vae.decode(mx.array(z.numpy())), dtype=np.float32)
    return {
        "dit_rel_err": float(np.abs(got_dit - want_dit).max() / np.abs(want_dit).max()),
        "vae_rel_err": float(np.abs(got_vae - want_vae).max() / np.abs(want_vae).max()),
    }


class _Delegate:
    """Forwards every attribute to the wrapped object (the pipeline reads ``config`` & co.)."""

    def __init__(self, inner: Any, marks: dict[str, Any]) -> None:
        self._inner = inner
        self._marks = marks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _TimedVAE(_Delegate):
    def decode(self, *args: Any, **kwargs: Any) -> Any:
        self._marks["loop_end"] = time.perf_counter()  # the final latents are evaluated here
        return self._inner.decode(*args, **kwargs)


def _timings(t0: float, marks: dict[str, Any], end: float, samples: int) -> dict[str, float]:
    calls = int(marks["calls"])
    loop = marks["loop_end"] - marks["first"]
    return {
        "e2e_s": end - t0,
        "text_s": marks["first"] - t0,
        "loop_s": loop,
        "evals_per_s": calls / loop,
        "vae_s": end - marks["loop_end"],
        "dit_evals": calls,
        "samples": samples,
    }


def run_ours(
    model: StableAudio, sampler: str, steps: int, cfg: float, seconds: float, seed: int
) -> dict[str, float]:
    marks: dict[str, Any] = {"calls": 0}
    encode = model.encode_prompts

    def timed_encode(*args: Any, **kwargs: Any) -> Any:
        # T5 + conditioners evaluated, so their lazy graph is not billed to the loop. The DiT
        # itself is not wrapped: on a GPU the pipeline compiles it.
        cond = encode(*args, **kwargs)
        mx.eval([v for v in vars(cond).values() if isinstance(v, mx.array)])
        marks.setdefault("first", time.perf_counter())
        return cond

    def progress(done: int, total: int) -> None:
        marks["calls"] = done  # one DiT evaluation each (CFG runs as one batch-2 evaluation)

    vae = model.vae
    model.vae = _TimedVAE(model.vae, marks)  # type: ignore[assignment]
    model.encode_prompts = timed_encode  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        audio = model.generate(
            PROMPT,
            seconds,
            steps=steps,
            cfg_scale=cfg,
            sampler=sampler,
            seed=seed,
            progress=progress,
        )
        end = time.perf_counter()
    finally:
        model.vae = vae
        del model.encode_prompts
    return _timings(t0, marks, end, audio.shape[-1])


def run_torch(pipe: Any, steps: int, cfg: float, seconds: float, seed: int) -> dict[str, float]:
    cuda = pipe.transformer.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    marks: dict[str, Any] = {"calls": 0}

    def pre_dit(*_: Any) -> None:
        if "first" not in marks:
            sync()
            marks["first"] = time.perf_counter()
        marks["calls"] += 1

    def step_done(i: int, _t: Any, _latents: Any) -> None:
        sync()
        marks["loop_end"] = time.perf_counter()

    hook = pipe.transformer.register_forward_pre_hook(pre_dit)
    try:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            audio = pipe(
                PROMPT,
                audio_end_in_s=seconds,
                num_inference_steps=steps,
                guidance_scale=cfg,
                generator=generator,
                callback=step_done,
                callback_steps=1,
                output_type="pt",
            ).audios
        sync()
        end = time.perf_counter()
    finally:
        hook.remove()
    return _timings(t0, marks, end, int(audio.shape[-1]))


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def mem_available() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def free_memory() -> None:
    gc.collect()
    mx.clear_cache()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} if runs else {}


def bench_variant(variant: str, args: argparse.Namespace, torch_device: str) -> dict[str, Any]:
    spec = VARIANTS[variant]
    latents = args.latents or spec["latents"]
    steps = args.steps or spec["steps"]
    cfg = spec["cfg"] if args.cfg is None else args.cfg
    torch_dtype = getattr(torch, args.torch_dtype)
    ours_dtype = getattr(mx, args.dtype or args.torch_dtype)
    result: dict[str, Any] = {
        "variant": variant,
        "latents": latents,
        "steps": steps,
        "cfg": cfg,
        "load_before": load_avg(),
    }
    t = time.perf_counter()
    pipe: Any = build_torch(variant, latents, SEED)
    result["torch_build_s"] = time.perf_counter() - t
    params = {
        name: sum(p.numel() for p in getattr(pipe, name).parameters())
        for name in ("transformer", "projection_model", "text_encoder", "vae")
    }
    result["params"] = params
    seconds = latents * pipe.vae.hop_length / pipe.vae.config.sampling_rate
    result["seconds"] = seconds
    log(
        f"[{variant}] diffusers pipeline built in {result['torch_build_s']:.1f} s "
        f"(DiT {params['transformer'] / 1e9:.2f} B, VAE {params['vae'] / 1e6:.0f} M, T5 "
        f"{params['text_encoder'] / 1e6:.0f} M parameters); {latents} latents = {seconds:.2f} s"
    )
    total = sum(params.values())
    ours_bytes = total * (2 if ours_dtype == mx.float16 else 4)
    together = torch_device != "cpu" or mem_available() > 1.5 * ours_bytes + 2e9
    together = together and not args.sequential
    result["mode"] = "interleaved" if together else "sequential"
    ours: dict[str, StableAudio] = {}
    samplers = {name: sampler for name, _, sampler in spec["ours"]}
    if args.no_alt_sampler:
        samplers = dict(list(samplers.items())[:1])
    runs: dict[str, list[dict[str, float]]] = {"diffusers": [], **{n: [] for n in samplers}}

    def load_ours() -> None:
        t = time.perf_counter()
        ours.update(build_ours(pipe, variant, ours_dtype))
        result["ours_load_s"] = time.perf_counter() - t
        log(f"[{variant}] ours loaded in {result['ours_load_s']:.1f} s")
        result["check"] = check_same_weights(pipe, next(iter(ours.values())))
        log(
            f"[{variant}] same networks: max |ours - diffusers| / max |diffusers| = "
            f"{result['check']['dit_rel_err']:.1e} (DiT), {result['check']['vae_rel_err']:.1e} "
            "(VAE)"
        )

    def one(side: str, n_steps: int, seed: int) -> dict[str, float]:
        if side == "diffusers":
            return run_torch(pipe, n_steps, cfg, seconds, seed)
        return run_ours(ours[side], samplers[side], n_steps, cfg, seconds, seed)

    def do_runs(order: list[str]) -> None:
        for side in order:
            t = time.perf_counter()
            one(side, args.warmup_steps, 1000)
            log(
                f"[{variant}] {side} warm-up ({args.warmup_steps} steps): {time.perf_counter() - t:.1f} s"
            )
        for i in range(args.runs):
            for side in order:
                r = one(side, steps, SEED + i)
                runs[side].append(r)
                log(
                    f"[{variant}] {side} run {i + 1}: e2e {r['e2e_s']:.2f} s, text "
                    f"{r['text_s']:.2f} s, {r['evals_per_s']:.3f} DiT evals/s "
                    f"({r['dit_evals']} evals), VAE {r['vae_s']:.2f} s, load {load_avg()}"
                )

    if together:
        load_ours()
    pipe.to(device=torch_device, dtype=torch_dtype)
    if together:
        do_runs(list(runs))
    else:
        do_runs(["diffusers"])
        pipe.to(device="cpu", dtype=torch.float32)
        load_ours()
        pipe = None
        free_memory()
        do_runs(list(samplers))
    result["runs"] = runs
    result["median"] = {side: _median(r) for side, r in runs.items()}
    result["samplers"] = {"diffusers": "CosineDPMSolverMultistepScheduler", **samplers}
    result["dtype"] = {"ours": str(ours_dtype), "torch": str(torch_dtype)}
    result["load_after"] = load_avg()
    pipe = None
    ours.clear()
    free_memory()
    return result


ROWS = (  # (label, key, higher is better)
    ("e2e s", "e2e_s", False),
    ("  text s", "text_s", False),
    ("  loop s", "loop_s", False),
    ("  VAE s", "vae_s", False),
    ("DiT evals/s", "evals_per_s", True),
)


def print_table(results: list[dict[str, Any]]) -> None:
    for res in results:
        med = res["median"]
        ref = med.get("diffusers", {})
        ours_sides = [s for s in med if s != "diffusers"]
        print(
            f"\n{res['variant']}: {res['latents']} latents ({res['seconds']:.2f} s), "
            f"{res['steps']} steps, cfg {res['cfg']:g}; median of {len(res['runs']['diffusers'])}"
            f" ({res['mode']}); dtype ours {res['dtype']['ours']}, torch {res['dtype']['torch']}"
        )
        for side in ("diffusers", *ours_sides):
            print(f"  {side:10} sampler: {res['samplers'][side]}")
        header = f"  {'metric':14} {'diffusers':>10}"
        for side in ours_sides:
            header += f" {side:>10} {'speed-up':>9}"
        print(header)
        for label, key, higher in ROWS:
            b = ref.get(key)
            line = f"  {label:14} {'' if b is None else f'{b:10.3f}':>10}"
            for side in ours_sides:
                a = med[side].get(key)
                ratio = "" if a is None or b is None else f"{(a / b if higher else b / a):8.2f}x"
                line += f" {'' if a is None else f'{a:10.3f}':>10} {ratio:>9}"
            print(line)
        print(
            f"  build: diffusers random {res['torch_build_s']:.1f} s, ours from it "
            f"{res.get('ours_load_s', float('nan')):.1f} s; load avg {res['load_before']} -> "
            f"{res['load_after']}"
        )
        check = res.get("check")
        if check:
            print(
                f"  same networks: max |ours - diffusers| / max |diffusers|: DiT "
                f"{check['dit_rel_err']:.1e}, VAE {check['vae_rel_err']:.1e}"
            )


def environment(args: argparse.Namespace, torch_device: str) -> dict[str, Any]:
    import diffusers
    import transformers

    env: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "audiogen": audiogen_core.__version__,
        "mlx": getattr(mx, "__version__", "unknown"),
        "mlx_device": str(mx.default_device()),
        "mlx_blas": backend.active_blas(),
        "torch": torch.__version__,
        "torch_device": torch_device,
        "torch_threads": torch.get_num_threads(),
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "stubbed_modules": STUBBED,
        "args": vars(args),
    }
    if torch_device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="small", help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--latents", type=int, help="latent frames (default: the window, 256 / 1024)")
    ap.add_argument("--steps", type=int, help="sampler steps (default 8 / 100)")
    ap.add_argument("--cfg", type=float, help="guidance scale (default 1 / 7)")
    ap.add_argument("--warmup-steps", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--torch-dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    ap.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), help="ours (default: as torch)"
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    ap.add_argument("--sequential", action="store_true", help="never hold both models at once")
    ap.add_argument(
        "--no-alt-sampler", action="store_true", help="small: skip ours with dpmpp-2m-sde"
    )
    ap.add_argument("--json", type=Path, help="write every number here")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")

    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    if args.device == "gpu":
        if backend.default_device() != "gpu":
            ap.error("--device gpu: MLX has no GPU here (Linux needs mlx[cuda13])")
        mx.set_default_device(mx.gpu)
        if torch.cuda.is_available():
            torch_device = "cuda"
        elif torch.backends.mps.is_available():
            torch_device = "mps"
        else:
            ap.error("--device gpu: torch sees no GPU")
    else:
        mx.set_default_device(mx.cpu)
        torch_device = "cpu"
    env = environment(args, torch_device)
    log(
        f"MLX {env['mlx']} on {env['mlx_device']} ({env['mlx_blas']}); torch {env['torch']} on "
        f"{torch_device} ({env['torch_threads']} threads); diffusers {env['diffusers']}"
    )
    results = []
    for variant in variants:
        results.append(bench_variant(variant, args, torch_device))
        if args.json:  # after every variant: a crash later keeps what was measured
            args.json.write_text(json.dumps({**env, "results": results}, indent=1, default=str))
    print(
        f"Stable Audio Open, random weights; {env['date']}, {env['cpu_count']} CPUs; ours MLX "
        f"{env['mlx']} {env['mlx_device']} ({env['mlx_blas']}); diffusers {env['diffusers']}, "
        f"torch {env['torch']} {torch_device} ({env['torch_threads']} threads)"
    )
    if "small" in variants:
        print(
            "small: diffusers' plain DiT at small's shapes on both sides (no q/k LayerNorm: ours "
            "with qk_norm off; global condition 2 x 768 from diffusers' two seconds "
            "conditioners, not small's 768)"
        )
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
