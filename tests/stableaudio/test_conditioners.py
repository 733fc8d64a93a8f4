"""Stable Audio conditioners vs diffusers' ``StableAudioPipeline`` (T5 + ``StableAudioProjectionModel``)
and stable-audio-tools' ``NumberConditioner``.

Fixture tests (no torch) use tests/fixtures/stableaudio_dit/conditioners: a tiny T5, its tokenizer
(model_max_length 10, so the first prompt is truncated), and two projection models (a Linear text
projection when the widths differ, the identity when equal). The expected values are what
diffusers' pipeline handed its transformer with CFG 7: ``[uncond; cond]`` cross-attention
conditions and global conditions, without a negative prompt (uncond = zeros) and with one.
``sat_small`` holds a stable-audio-tools ``seconds_total`` conditioner (small has no start).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

from audiogen_core.errors import InvalidInputError
from audiogen_core.t5 import T5Encoder
from audiogen_core.tokenizer import T5Tokenizer
from audiogen_core.weights import load_safetensors

import mlx.core as mx
import numpy as np
import pytest

from audiogen_stableaudio.conditioners import (
    Conditioning,
    StableAudioConditioners,
    classifier_free,
)
from audiogen_stableaudio.config import ConditioningConfig
from audiogen_stableaudio.weights import load_conditioners

ATOL = 1e-4  # float32
FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "stableaudio_dit"
COND = FIXTURE / "conditioners"


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _projection(name: str, max_length: int) -> StableAudioConditioners:
    d = COND / name
    config = ConditioningConfig.from_diffusers(
        json.loads((d / "config.json").read_text()), max_length=max_length
    )
    path = d / "diffusion_pytorch_model.safetensors"
    return load_conditioners(config, load_safetensors(path), source=str(path))


def _encode(
    conditioners: StableAudioConditioners,
    t5: T5Encoder,
    tokenizer: T5Tokenizer,
    prompts: list[str],
    start: float,
    end: float,
) -> Conditioning:
    ids, mask = tokenizer(prompts, max_length=conditioners.config.max_length)
    return conditioners(
        t5, mx.array(ids), mx.array(mask), {"seconds_start": start, "seconds_total": end}
    )


@pytest.mark.parametrize("projection", ["linear", "identity"])
@pytest.mark.parametrize("case", ["plain", "negative"])
def test_pipeline_conditioning_matches_diffusers(projection: str, case: str) -> None:
    cases = json.loads((COND / "cases.json").read_text())
    negative, start, end = cases["cases"][case]
    conditioners = _projection(projection, cases["max_length"])
    assert ("text_projection" in conditioners) == (projection == "linear")
    t5 = T5Encoder.from_pretrained(COND / "t5")
    tokenizer = T5Tokenizer.from_pretrained(COND / "tokenizer")
    cond = _encode(conditioners, t5, tokenizer, cases["prompts"], start, end)
    uncond = None
    if negative is not None:
        uncond = _encode(conditioners, t5, tokenizer, negative, start, end)
    batch = classifier_free(cond, uncond)
    want = _npz(COND / "data.npz")
    prefix = f"{projection}_{case}_"
    np.testing.assert_allclose(
        np.array(batch.cross_attn_cond), want[prefix + "cross_attn_cond"], atol=ATOL, rtol=0
    )
    assert batch.global_cond is not None
    np.testing.assert_allclose(
        np.array(batch.global_cond), want[prefix + "global_cond"], atol=ATOL, rtol=0
    )
    # Sequence = max_length prompt tokens (pads zeroed) + start + total; uncond first.
    assert batch.cross_attn_cond.shape[1] == cases["max_length"] + 2
    if negative is None:
        assert not np.array(batch.cross_attn_cond[:2]).any()
    assert np.array(batch.cross_attn_mask)[2:, -2:].all()


def test_sat_small_number_conditioner_and_assembly() -> None:
    config = ConditioningConfig.from_dict(
        json.loads((FIXTURE / "sat_small" / "model_config.json").read_text())
    )
    assert config.number_ids == ("seconds_total",)  # read from the config: no seconds_start
    assert config.cross_attn_cond_ids == ("prompt", "seconds_total")
    assert (config.max_length, config.global_cond_dim) == (6, 24)
    path = FIXTURE / "sat_small" / "model.safetensors"
    weights = load_safetensors(path)
    conditioners = load_conditioners(config, weights, dtype=mx.float32, source=str(path))
    assert "text_projection" in conditioners  # t5-base (768) != cond_dim: proj_out Linear
    data = _npz(FIXTURE / "sat_small" / "data.npz")
    numbers = conditioners.encode_numbers({"seconds_total": data["seconds_total"]}, batch=2)
    got = np.array(numbers["seconds_total"])
    np.testing.assert_allclose(got, data["seconds_total_embedding"], atol=ATOL, rtol=0)
    text = mx.ones((2, 6, 24))
    cond = conditioners.assemble(text, mx.ones((2, 6), dtype=mx.int32), numbers)
    assert cond.cross_attn_cond.shape == (2, 7, 24)
    np.testing.assert_array_equal(np.array(cond.cross_attn_cond[:, -1:]), got)
    assert cond.global_cond is not None
    np.testing.assert_array_equal(np.array(cond.global_cond), got[:, 0])


def test_number_clamping_and_broadcast() -> None:
    conditioners = _projection("linear", 10)
    out = conditioners.encode_numbers({"seconds_start": [0.0, -5.0], "seconds_total": 600.0}, 2)
    start, total = np.array(out["seconds_start"]), np.array(out["seconds_total"])
    np.testing.assert_array_equal(start[0], start[1])  # -5 clamps to min 0
    np.testing.assert_array_equal(total[0], total[1])  # one value broadcast to the batch
    at_max = np.array(
        conditioners.encode_numbers({"seconds_start": 0, "seconds_total": 512}, 1)["seconds_total"]
    )
    np.testing.assert_array_equal(total[:1], at_max)  # 600 clamps to max 512


def test_bad_inputs() -> None:
    conditioners = _projection("linear", 10)
    with pytest.raises(InvalidInputError, match="seconds_start"):
        conditioners.encode_numbers({"seconds_total": 1.0}, 1)
    with pytest.raises(InvalidInputError, match="unknown"):
        conditioners.encode_numbers({"seconds_start": 0, "seconds_total": 1, "bpm": 120}, 1)
    with pytest.raises(InvalidInputError, match="finite"):
        conditioners.encode_numbers({"seconds_start": float("nan"), "seconds_total": 1}, 1)
    with pytest.raises(InvalidInputError, match="batch of 3"):
        conditioners.encode_numbers({"seconds_start": [1, 2], "seconds_total": 1}, 3)
    with pytest.raises(InvalidInputError, match="max_length 10"):
        conditioners.pad(mx.zeros((1, 11), dtype=mx.int32), mx.ones((1, 11), dtype=mx.int32))
    with pytest.raises(InvalidInputError):
        ConditioningConfig.from_dict({"model": {"conditioning": {"configs": []}}})
    with pytest.raises(InvalidInputError, match="clap"):
        ConditioningConfig.from_dict(
            {"model": {"conditioning": {"configs": [{"id": "prompt", "type": "clap_text"}]}}}
        )


def test_live_projection_model(torch: ModuleType) -> None:
    """diffusers' ``StableAudioProjectionModel`` forward on fresh random weights."""
    import importlib.util

    path = FIXTURE.parents[2] / "tools" / "fixtures" / "stableaudio_dit.py"
    spec = importlib.util.spec_from_file_location("stableaudio_dit_builder", path)
    assert spec and spec.loader
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    reference = builder.make_projection(torch, 20, 28, seed=21)
    weights = {k: mx.array(v.detach().numpy()) for k, v in reference.state_dict().items()}
    config = ConditioningConfig.from_diffusers(dict(reference.config), max_length=5)
    ours = load_conditioners(config, weights)
    g = torch.Generator().manual_seed(22)
    text = torch.randn(2, 5, 20, generator=g)
    start, end = torch.tensor([0.0, 300.0]), torch.tensor([47.0, 700.0])
    with torch.no_grad():
        want = reference(text_hidden_states=text, start_seconds=start, end_seconds=end)
    got_text = ours.text_projection(mx.array(text.numpy()))
    np.testing.assert_allclose(np.array(got_text), want.text_hidden_states.numpy(), atol=ATOL)
    numbers = ours.encode_numbers(
        {"seconds_start": start.numpy(), "seconds_total": end.numpy()}, batch=2
    )
    for ours_key, theirs in (
        ("seconds_start", want.seconds_start_hidden_states),
        ("seconds_total", want.seconds_end_hidden_states),
    ):
        np.testing.assert_allclose(np.array(numbers[ours_key]), theirs.numpy(), atol=ATOL, rtol=0)
