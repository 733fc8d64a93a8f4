"""Delay pattern, top-k / top-p / temperature sampling and the generation loop's key handling.

References: transformers ``MusicgenForCausalLM.build_delay_pattern_mask`` (live, with torch) and
numpy ports of transformers' ``TopKLogitsWarper`` / ``TopPLogitsWarper``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from audiogen_core.errors import InvalidInputError
from audiogen_core.weights import load_safetensors

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiogen_musicgen.config import DecoderConfig
from audiogen_musicgen.decoder import MusicGenDecoder
from audiogen_musicgen.sampling import (
    apply_delay_pattern_mask,
    build_delay_pattern_mask,
    codebook_delays,
    delay_codes,
    generate_codes,
    sample_next,
    top_k_filter,
    top_p_filter,
    undo_delay_pattern,
    validate_sampling,
)
from audiogen_musicgen.weights import load_decoder

PAD = 2048


@st.composite
def _codes(draw: Any) -> tuple[np.ndarray, int]:
    channels = draw(st.sampled_from([1, 2]))
    per_channel = draw(st.integers(1, 4))
    shape = (draw(st.integers(1, 3)), per_channel * channels, draw(st.integers(1, 12)))
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, PAD, shape).astype(np.int32), channels


@settings(max_examples=60, deadline=None)
@given(_codes())
def test_delay_pattern_round_trip(case: tuple[np.ndarray, int]) -> None:
    codes, channels = case
    bsz, k, frames = codes.shape
    delays = codebook_delays(k, channels)
    seq = delay_codes(codes, delays, PAD)
    assert seq.shape[-1] == frames + k // channels  # = max_new_tokens + 1
    np.testing.assert_array_equal(undo_delay_pattern(seq, delays, frames), codes)
    np.testing.assert_array_equal(
        np.array(undo_delay_pattern(mx.array(seq), delays, frames)), codes
    )
    # transformers' own undo: drop every pad and reshape.
    np.testing.assert_array_equal(seq[seq != PAD].reshape(bsz, k, -1), codes)
    # The pattern built from the start token forces exactly the slots delay_codes pads.
    _, pattern = build_delay_pattern_mask(np.full((bsz, k, 1), PAD), PAD, seq.shape[-1], channels)
    if seq.shape[-1] < 2 * (k // channels) - 1:
        # Upstream quirk: below this length transformers builds no pattern at all (all -1,
        # codebooks undelayed). generate_codes always delays; only 1-2 frame requests differ.
        assert (pattern == -1).all()
        return
    garbage = np.where(seq == PAD, 7, seq)
    np.testing.assert_array_equal(apply_delay_pattern_mask(garbage, pattern), seq)
    np.testing.assert_array_equal(
        np.array(apply_delay_pattern_mask(mx.array(garbage), mx.array(pattern))), seq
    )


def test_delays() -> None:
    assert codebook_delays(4, 1) == [0, 1, 2, 3]
    assert codebook_delays(8, 2) == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize(("prompt_len", "max_length"), [(1, 9), (3, 12), (1, 5), (2, 3)])
def test_build_delay_pattern_mask_matches_transformers(
    torch: Any, channels: int, prompt_len: int, max_length: int
) -> None:
    from transformers import MusicgenForCausalLM

    k = 4 * channels
    # Only these attributes are read: an unbound call avoids building a model.
    fake: Any = SimpleNamespace(
        num_codebooks=k,
        config=SimpleNamespace(audio_channels=channels),
        generation_config=SimpleNamespace(max_length=max_length),
    )
    prompt = np.random.default_rng(prompt_len).integers(0, PAD, (2, k, prompt_len))
    prompt[..., 0] = PAD
    ref_ids, ref_mask = MusicgenForCausalLM.build_delay_pattern_mask(
        fake, torch.from_numpy(prompt).reshape(2 * k, -1), PAD, max_length
    )
    ids, mask = build_delay_pattern_mask(prompt, PAD, max_length, channels)
    np.testing.assert_array_equal(ids.reshape(2 * k, -1), ref_ids.numpy())
    np.testing.assert_array_equal(mask.reshape(2 * k, -1), ref_mask.numpy())
    filled = np.random.default_rng(0).integers(0, PAD, (2 * k, max_length))
    np.testing.assert_array_equal(
        apply_delay_pattern_mask(filled, mask.reshape(2 * k, -1)),
        MusicgenForCausalLM.apply_delay_pattern_mask(torch.from_numpy(filled), ref_mask).numpy(),
    )


def _np_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """transformers TopKLogitsWarper."""
    kth = np.sort(scores, axis=-1)[..., -min(k, scores.shape[-1]), None]
    return np.where(scores < kth, -np.inf, scores)


def _np_top_p(scores: np.ndarray, p: float) -> np.ndarray:
    """transformers TopPLogitsWarper: ascending sort, cumulative softmax, scatter back."""
    order = np.argsort(scores, axis=-1, kind="stable")
    sorted_ = np.take_along_axis(scores, order, axis=-1)
    e = np.exp(sorted_ - sorted_.max(axis=-1, keepdims=True))
    cum = np.cumsum(e / e.sum(axis=-1, keepdims=True), axis=-1)
    remove_sorted = cum <= 1 - p
    remove_sorted[..., -1] = False
    remove = np.zeros_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, -np.inf, scores)


@pytest.mark.parametrize("k", [1, 5, 50, 64, 100])
def test_top_k_matches_transformers_warper(k: int) -> None:
    scores = np.random.default_rng(k).standard_normal((3, 4, 64)).astype(np.float32)
    np.testing.assert_array_equal(np.array(top_k_filter(mx.array(scores), k)), _np_top_k(scores, k))


@pytest.mark.parametrize("p", [0.05, 0.3, 0.9, 0.999, 1.0])
def test_top_p_matches_transformers_warper(p: float) -> None:
    scores = 2 * np.random.default_rng(int(p * 1000)).standard_normal((3, 4, 64)).astype(np.float32)
    got = np.array(top_p_filter(mx.array(scores), p))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(_np_top_p(scores, p)))
    np.testing.assert_array_equal(got[np.isfinite(got)], scores[np.isfinite(got)])


def test_same_key_same_sample_and_only_kept_tokens() -> None:
    logits = mx.array(np.random.default_rng(0).standard_normal((2, 4, 256)).astype(np.float32))
    key = mx.random.key(42)
    a = sample_next(logits, key, top_k=5, temperature=0.7)
    b = sample_next(logits, key, top_k=5, temperature=0.7)
    np.testing.assert_array_equal(np.array(a), np.array(b))
    draws = np.stack([np.array(sample_next(logits, mx.random.key(s), top_k=5)) for s in range(30)])
    top5 = np.argsort(np.array(logits), axis=-1)[..., -5:]
    assert (draws[..., None] == top5[None]).any(-1).all()  # never outside the top 5
    assert len(np.unique(draws)) > 5  # and not constant
    greedy = sample_next(logits, None, greedy=True)
    np.testing.assert_array_equal(np.array(greedy), np.argmax(np.array(logits), -1))
    np.testing.assert_array_equal(np.array(sample_next(logits, key, top_k=1)), np.array(greedy))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
    ],
)
def test_bad_sampling_arguments_raise(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        validate_sampling(**kwargs)


def _mono(fixtures_dir: Path) -> tuple[MusicGenDecoder, mx.array, mx.array]:
    d = fixtures_dir / "musicgen_decoder" / "mono"
    config = DecoderConfig.from_composite(json.loads((d / "config.json").read_text()))
    model = load_decoder(config, load_safetensors(d / "decoder.safetensors"))
    with np.load(d / "data.npz") as z:
        return model, mx.array(z["encoder_hidden_states"]), mx.array(z["attention_mask"])


def test_generate_codes_key_determinism_and_errors(fixtures_dir: Path) -> None:
    model, states, mask = _mono(fixtures_dir)
    kw: dict[str, Any] = {"top_k": 8, "temperature": 1.5}
    a = np.array(generate_codes(model, states, mask, 12, key=mx.random.key(3), **kw))
    b = np.array(generate_codes(model, states, mask, 12, key=3, **kw))
    c = np.array(generate_codes(model, states, mask, 12, key=4, **kw))
    assert a.shape == (2, 4, 12) and a.max() < 32 and a.min() >= 0
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()
    # top_k=1 sampling is greedy decoding.
    g = np.array(generate_codes(model, states, mask, 12, greedy=True))
    np.testing.assert_array_equal(
        np.array(generate_codes(model, states, mask, 12, key=0, top_k=1)), g
    )
    with pytest.raises(InvalidInputError, match="key"):
        generate_codes(model, states, mask, 4)
    with pytest.raises(InvalidInputError, match="num_frames"):
        generate_codes(model, states, mask, 0, greedy=True)
    with pytest.raises(InvalidInputError, match="temperature"):
        generate_codes(model, states, mask, 4, key=0, temperature=0)


def test_no_guidance_uses_the_conditional_branch_only(fixtures_dir: Path) -> None:
    model, states, mask = _mono(fixtures_dir)
    # Scale <= 1 disables CFG (as transformers); scale 1 is the conditional logits either way.
    one = np.array(generate_codes(model, states, mask, 10, guidance_scale=1.0, greedy=True))
    none = np.array(generate_codes(model, states, mask, 10, guidance_scale=None, greedy=True))
    np.testing.assert_array_equal(one, none)
