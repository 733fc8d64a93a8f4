"""Codebook delay pattern, classifier-free guidance and on-device sampling for the MusicGen
decoder (transformers ``MusicgenForConditionalGeneration.generate`` and its logits processors).

Delay pattern: codebook k of a channel lags k steps, so N frames take N + K_channel − 1 decoding
steps after the start token; slots outside a codebook's window hold the pad id (= vocab size),
which the heads never produce. Stereo interleaves left and right codebooks (2k left, 2k + 1 right)
with the same delay for both, so delays are ``[0, 0, 1, 1, 2, 2, 3, 3]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from audiogen_core.errors import InvalidInputError

import mlx.core as mx
import numpy as np

from audiogen_musicgen.decoder import MusicGenDecoder

Array = Any  # np.ndarray or mx.array


def codebook_delays(num_codebooks: int, audio_channels: int = 1) -> list[int]:
    """``[0, 1, 2, 3]`` for mono, ``[0, 0, 1, 1, 2, 2, 3, 3]`` for stereo (interleaved)."""
    return [k // audio_channels for k in range(num_codebooks)]


def build_delay_pattern_mask(
    input_ids: np.ndarray, pad_token_id: int, max_length: int, audio_channels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Port of transformers ``MusicgenForCausalLM.build_delay_pattern_mask`` on ``(B, K, T)``
    prompts. Returns the prompt cut before the first slot to predict ``(B, K, start)`` and the
    pattern ``(B, K, max_length)``: -1 where a token is to be predicted, else the value to force
    (the prompt, or ``pad_token_id`` in the delay triangles)."""
    ids = np.asarray(input_ids, dtype=np.int64)
    bsz, num_codebooks, seq_len = ids.shape
    shifted = np.full((bsz, num_codebooks, max_length), -1, dtype=np.int64)
    channel_codebooks = num_codebooks // 2 if audio_channels == 2 else num_codebooks
    if max_length < 2 * channel_codebooks - 1:
        return ids, shifted
    for codebook in range(channel_codebooks):
        # Left/right codebooks are interleaved in stereo: both rows share the delay.
        rows = (codebook,) if audio_channels == 1 else (2 * codebook, 2 * codebook + 1)
        for row in rows:
            shifted[:, row, codebook : seq_len + codebook] = ids[:, row]
    ones = np.ones((channel_codebooks, max_length), dtype=bool)
    pattern = np.triu(ones, k=max_length - channel_codebooks + 1) | np.tril(ones)
    if audio_channels == 2:
        pattern = np.repeat(pattern, 2, axis=0)
    mask = np.where(pattern[None], pad_token_id, shifted)
    starts = np.nonzero(mask[:, 0, :] == -1)[1]
    first_start = int(starts.min()) if starts.size else seq_len
    return mask[..., :first_start], mask


def apply_delay_pattern_mask(input_ids: Array, pattern: Array) -> Array:
    """transformers ``apply_delay_pattern_mask``: keep ids where the pattern is -1, else force
    the pattern's value (numpy or MLX arrays)."""
    xp: Any = mx if isinstance(input_ids, mx.array) else np
    pattern = pattern[..., : input_ids.shape[-1]]
    return xp.where(pattern == -1, input_ids, pattern)


def delay_codes(codes: Array, delays: Sequence[int], pad_token_id: int) -> np.ndarray:
    """Codes ``(B, K, F)`` -> the delayed sequence ``(B, K, 1 + max(delays) + F)`` that generation
    produces: a start slot, then codebook k's frames from position ``delays[k] + 1``, pads
    elsewhere."""
    c = np.asarray(codes)
    bsz, num_codebooks, frames = c.shape
    seq = np.full((bsz, num_codebooks, 1 + max(delays) + frames), pad_token_id, dtype=c.dtype)
    for k, d in enumerate(delays):
        seq[:, k, d + 1 : d + 1 + frames] = c[:, k]
    return seq


def undo_delay_pattern(seq: Array, delays: Sequence[int], num_frames: int) -> Array:
    """Inverse of ``delay_codes``: ``(B, K, L)`` -> ``(B, K, num_frames)``."""
    rows = [seq[:, k, d + 1 : d + 1 + num_frames] for k, d in enumerate(delays)]
    xp: Any = mx if isinstance(seq, mx.array) else np
    return xp.stack(rows, axis=1)


def validate_sampling(
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance_scale: float | None = None,
) -> None:
    """Range checks for the sampling knobs (SPEC §3); raises ``InvalidInputError``."""
    if not (isinstance(temperature, int | float) and math.isfinite(temperature)) or not (
        temperature > 0
    ):
        raise InvalidInputError(f"temperature must be a finite number > 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InvalidInputError(f"top_k must be an integer >= 1, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, int | float) and 0 < top_p <= 1):
        raise InvalidInputError(f"top_p must be in (0, 1], got {top_p!r}")
    if guidance_scale is not None and not (
        isinstance(guidance_scale, int | float) and math.isfinite(guidance_scale)
    ):
        raise InvalidInputError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    if guidance_scale is not None and guidance_scale < 0:
        raise InvalidInputError(f"guidance_scale must be >= 0, got {guidance_scale!r}")


def top_k_filter(logits: mx.array, k: int) -> mx.array:
    """transformers ``TopKLogitsWarper``: logits below the k-th largest become -inf (ties with
    the k-th are kept)."""
    if k >= logits.shape[-1]:
        return logits
    kth = mx.min(mx.topk(logits, k, axis=-1), axis=-1, keepdims=True)
    return mx.where(logits < kth, mx.array(-mx.inf, logits.dtype), logits)


def top_p_filter(logits: mx.array, p: float) -> mx.array:
    """transformers ``TopPLogitsWarper``: ascending sort, drop tokens whose cumulative probability
    is <= 1 − p, always keeping the most likely one. Done as a threshold on the logits (the
    removed set is a prefix of the ascending order), so no scatter back is needed."""
    if p >= 1.0:
        return logits
    ascending = mx.sort(logits, axis=-1)
    cumulative = mx.cumsum(mx.softmax(ascending.astype(mx.float32), axis=-1), axis=-1)
    removed = mx.sum(cumulative <= 1 - p, axis=-1, keepdims=True)
    removed = mx.minimum(removed, logits.shape[-1] - 1)
    threshold = mx.take_along_axis(ascending, removed, axis=-1)
    return mx.where(logits < threshold, mx.array(-mx.inf, logits.dtype), logits)


def sample_next(
    logits: mx.array,
    key: mx.array | None,
    *,
    temperature: float = 1.0,
    top_k: int | None = 250,
    top_p: float | None = None,
    greedy: bool = False,
) -> mx.array:
    """One token per row of ``logits (..., V)``, on device: argmax when ``greedy``, else
    temperature, top-k, top-p (transformers' warper order) and a categorical draw with ``key``."""
    if greedy:
        return mx.argmax(logits, axis=-1).astype(mx.int32)
    if temperature != 1.0:
        logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return mx.random.categorical(logits, axis=-1, key=key).astype(mx.int32)


# Progress reporting (``on_step``) must not drain the device queue. ``mx.eval`` of an array still
# in flight waits for everything queued so far (its event is signalled at the stream's tail), which
# on MLX's CUDA backend serialises host and GPU: the fused small-model loop measured 645 steps/s
# without a callback and 382-417 with one that waited for the step 2-32 steps back (H100,
# tools/bench/decode_step.py --lags). So on a GPU a step is reported when queued and the host
# waits only every GPU_SYNC_EVERY steps (the reports run at most that far ahead of the device);
# on the CPU, where a step takes far longer than building the next, it waits for the step
# PROGRESS_LAG back, keeping the steps in between queued.
PROGRESS_LAG = 2
GPU_SYNC_EVERY = 32


class _Progress:
    """``on_step(done, total)`` reporting for a decode loop that queues one step at a time
    (see ``PROGRESS_LAG`` and ``GPU_SYNC_EVERY``): ``queued(t, outputs)`` after step t is queued,
    ``finish(outputs)`` after the last. Reports are increasing and end with ``(total, total)``."""

    def __init__(self, on_step: Callable[[int, int], None], total: int, gpu: bool) -> None:
        self.on_step, self.total, self.gpu = on_step, total, gpu
        self.done = 0

    def queued(self, t: int, outputs: list[mx.array]) -> None:
        if self.gpu:
            # The first report waits too, so it marks a finished first step.
            if self.done == 0 or (t + 1) % GPU_SYNC_EVERY == 0:
                mx.eval(outputs[-1])
            self._report(t + 1)
        elif t >= PROGRESS_LAG:
            mx.eval(outputs[t - PROGRESS_LAG])
            self._report(t - PROGRESS_LAG + 1)

    def finish(self, outputs: list[mx.array]) -> None:
        mx.eval(outputs[-1])
        self._report(self.total)

    def _report(self, done: int) -> None:
        if done > self.done:
            self.done = done
            self.on_step(done, self.total)


def _step_offsets(base: int, steps: int) -> list[mx.array]:
    """Step t's cache position ``base + t`` as an int32 array ``(1,)``, made once so a compiled
    step takes its position as an input (fixed shapes: traced once)."""
    offsets = [mx.array([base + t], dtype=mx.int32) for t in range(steps)]
    mx.eval(offsets)
    return offsets


def _compiled(fn: Callable[..., mx.array]) -> Callable[..., mx.array]:
    """``mx.compile(fn)`` on a GPU, where fusing the CFG / warper elementwise ops saves kernel
    launches each step. Not on the CPU: there a compiled graph is C++ built with g++ at run time
    (~0.6 s of the first step of every generation, measured on the small model) to fuse a few
    thousand elements' worth of arithmetic."""
    return mx.compile(fn) if mx.default_device() == mx.gpu else fn


def generate_codes(
    decoder: MusicGenDecoder,
    encoder_states: mx.array | None,
    mask: mx.array | None,
    num_frames: int,
    *,
    prefix: Sequence[mx.array] | None = None,
    beta: float | None = None,
    guidance_scale: float | None = 3.0,
    top_k: int | None = 250,
    top_p: float | None = None,
    temperature: float = 1.0,
    key: mx.array | int | None = None,
    greedy: bool = False,
    static: bool | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> mx.array:
    """Generate ``num_frames`` frames of codes ``(B, K, num_frames)`` (delay undone, pads gone).

    ``encoder_states`` (B, S, D_text) are the text encoder's outputs, ``mask`` (B, S) marks real
    tokens (None: all real). As in transformers, CFG runs when ``guidance_scale > 1`` on a doubled
    batch ``[cond; uncond]`` whose unconditional half has zeroed states and an all-zero mask, and
    the logits become ``uncond + scale·(cond − uncond)`` before sampling. ``key`` (an
    ``mx.random.key`` or a seed) drives sampling: the same key gives the same codes.

    Decoders without cross-attention (melody) take ``prefix`` instead of ``encoder_states``: the
    decoder-input prefix of each guidance branch, ``[cond, uncond]`` (each ``(B, P, D)``, see
    ``MusicGenDecoder.melody_prefix``; ``uncond`` is unused without CFG), or for double
    guidance ``[full, partial, null]`` with ``beta``: audiocraft's
    ``null + scale·(partial + beta·(full − partial) − null)``. The prefixes run through the
    decoder with the first step, in one causal pass, and then live in the KV cache.

    ``static`` runs each step as one compiled, fixed-shape graph that is replayed without
    rebuilding it in Python: ``MusicGenDecoder.fused_step`` (7 primitives a layer, on the fused
    kernels of ``cuda_step``) where ``can_fuse`` allows, else ``static_step``. None (default):
    static exactly when the fused step applies, i.e. on MLX's CUDA backend with float weights,
    where a step is bound by the host cost of each primitive (tools/bench/decode_step.py). The
    unfused static step attends over the whole masked cache, which measured no faster than the
    eager step.
    ``on_step(done, total)`` reports progress without draining the device's queue: on the CPU
    it trails the newest step by ``PROGRESS_LAG``, on a GPU it reports steps as they are queued
    and waits for the device every ``GPU_SYNC_EVERY`` steps (see those constants).
    """
    validate_sampling(
        temperature=temperature, top_k=top_k, top_p=top_p, guidance_scale=guidance_scale
    )
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise InvalidInputError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    config = decoder.config
    cfg = guidance_scale is not None and guidance_scale > 1
    scale = float(guidance_scale) if guidance_scale is not None else 1.0
    if config.cross_attention:
        if encoder_states is None or encoder_states.ndim != 3:
            shape = None if encoder_states is None else encoder_states.shape
            raise InvalidInputError(f"encoder_states must be (batch, tokens, width), got {shape}")
        bsz = encoder_states.shape[0]
        branches = 2 if cfg else 1
    else:
        if encoder_states is not None:
            raise InvalidInputError("this decoder has no cross-attention: pass prefix, not states")
        if not prefix or any(p.ndim != 3 or p.shape != prefix[0].shape for p in prefix):
            raise InvalidInputError(
                "this decoder is prefix-conditioned: pass prefix=[cond, uncond] of equal "
                "(batch, length, width) shapes"
            )
        bsz = prefix[0].shape[0]
        branches = (3 if beta is not None else 2) if cfg else 1
        if len(prefix) < branches:
            raise InvalidInputError(
                f"guidance needs {branches} prefixes (cond, uncond{', null' * (branches == 3)}), "
                f"got {len(prefix)}"
            )
    num_codebooks = config.num_codebooks
    delays = config.codebook_delays
    steps = num_frames + max(delays)
    pad = config.pad_token_id
    if greedy:
        base = mx.random.key(0)  # unused by argmax; keeps one compiled signature
    elif key is None:
        raise InvalidInputError("sampling needs a random key or seed (or greedy=True)")
    else:
        base = mx.random.key(key) if isinstance(key, int) else key
    # Per-step keys and delay-pattern rows are made once, so a step indexes nothing on device.
    step_keys = [k.reshape(2) for k in mx.split(mx.random.split(base, steps), steps)]
    positions = np.arange(1, steps + 1)[:, None]
    d = np.asarray(delays)[None, :]
    # valid[t]: codebooks that keep the token predicted at step t (for position t + 1); the
    # others are forced to pad, as apply_delay_pattern_mask does upstream.
    valid = [mx.array(row) for row in (positions >= d + 1) & (positions <= d + num_frames)]
    mx.eval(step_keys, valid)

    first_prefix: mx.array | None = None
    if encoder_states is not None:
        if mask is None:
            mask = mx.ones(encoder_states.shape[:2], dtype=mx.int32)
        if cfg:
            encoder_states = mx.concatenate([encoder_states, mx.zeros_like(encoder_states)])
            mask = mx.concatenate([mask, mx.zeros_like(mask)])
        cache = decoder.make_cache(encoder_states, mask, steps)
    elif prefix is not None:
        first_prefix = mx.concatenate(list(prefix[:branches]))
        cache = decoder.make_cache(None, None, first_prefix.shape[1] + steps, batch=branches * bsz)
    double = branches == 3
    beta_f = float(beta) if beta is not None else 0.0

    def pick(logits: mx.array, step_key: mx.array, keep: mx.array) -> mx.array:
        logits = logits.reshape(-1, num_codebooks, logits.shape[-1])  # (branches·B, K, V)
        if double:
            full, partial, null = logits[:bsz], logits[bsz : 2 * bsz], logits[2 * bsz :]
            logits = null + scale * (partial + beta_f * (full - partial) - null)
        elif cfg:
            cond, uncond = logits[:bsz], logits[bsz:]
            logits = uncond + scale * (cond - uncond)
        nxt = sample_next(
            logits, step_key, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy
        )
        return mx.where(keep, nxt, pad)[..., None]

    def replicate(tokens: mx.array) -> mx.array:
        return mx.concatenate([tokens] * branches) if branches > 1 else tokens

    tokens = mx.full((bsz, num_codebooks, 1), pad, dtype=mx.int32)
    outputs: list[mx.array] = []
    progress = (
        None
        if on_step is None
        else _Progress(on_step, steps, mx.default_device().type == mx.DeviceType.gpu)
    )

    def queue(t: int, tokens: mx.array) -> None:
        # Queue step t while the host builds the next one; no host sync in the loop (see
        # _Progress for the reporting).
        outputs.append(tokens)
        mx.async_eval(tokens)
        if progress is not None:
            progress.queued(t, outputs)

    first = 0
    if first_prefix is not None:
        # The prefix runs with the first step (one causal pass); every later step is one token.
        pick_first = _compiled(pick)
        tokens = pick_first(
            decoder.step(replicate(tokens), cache, first_prefix), step_keys[0], valid[0]
        )
        queue(0, tokens)
        first = 1

    fused = static is not False and decoder.can_fuse(cache)
    if static is None:
        static = fused
    next_tokens: Callable[[int, mx.array], mx.array]
    if fused:

        def fused_step(
            tokens: mx.array, offset: mx.array, kv: list[mx.array], key: mx.array, keep: mx.array
        ) -> mx.array:
            logits = decoder.fused_step(
                replicate(tokens), offset, kv, cache.cross_kv, cache.cross_mask
            )
            return pick(logits, key, keep)

        # Traced once per call (the cross-attention K/V are constants of this generation).
        compiled_fused = mx.compile(fused_step)
        # The kernels write the caches in place: they must be materialized buffers of their
        # own (a fresh cache is a lazy zeros, a prefix step a lazy slice update).
        mx.eval(cache.kv)
        offsets = _step_offsets(cache.offset - first, steps)

        def next_tokens(t: int, tokens: mx.array) -> mx.array:
            return compiled_fused(tokens, offsets[t], cache.kv, step_keys[t], valid[t])

    elif static:

        def full_step(
            tokens: mx.array, offset: mx.array, kv: list[mx.array], key: mx.array, keep: mx.array
        ) -> tuple[mx.array, list[mx.array]]:
            logits, kv = decoder.static_step(
                replicate(tokens), offset, kv, cache.cross_kv, cache.cross_mask, cache.matvec
            )
            return pick(logits, key, keep), kv

        compiled = mx.compile(full_step)
        offsets = _step_offsets(cache.offset - first, steps)

        def next_tokens(t: int, tokens: mx.array) -> mx.array:
            # Rebinding cache.kv drops the old arrays, so the slice updates inside the graph
            # can write into their buffers instead of copying the whole cache.
            tokens, cache.kv = compiled(tokens, offsets[t], cache.kv, step_keys[t], valid[t])
            return tokens

    else:
        # Compiled once per call: fuses CFG, the warpers' elementwise ops and the pattern where.
        pick_compiled = _compiled(pick)

        def next_tokens(t: int, tokens: mx.array) -> mx.array:
            return pick_compiled(decoder.step(replicate(tokens), cache), step_keys[t], valid[t])

    for t in range(first, steps):
        tokens = next_tokens(t, tokens)
        queue(t, tokens)
    if progress is not None:
        progress.finish(outputs)
    start = mx.full((bsz, num_codebooks, 1), pad, mx.int32)
    seq = mx.concatenate([start, *outputs], axis=-1)
    return undo_delay_pattern(seq, delays, num_frames)
