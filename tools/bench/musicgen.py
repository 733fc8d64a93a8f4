"""MusicGen text-to-music speed: ours (MLX) vs transformers (torch) in one run, same machine.

Full-size random-weight models (small 24 × 1024, medium 48 × 1536, large 48 × 2048, stereo-small
= small with 8 codebooks and 2 audio channels; melody 48 × 1536 and melody-large 48 × 2048
``MusicgenMelodyForConditionalGeneration`` given a 235-frame one-hot chroma (a 30 s melody) as
``input_features`` / ``chroma=``; T5-base text encoder; facebook/encodec_32khz codec). The transformers ``MusicgenForConditionalGeneration`` is built with random weights
(seeded; transformers' own init is skipped and the tensors filled directly, which is several times
faster), and OUR pipeline gets the same tensors in memory, through the same sanitizers the
converter uses (``convert.split_components``), assembled into a ``MusicGen`` object.

Both sides generate from one 20-word prompt with CFG 3.0 (so the decoder runs at batch 2) and
``top_k=250`` sampling: transformers ``generate(do_sample=True, top_k=250, guidance_scale=3.0,
max_new_tokens=frames + 3)``, ours ``MusicGen.generate(prompt, frames / 50 s, top_k=250)``. Each
run is one end-to-end generation, timed from the call to the returned audio (token ids are fixed,
as no tokenizer files are available offline; tokenising a prompt costs well under 1 ms). Inside
it, light hooks record when the text encoder is done, when the first decoder step's tokens exist
and when the last step is done, which give:

- ``first``: seconds from the text states to the first step's tokens (cross-attention K/V, the
  first decoder step at batch 2, CFG and sampling; for the melody variants the first step also
  runs the whole prefix: 235 chroma frames + the text tokens, through every layer);
- ``steps/s``: decoder steps per second over the remaining ``frames + 2`` steps;
- ``e2e``: the whole generation (T5 + decode loop + EnCodec decode), and ``t5``, ``codec``.

Ours is timed through ``generate``'s ``progress`` callback (on the CPU the loop then waits each
step for the step two back; on a GPU the callback runs as steps are queued and the host waits for
the device at the first step, every 32 steps and at the end, so ``first`` and the last mark are
finished steps; see ``sampling.GPU_SYNC_EVERY``) plus one host sync after T5; transformers through
a stopping criterion called after every step (its loop syncs every step anyway) and a forward
hook on the text encoder. On MLX's CUDA backend ours runs the compiled fused step
(``fused_step``), as ``generate_codes`` does there by default. A short generation warms both sides up, then ``--runs``
runs alternate transformers and ours when both models fit in memory together (else all
transformers runs, the torch model freed, then ours).

On a CPU shared with other work, torch's OpenMP threads spin at their barriers and lose their
turn: measured here at load 6 on 2 cores, transformers ran 0.35 steps/s with 2 threads and 1.6
with 1; ``OMP_WAIT_POLICY=PASSIVE`` (set by this script unless the environment sets it) gave 1.6
with 2 threads. Ours' OpenBLAS threads do not spin that way.

``speed-up`` is ours ÷ transformers for steps/s and transformers ÷ ours for seconds: > 1 means
ours is faster.

    uv run python tools/bench/musicgen.py --variants small,stereo-small --frames 250 --runs 2
    python3 tools/bench/musicgen.py --device gpu --variants small,medium,large --json out.json

Without ``audiogen_*`` installed, the packages are imported from ``packages/*/src``. The bench
needs numpy, mlx (``mlx[cuda13]`` for ``--device gpu`` on Linux), torch, transformers (which
brings tokenizers, huggingface_hub and safetensors). soundfile, soxr and pyloudnorm (audio file
I/O, imported by ``audiogen_core.audio``) are replaced by stubs when missing: nothing here reads
or writes audio files.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _bootstrap

ROOT = Path(__file__).resolve().parents[2]


# Before torch loads (see the docstring); OMP_WAIT_POLICY=ACTIVE in the environment overrides it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
STUBBED = _bootstrap.bootstrap()
sys.path.insert(0, str(ROOT / "tools"))  # musicgen_keys: the upstream configs

import audiogen_core  # noqa: E402  - OpenBLAS preload before mlx
from audiogen_core import backend  # noqa: E402
from audiogen_core.weights import cast_floats, load_into  # noqa: E402

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from audiogen_musicgen import MusicGen, convert, sampling  # noqa: E402

_bootstrap.unstub(STUBBED)

# name: (layers, hidden, heads, ffn, codebooks, audio channels)
VARIANTS: dict[str, tuple[int, int, int, int, int, int]] = {
    "small": (24, 1024, 16, 4096, 4, 1),
    "medium": (48, 1536, 24, 6144, 4, 1),
    "large": (48, 2048, 32, 8192, 4, 1),
    "stereo-small": (24, 1024, 16, 4096, 8, 2),
    "stereo-medium": (48, 1536, 24, 6144, 8, 2),
    "stereo-large": (48, 2048, 32, 8192, 8, 2),
    # Melody: no cross-attention; [chroma (235) | text | audio] in one causal sequence.
    "melody": (48, 1536, 24, 6144, 4, 1),
    "melody-large": (48, 2048, 32, 8192, 4, 1),
    "stereo-melody": (48, 1536, 24, 6144, 8, 2),
    # MusicGen-style's LM (audiocraft; medium-sized, prepend-conditioned like melody): ours runs
    # its three-pass double guidance over [style (15) | text] prefixes; transformers has no style
    # model, so its side is the closest one, MusicgenMelody at this size with two-pass CFG.
    "style": (48, 1536, 24, 6144, 4, 1),
}
STYLE_TOKENS = 15  # 3 s of MERT frames, every 15th
STYLE_BETA = 5.0
CHROMA_FRAMES = 235  # a 30 s melody: the whole chroma prefix is real melody


def is_melody(variant: str) -> bool:
    return "melody" in variant or variant == "style"


def melody_chroma() -> np.ndarray:
    """A one-hot chroma (1, 235, 12): notes held 4 frames, like a hummed tune (the decoder's
    speed does not depend on which bins are hot)."""
    rng = np.random.default_rng(SEED)
    notes = np.repeat(rng.integers(0, 12, CHROMA_FRAMES // 4 + 1), 4)[:CHROMA_FRAMES]
    out = np.zeros((1, CHROMA_FRAMES, 12), np.float32)
    out[0, np.arange(CHROMA_FRAMES), notes] = 1.0
    return out


PROMPT = (
    "an upbeat lofi hip hop track with warm rhodes piano, dusty drums, deep bass, vinyl crackle "
    "and soft falling rain"
)
PROMPT_TOKENS = 28  # t5-base's SentencePiece: ~1.3 tokens a word + </s>
FRAME_RATE = 50
GUIDANCE = 3.0
TOP_K = 250
SEED = 0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_config(variant: str) -> Any:
    from musicgen_keys import ENCODEC_32K, T5_BASE
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        T5Config,
    )

    layers, hidden, heads, ffn, codebooks, channels = VARIANTS[variant]
    melody = is_melody(variant)
    decoder = (MusicgenMelodyDecoderConfig if melody else MusicgenDecoderConfig)(
        vocab_size=2048,
        hidden_size=hidden,
        ffn_dim=ffn,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_codebooks=codebooks,
        audio_channels=channels,
        max_position_embeddings=2048,
        pad_token_id=2048,
        bos_token_id=2048,
        tie_word_embeddings=False,
    )
    return (MusicgenMelodyConfig if melody else MusicgenConfig)(
        text_encoder=T5Config(**T5_BASE),
        audio_encoder=EncodecConfig(**ENCODEC_32K),
        decoder=decoder,
    )


@contextlib.contextmanager
def _skip_init() -> Iterator[None]:
    """transformers' ``no_init_weights`` (torch's and its own initialisers become no-ops): the
    parameters are filled afterwards, once, instead of twice (kaiming, then _init_weights)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # older transformers: plain (slower) init
        yield
        return
    with no_init_weights():
        yield


def build_torch(torch: Any, variant: str, seed: int) -> Any:
    """A random-weight ``MusicgenForConditionalGeneration`` (``MusicgenMelody…`` for the melody
    variants) in fp32 on CPU, in eval mode."""
    from transformers import (
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )

    torch.manual_seed(seed)
    cls = (
        MusicgenMelodyForConditionalGeneration
        if is_melody(variant)
        else MusicgenForConditionalGeneration
    )
    with _skip_init():
        model = cls(make_config(variant))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                # LayerNorm / T5LayerNorm gains 1, every bias 0 (the initialisers' choice).
                p.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
            else:
                p.normal_(0.0, 0.02)
        for name, b in model.audio_encoder.named_buffers():
            # Codebooks are zeros until k-means fills them; random codebooks make every code
            # decode differently, as in a trained codec.
            if name.endswith((".embed", ".embed_avg")):
                b.normal_()
    gen = model.generation_config
    gen.pad_token_id = gen.bos_token_id = gen.decoder_start_token_id = 2048
    return model.eval()


class FixedTokenizer:
    """Stands in for ``T5Tokenizer``: the same fixed ids for every prompt (no tokenizer files
    offline); the real one costs well under a millisecond for one prompt."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids.astype(np.int32)

    def __call__(self, texts: list[str], max_length: int = 512) -> tuple[np.ndarray, np.ndarray]:
        ids = np.repeat(self.ids[None, :max_length], len(texts), axis=0)
        return ids, np.ones_like(ids)


def prompt_ids(vocab_size: int) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    ids = rng.integers(3, vocab_size, size=PROMPT_TOKENS)
    ids[-1] = 1  # </s>
    return ids.astype(np.int64)


def build_ours(
    state: dict[str, Any], composite: dict[str, Any], dtype: mx.Dtype, ids: np.ndarray
) -> MusicGen:
    """Our ``MusicGen`` from an upstream state dict in memory (torch CPU tensors), through the
    converter's sanitizers. ``state`` is emptied as it goes, so torch memory can be released
    tensor by tensor when nothing else holds the tensors."""
    upstream: dict[str, mx.array] = {}
    while state:
        key, tensor = state.popitem()
        upstream[key] = mx.array(tensor.detach().float().numpy())
        del tensor
    source = "random weights (in memory)"
    parts = convert.split_components(upstream, source)
    del upstream
    models = convert.build_models(convert.component_configs(composite, source), source)
    for part in ("decoder", "encodec"):
        load_into(models[part], cast_floats(parts[part], dtype), source=source)
    t5_weights = cast_floats(parts["t5"], dtype)
    if dtype == mx.float16:
        # As T5Encoder.from_pretrained: transformers keeps ``wo`` in fp32 (FF outputs overflow).
        t5_weights = {
            k: v.astype(mx.float32) if ".DenseReluDense.wo." in k else v
            for k, v in t5_weights.items()
        }
    load_into(models["t5"], t5_weights, source=source)
    del parts, t5_weights
    for model in models.values():
        mx.eval(model.parameters())
    return MusicGen(
        models["decoder"],  # type: ignore[arg-type]
        models["t5"],  # type: ignore[arg-type]
        FixedTokenizer(ids),  # type: ignore[arg-type]
        models["encodec"],  # type: ignore[arg-type]
        source=source,
    )


class _Delegate:
    """Forwards every attribute to the wrapped object (the pipeline reads ``config`` & co.)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _TimedText(_Delegate):
    def __init__(self, inner: Any, marks: dict[str, float]) -> None:
        super().__init__(inner)
        self._marks = marks

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self._inner(*args, **kwargs)
        mx.eval(out)
        self._marks["text"] = time.perf_counter()
        return out


class _TimedCodec(_Delegate):
    def __init__(self, inner: Any, marks: dict[str, float]) -> None:
        super().__init__(inner)
        self._marks = marks

    def decode(self, codes: Any) -> Any:
        self._marks["codec"] = time.perf_counter()
        return self._inner.decode(codes)


def run_ours(model: MusicGen, frames: int, seed: int, style: bool = False) -> dict[str, float]:
    """One timed generation; ``style``: audiocraft's three-pass double guidance over
    ``[style | text]`` prefixes (random style tokens: MERT and the style conditioner are timed
    by tools/bench/mert.py and tools/bench/style.py)."""
    marks: dict[str, float] = {}

    def progress(done: int, total: int) -> None:
        # generate_codes reports step t - 1 once step t - 2's tokens exist (it keeps one step
        # queued), so ``done == 1`` is the first step's tokens, ``done == total`` the loop end.
        if done == 1:
            marks["first"] = time.perf_counter()
        if done == total:
            marks["loop_end"] = time.perf_counter()
            marks["steps"] = total

    parts = (model.text_encoder, model.audio_encoder)
    model.text_encoder = _TimedText(model.text_encoder, marks)  # type: ignore[assignment]
    model.audio_encoder = _TimedCodec(model.audio_encoder, marks)  # type: ignore[assignment]
    try:
        t0 = time.perf_counter()
        if style:
            states, mask = model.encode_text(PROMPT)
            width = model.decoder.config.hidden_size
            tokens = 0.02 * mx.random.normal((1, STYLE_TOKENS, width), key=mx.random.key(seed))
            prefix = model.style_prefixes(states, mask, tokens, beta=STYLE_BETA)
            codes = sampling.generate_codes(
                model.decoder,
                None,
                None,
                frames,
                prefix=prefix,
                beta=STYLE_BETA,
                guidance_scale=GUIDANCE,
                top_k=TOP_K,
                key=seed,
                on_step=progress,
            )
            audio = model.decode(codes)
        else:
            audio = model.generate(
                PROMPT,
                frames / FRAME_RATE,
                guidance_scale=GUIDANCE,
                top_k=TOP_K,
                seed=seed,
                progress=progress,
                chroma=list(melody_chroma()) if model.is_melody else None,
            )
        end = time.perf_counter()
    finally:
        model.text_encoder, model.audio_encoder = parts
    return _timings(t0, marks, end, int(marks["steps"]), audio.shape[-1])


def _timings(
    t0: float, marks: dict[str, float], end: float, steps: int, samples: int
) -> dict[str, float]:
    return {
        "e2e_s": end - t0,
        "t5_s": marks["text"] - t0,
        "first_step_s": marks["first"] - marks["text"],
        "steps_per_s": (steps - 1) / (marks["loop_end"] - marks["first"]),
        "loop_s": marks["loop_end"] - marks["text"],
        "codec_s": end - marks.get("codec", marks["loop_end"]),
        "steps": steps,
        "samples": samples,
    }


def run_torch(torch: Any, model: Any, ids: Any, frames: int, seed: int) -> dict[str, float]:
    from transformers import StoppingCriteria, StoppingCriteriaList

    cuda = ids.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    marks: dict[str, float] = {}
    steps: list[float] = []

    class Timer(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            sync()
            steps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def text_done(*_: Any) -> None:
        sync()
        marks["text"] = time.perf_counter()

    hook = model.text_encoder.register_forward_hook(text_done)
    cpc = model.config.decoder.num_codebooks // model.config.decoder.audio_channels
    extra = {}
    if model.config.model_type == "musicgen_melody":
        extra["input_features"] = torch.from_numpy(melody_chroma()).to(ids.device, model.dtype)
    try:
        torch.manual_seed(seed)
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            audio = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                top_k=TOP_K,
                guidance_scale=GUIDANCE,
                max_new_tokens=frames + cpc - 1,  # transformers makes max_new_tokens + 1 - cpc
                stopping_criteria=StoppingCriteriaList([Timer()]),
                **extra,
            )
        sync()
        end = time.perf_counter()
    finally:
        hook.remove()
    marks["first"], marks["loop_end"] = steps[0], steps[-1]
    return _timings(t0, marks, end, len(steps), int(audio.shape[-1]))


def profile_ours(model: MusicGen, frames: int, seed: int) -> dict[str, float]:
    """Ours' decode loop with a host sync after the decoder step and after sampling, to split a
    step's time (the synced loop is slower than the real, asynchronous one). Where
    ``can_fuse`` allows (MLX's CUDA backend) the decoder step is the compiled ``fused_step``
    that ``generate_codes`` uses there, else the eager step."""
    decoder = model.decoder
    config = decoder.config
    states, mask = model.encode_text(PROMPT)
    states = mx.concatenate([states, mx.zeros_like(states)])
    mask = mx.concatenate([mask, mx.zeros_like(mask)])
    steps = frames + max(config.codebook_delays)
    cache = decoder.make_cache(states, mask, steps)
    k = config.num_codebooks
    keys = mx.random.split(mx.random.key(seed), steps)
    fused = decoder.can_fuse(cache)
    static = fused  # as generate_codes decides by default

    def pick(logits: mx.array, key: mx.array) -> mx.array:
        logits = logits.reshape(-1, k, logits.shape[-1])
        cond, uncond = logits[:1], logits[1:]
        guided = uncond + GUIDANCE * (cond - uncond)
        return sampling.sample_next(guided, key, top_k=TOP_K)[..., None]

    def static_step(
        ids: mx.array, offset: mx.array, kv: list[mx.array]
    ) -> tuple[mx.array, list[mx.array]]:
        if fused:  # writes the caches in place
            return decoder.fused_step(ids, offset, kv, cache.cross_kv, cache.cross_mask), []
        return decoder.static_step(ids, offset, kv, cache.cross_kv, cache.cross_mask)

    pick_compiled = mx.compile(pick)
    step_compiled = mx.compile(static_step)
    offsets = [mx.array([t], dtype=mx.int32) for t in range(steps)]
    tokens = mx.full((1, k, 1), config.pad_token_id, dtype=mx.int32)
    mx.eval(cache.cross_kv, cache.kv, keys, tokens, offsets)
    t_dec: list[float] = []
    t_pick: list[float] = []
    for t in range(steps):
        t0 = time.perf_counter()
        ids = mx.concatenate([tokens, tokens])
        if fused:
            logits, _ = step_compiled(ids, offsets[t], cache.kv)
        elif static:
            logits, cache.kv = step_compiled(ids, offsets[t], cache.kv)
        else:
            logits = decoder.step(ids, cache)
        mx.eval(logits)
        t1 = time.perf_counter()
        tokens = pick_compiled(logits, keys[t])
        mx.eval(tokens)
        t_dec.append(t1 - t0)
        t_pick.append(time.perf_counter() - t1)
    dec, pck = statistics.median(t_dec[1:]), statistics.median(t_pick[1:])
    return {
        "fused_step": float(static),
        "decoder_step_ms": 1e3 * dec,
        "sampling_ms": 1e3 * pck,
        "synced_steps_per_s": 1 / (dec + pck),
    }


def mem_available() -> float:
    """Bytes the kernel reports available (Linux); +inf elsewhere."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def torch_blas(torch: Any) -> str:
    show = torch.__config__.show()
    info = [
        line.strip().rstrip(",")
        for line in show.replace(", ", "\n").splitlines()
        if line.strip().startswith(("BLAS_INFO", "LAPACK_INFO"))
    ]
    mkl = "MKL" if torch.backends.mkl.is_available() else "no MKL"
    return f"{', '.join(info) or 'unknown'}, {mkl}, {torch.get_num_threads()} threads"


def free_memory(torch: Any) -> None:
    gc.collect()
    mx.clear_cache()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def environment(torch: Any, args: argparse.Namespace, torch_device: str) -> dict[str, Any]:
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
        "torch_blas": torch_blas(torch),
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "stubbed_modules": STUBBED,
        "args": vars(args),
    }
    if torch_device == "cuda":
        env["gpu"] = torch.cuda.get_device_name()
    return env


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} if runs else {}


def bench_variant(
    torch: Any, variant: str, args: argparse.Namespace, torch_device: str
) -> dict[str, Any]:
    torch_dtype = getattr(torch, args.torch_dtype)
    ours_dtype = getattr(mx, args.dtype or args.torch_dtype)
    result: dict[str, Any] = {"variant": variant, "frames": args.frames, "load_before": load_avg()}

    t = time.perf_counter()
    ref: Any = build_torch(torch, variant, SEED)
    result["torch_build_s"] = time.perf_counter() - t
    params = sum(p.numel() for p in ref.parameters())
    result["params"] = params
    composite = ref.config.to_dict()
    ids = prompt_ids(ref.config.text_encoder.vocab_size)
    ids_t = torch.from_numpy(ids)[None].to(torch_device)
    log(f"[{variant}] transformers model built ({params / 1e9:.2f} B parameters)")

    # Both models at once (so runs can alternate) when they fit; on CPU ours needs about its
    # weights again, plus the fused QKV copies while converting.
    ours_bytes = params * (2 if ours_dtype == mx.float16 else 4)
    fits = torch_device != "cpu" or mem_available() > 1.4 * ours_bytes + 2e9
    together = args.side == "both" and fits and not args.sequential
    result["mode"] = "interleaved" if together else "sequential"
    sides = [s for s in ("torch", "ours") if args.side in (s, "both")]
    runs: dict[str, list[dict[str, float]]] = {s: [] for s in sides}
    ours: MusicGen | None = None

    def load_ours(state: dict[str, Any]) -> MusicGen:
        t = time.perf_counter()
        model = build_ours(state, composite, ours_dtype, ids)
        if args.quantize:
            from audiogen_core.weights import quantize_linears

            n = quantize_linears(model.decoder, args.quantize, group_size=64)
            log(f"[{variant}] ours: {n} decoder linears quantized to {args.quantize} bits")
        model.decoder.fold_cross_attention = {"auto": None, "on": True, "off": False}[args.fold]
        model.decoder.matvec = {"auto": None, "on": True, "off": False}[args.matvec]
        result["ours_load_s"] = time.perf_counter() - t
        log(f"[{variant}] ours loaded in {result['ours_load_s']:.1f} s")
        return model

    def one(side: str, frames: int, seed: int) -> dict[str, float]:
        if side == "ours":
            assert ours is not None
            return run_ours(ours, frames, seed, style=variant == "style")
        return run_torch(torch, ref, ids_t, frames, seed)

    def do_runs(order: list[str]) -> None:
        for side in order:
            one(side, args.warmup_frames, 1000)
        for i in range(args.runs):
            for side in order:
                r = one(side, args.frames, SEED + i)
                runs[side].append(r)
                log(
                    f"[{variant}] {side} run {i + 1}: e2e {r['e2e_s']:.2f} s, "
                    f"{r['steps_per_s']:.2f} steps/s, first step {r['first_step_s'] * 1e3:.0f} ms, "
                    f"{r['steps']} steps, {r['samples']} samples"
                )

    if args.side == "ours" or together:
        ours = load_ours(ref.state_dict())
    if args.side == "ours":
        ref = None  # only its weights were needed
        free_memory(torch)
    else:
        ref.to(device=torch_device, dtype=torch_dtype)
    if together or args.side != "both":
        do_runs(sides)
    else:
        do_runs(["torch"])
        ref.to(device="cpu", dtype=torch.float32)
        state = ref.state_dict()
        ref = None  # build_ours empties ``state``: torch memory goes tensor by tensor
        ours = load_ours(state)
        del state
        free_memory(torch)
        do_runs(["ours"])

    if args.profile and ours is not None and not ours.is_melody:
        result["ours_profile"] = profile_ours(ours, args.frames, SEED)
    lengths = {int(r["samples"]) for side_runs in runs.values() for r in side_runs}
    if len(lengths) > 1:
        log(f"[{variant}] WARNING: the sides made different audio lengths {sorted(lengths)}")
    result["runs"] = runs
    result["median"] = {side: _median(r) for side, r in runs.items()}
    result["dtype"] = {"ours": str(ours_dtype), "torch": str(torch_dtype)}
    result["quantize"] = args.quantize
    result["load_after"] = load_avg()
    ref = ours = None
    free_memory(torch)
    return result


ROWS = (  # (label, key, higher is better)
    ("steps/s", "steps_per_s", True),
    ("first step s", "first_step_s", False),
    ("e2e s", "e2e_s", False),
    ("  T5 s", "t5_s", False),
    ("  loop s", "loop_s", False),
    ("  EnCodec s", "codec_s", False),
)


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'variant':14} {'metric':14} {'ours':>9} {'transf.':>9} {'speed-up':>9}")
    for res in results:
        med = res["median"]
        o, r = med.get("ours", {}), med.get("torch", {})
        for label, key, higher in ROWS:
            a, b = o.get(key), r.get(key)
            ratio = "" if a is None or b is None else f"{(a / b if higher else b / a):8.2f}x"
            fa = "" if a is None else f"{a:9.3f}"
            fb = "" if b is None else f"{b:9.3f}"
            print(f"{res['variant']:14} {label:14} {fa:>9} {fb:>9} {ratio:>9}")
        extra = f"load: ours {res.get('ours_load_s', float('nan')):.1f} s"
        extra += f" (torch random build {res['torch_build_s']:.1f} s); mode {res['mode']}"
        extra += f"; load avg {res['load_before']} -> {res['load_after']}"
        print(f"{res['variant']:14} {extra}")
        prof = res.get("ours_profile")
        if prof:
            print(
                f"{res['variant']:14} ours profile (synced"
                f"{', fused step' if prof['fused_step'] else ''}): decoder step "
                f"{prof['decoder_step_ms']:.1f} ms + sampling {prof['sampling_ms']:.1f} ms "
                f"= {prof['synced_steps_per_s']:.2f} steps/s"
            )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default="small", help=f"comma list of {', '.join(VARIANTS)}")
    ap.add_argument("--frames", type=int, default=500, help="audio frames (50/s; 500 = 10 s)")
    ap.add_argument("--warmup-frames", type=int, default=25)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    ap.add_argument("--side", choices=("both", "ours", "torch"), default="both")
    ap.add_argument("--torch-dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    ap.add_argument(
        "--dtype", choices=("float32", "float16", "bfloat16"), help="ours (default: as torch)"
    )
    ap.add_argument(
        "--quantize", type=int, choices=(4, 8), help="ours: quantize the decoder's linears"
    )
    ap.add_argument(
        "--fold",
        choices=("auto", "on", "off"),
        default="auto",
        help="ours: cross-attention folded into the text keys/values (CrossAttention.fold)",
    )
    ap.add_argument(
        "--matvec",
        choices=("auto", "on", "off"),
        default="auto",
        help="ours: decode-step linears as batched matvecs (decoder.project)",
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch intra-op threads")
    ap.add_argument("--sequential", action="store_true", help="never hold both models at once")
    ap.add_argument("--profile", action="store_true", help="ours' per-step split (synced loop)")
    ap.add_argument("--json", type=Path, help="write every number here")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")

    import transformers

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
    env = environment(torch, args, torch_device)
    log(
        f"MLX {env['mlx']} on {env['mlx_device']} ({env['mlx_blas']}); torch {env['torch']} on "
        f"{torch_device} ({env['torch_blas']}); transformers {env['transformers']}"
    )
    if STUBBED:
        log(f"stubbed (audio file I/O, unused here): {', '.join(STUBBED)}")
    results = []
    for variant in variants:
        results.append(bench_variant(torch, variant, args, torch_device))
        if args.json:  # after every variant: a crash later keeps what was measured
            args.json.write_text(json.dumps({**env, "results": results}, indent=1, default=str))
    print(
        f"MusicGen, {args.frames} frames ({args.frames / FRAME_RATE:g} s), CFG {GUIDANCE}, "
        f"top_k {TOP_K}, batch 2 (prompt + CFG), median of {args.runs}; "
        f"{env['date']}, {env['cpu_count']} CPUs"
    )
    print(f"ours: MLX {env['mlx']} {env['mlx_device']}, {env['mlx_blas']}")
    print(
        f"transformers {env['transformers']}, torch {env['torch']} {torch_device}: {env['torch_blas']}"
    )
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
