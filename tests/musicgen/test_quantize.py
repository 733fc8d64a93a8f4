"""In-memory decoder quantization (``MusicGen.from_pretrained(quantize=…)``) on the tiny
upstream-layout fixture: which layers are quantized, how far the logits move, generation still
works, and a model with nothing to quantize is a clear error."""

from __future__ import annotations

from pathlib import Path

from audiogen_core.errors import InvalidInputError

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from audiogen_musicgen import MusicGen

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "musicgen_pipeline" / "mono"


def _logits(m: MusicGen) -> np.ndarray:
    states, mask = m.encode_text(["lofi beat"])
    ids = mx.array(np.random.default_rng(0).integers(0, 32, (1, 4, 12)), dtype=mx.int32)
    return np.array(m.decoder(ids, states, mask))


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_decoder_stays_close_and_generates(tmp_path: Path, bits: int) -> None:
    full = MusicGen.from_pretrained(FIXTURE, cache_dir=tmp_path)
    quant = MusicGen.from_pretrained(FIXTURE, cache_dir=tmp_path, quantize=bits, group_size=32)
    kinds = {type(m).__name__ for _, m in quant.decoder.named_modules()}
    assert "QuantizedLinear" in kinds
    assert isinstance(quant.decoder.embed_tokens, nn.Embedding)  # embeddings are never quantized
    ref, got = _logits(full), _logits(quant)
    rel = np.abs(got - ref).max() / np.abs(ref).max()
    assert rel < (0.02 if bits == 8 else 0.2), rel
    audio = quant.generate("lofi beat", 0.2, seed=1)
    assert audio.shape == (1, 1, round(0.2 * quant.sample_rate)) and np.isfinite(audio).all()


def test_nothing_to_quantize_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="divisible by 128"):
        MusicGen.from_pretrained(FIXTURE, cache_dir=tmp_path, quantize=8, group_size=128)
