"""Stable Audio DiT vs diffusers' ``StableAudioDiTModel`` and stable-audio-tools'
``DiffusionTransformer``; weight-key coverage of the full-size checkpoints.

Fixture tests (no torch) use tests/fixtures/stableaudio_dit (tools/fixtures/stableaudio_dit.py):
- ``diffusers_dit``: 1.0's layout (global condition, cross-attention K/V heads fewer than query
  heads), diffusers keys; outputs without and with ``encoder_attention_mask``;
- ``sat_small``: small's layout (qk_norm "ln", condition tokens projected to the width, rotary on
  32 of 64 head dims), stable-audio-tools keys. diffusers' class cannot express small: its
  attention has no q/k LayerNorm (``StableAudioDiTBlock`` builds ``Attention`` without
  ``qk_norm``), so small's reference is stable-audio-tools.
- ``keys``: full-size upstream key lists (meta device) that our mapping must consume exactly.
Live tests rebuild fresh random models with torch at head dim 64 (partial rotary, GQA).
"""

from __future__ import annotations

import importlib.util
import json
import os
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core.errors import InvalidInputError, MissingWeightsError, WeightsError
from audiogen_core.weights import load_safetensors

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from audiogen_stableaudio.conditioners import StableAudioConditioners
from audiogen_stableaudio.config import ConditioningConfig, DiTConfig
from audiogen_stableaudio.dit import StableAudioDiT
from audiogen_stableaudio.weights import (
    detect_layout,
    load_dit,
    sanitize_conditioners,
    sanitize_dit,
)

ATOL = 1e-4  # float32 outputs of order 1
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "stableaudio_dit"


def _builder() -> ModuleType:
    path = ROOT / "tools" / "fixtures" / "stableaudio_dit.py"
    spec = importlib.util.spec_from_file_location("stableaudio_dit_builder", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _run(model: StableAudioDiT, data: dict[str, Any], masked: bool = False) -> np.ndarray:
    out = model(
        mx.array(np.asarray(data["x"])),
        mx.array(np.asarray(data["t"])),
        mx.array(np.asarray(data["cross_attn_cond"])),
        mx.array(np.asarray(data["cross_attn_mask"])) if masked else None,
        mx.array(np.asarray(data["global_cond"])),
    )
    return np.array(out)


def _load_fixture(name: str, config_file: str, weights_file: str) -> StableAudioDiT:
    d = FIXTURE / name
    config = DiTConfig.from_dict(json.loads((d / config_file).read_text()))
    path = d / weights_file
    return load_dit(config, load_safetensors(path), dtype=mx.float32, source=str(path))


def test_diffusers_layout_matches_diffusers() -> None:
    model = _load_fixture("diffusers_dit", "config.json", "diffusion_pytorch_model.safetensors")
    data = _npz(FIXTURE / "diffusers_dit" / "data.npz")
    assert model.config.num_key_value_heads < model.config.num_heads  # GQA exercised
    out = _run(model, data)
    assert np.abs(data["out"]).max() > 0.5  # conditioning reaches the output (no zero init)
    np.testing.assert_allclose(out, data["out"], atol=ATOL, rtol=0)
    masked = _run(model, data, masked=True)
    np.testing.assert_allclose(masked, data["out_masked"], atol=ATOL, rtol=0)
    assert np.abs(masked - out).max() > 1e-3  # the mask does something on the padded row


def test_sat_small_layout_matches_stable_audio_tools() -> None:
    model = _load_fixture("sat_small", "model_config.json", "model.safetensors")
    cfg = model.config
    assert cfg.qk_norm == "ln" and cfg.cross_attention_dim == cfg.embed_dim
    assert cfg.rotary_dim < cfg.head_dim  # partial rotary exercised
    data = _npz(FIXTURE / "sat_small" / "data.npz")
    np.testing.assert_allclose(_run(model, data), data["out"], atol=ATOL, rtol=0)


def test_output_depends_on_every_input() -> None:
    model = _load_fixture("diffusers_dit", "config.json", "diffusion_pytorch_model.safetensors")
    data = _npz(FIXTURE / "diffusers_dit" / "data.npz")
    base = _run(model, data)
    for key in ("x", "t", "cross_attn_cond", "global_cond"):
        changed = dict(data, **{key: data[key] + 0.5})
        assert np.abs(_run(model, changed) - base).max() > 1e-3, key


def test_configs_agree_across_layouts() -> None:
    diffusers = json.loads((FIXTURE / "keys" / "diffusers-1.0.json").read_text())
    sat = json.loads((FIXTURE / "keys" / "sat-1.0.json").read_text())
    a = DiTConfig.from_dict(diffusers["transformer_config"])
    b = DiTConfig.from_dict(sat["model_config"])
    assert a == b == DiTConfig()
    assert (a.head_dim, a.rotary_dim, a.num_key_value_heads) == (64, 32, 12)
    small = DiTConfig.from_dict(
        json.loads((FIXTURE / "keys" / "sat-small.json").read_text())["model_config"]
    )
    assert (small.embed_dim, small.depth, small.num_heads, small.head_dim) == (1024, 16, 8, 128)
    assert (small.cross_attention_dim, small.num_key_value_heads, small.global_cond_dim) == (
        1024,
        8,
        768,
    )
    assert (small.qk_norm, small.rotary_dim, small.sample_size) == ("ln", 64, 256)


@pytest.mark.parametrize(
    "option",
    [
        {"global_cond_type": "adaLN"},
        {"patch_size": 2},
        {"attn_kwargs": {"qk_norm": "l2"}},
        {"attn_kwargs": {"differential": True}},
        {"ff_kwargs": {"mult": 2}},
        {"num_heads": 7},
    ],
)
def test_unsupported_sat_options_are_refused(option: dict[str, Any]) -> None:
    base = {"io_channels": 8, "embed_dim": 64, "depth": 1, "num_heads": 1, "cond_token_dim": 16}
    with pytest.raises(InvalidInputError):
        DiTConfig.from_stable_audio_tools({**base, **option})


@cache
def _keys(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURE / "keys" / f"{name}.json").read_text())
    return data


def _lazy(keys: dict[str, list[int]]) -> dict[str, mx.array]:
    # Unevaluated zeros: shapes flow through the sanitizers without allocating 1 B parameters.
    return {k: mx.zeros(shape, dtype=mx.float16) for k, shape in keys.items()}


def _assert_fills(model: nn.Module, weights: dict[str, mx.array]) -> None:
    flat: dict[str, mx.array] = dict(tree_flatten(model.parameters()))
    params = {k: tuple(v.shape) for k, v in flat.items()}
    got = {k: tuple(v.shape) for k, v in weights.items()}
    assert sorted(params.keys() - got.keys()) == [], "parameters left unfilled"
    assert sorted(got.keys() - params.keys()) == [], "upstream keys not consumed"
    assert got == params


def _full_size(name: str) -> tuple[DiTConfig, ConditioningConfig, dict[str, Any], dict[str, Any]]:
    table = _keys(name)
    if name.startswith("diffusers"):
        dit_config = DiTConfig.from_dict(table["transformer_config"])
        cond_config = ConditioningConfig.from_diffusers(table["projection_config"])
        return dit_config, cond_config, table["transformer"], table["projection_model"]
    keys = table["keys"]
    dit_config = DiTConfig.from_dict(table["model_config"])
    cond_config = ConditioningConfig.from_dict(table["model_config"])
    return dit_config, cond_config, keys, keys


@pytest.mark.parametrize("name", ["diffusers-1.0", "sat-1.0", "sat-small"])
def test_full_size_keys_fill_every_parameter(name: str) -> None:
    dit_config, cond_config, dit_keys, cond_keys = _full_size(name)
    expected = "sat" if name.startswith("sat") else "diffusers"
    assert detect_layout(dit_keys) == expected
    _assert_fills(StableAudioDiT(dit_config), sanitize_dit(_lazy(dit_keys), config=dit_config))
    conditioners = StableAudioConditioners(cond_config)
    _assert_fills(conditioners, sanitize_conditioners(_lazy(cond_keys), config=cond_config))
    numbers = set(cond_config.number_ids)
    assert numbers == (
        {"seconds_total"} if name == "sat-small" else {"seconds_start", "seconds_total"}
    )
    if name == "sat-small":
        assert cond_config.max_length == 64 and cond_config.global_cond_dim == 768
    else:
        assert cond_config.max_length == 128 and cond_config.global_cond_dim == 1536


@pytest.mark.parametrize("name", ["diffusers-1.0", "sat-small"])
def test_every_upstream_dit_key_is_needed(name: str) -> None:
    dit_config, _, dit_keys, _ = _full_size(name)
    dit_keys = {k: v for k, v in dit_keys.items() if not k.startswith("conditioner.")}
    model = StableAudioDiT(dit_config)
    params = set(dict(tree_flatten(model.parameters())))
    optional = ("transformer.rotary_pos_emb.inv_freq",)  # a buffer we recompute
    for key in list(dit_keys)[:: max(1, len(dit_keys) // 60)]:
        if key.endswith(optional):
            continue
        rest = {k: v for k, v in dit_keys.items() if k != key}
        try:
            got = sanitize_dit(_lazy(rest), config=dit_config)
        except MissingWeightsError:
            continue
        assert params - got.keys(), f"dropping {key} went unnoticed"


def test_missing_weight_names_the_file(tmp_path: Path) -> None:
    src = FIXTURE / "diffusers_dit"
    weights = load_safetensors(src / "diffusion_pytorch_model.safetensors")
    config = DiTConfig.from_dict(json.loads((src / "config.json").read_text()))
    weights.pop("transformer_blocks.1.attn2.to_v.weight")
    with pytest.raises(MissingWeightsError, match=r"broken\.safetensors"):
        load_dit(config, weights, source=str(tmp_path / "broken.safetensors"))
    weights = load_safetensors(src / "diffusion_pytorch_model.safetensors")
    weights.pop("proj_out.weight")
    with pytest.raises(MissingWeightsError, match=r"x\.safetensors.*proj_out"):
        load_dit(config, weights, source="x.safetensors")


def test_sat_rotary_mismatch_is_refused() -> None:
    path = FIXTURE / "sat_small" / "model.safetensors"
    weights = load_safetensors(path)
    weights["model.model.transformer.rotary_pos_emb.inv_freq"] = mx.zeros((8,))
    config = DiTConfig.from_dict(
        json.loads((FIXTURE / "sat_small" / "model_config.json").read_text())
    )
    with pytest.raises(WeightsError, match="rotary"):
        load_dit(config, weights, source=str(path))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("x", np.zeros((2, 3, 16), np.float32)),
        ("t", np.zeros((3,), np.float32)),
        ("cross_attn_cond", np.zeros((2, 7, 5), np.float32)),
        ("global_cond", np.zeros((2, 5), np.float32)),
        ("cross_attn_mask", np.ones((2, 6), bool)),
    ],
)
def test_bad_input_shapes(field: str, value: np.ndarray) -> None:
    model = _load_fixture("diffusers_dit", "config.json", "diffusion_pytorch_model.safetensors")
    data = dict(_npz(FIXTURE / "diffusers_dit" / "data.npz"), **{field: value})
    with pytest.raises(InvalidInputError, match=field):
        _run(model, data, masked=True)


def _sat_or_skip(builder: ModuleType) -> None:
    try:
        builder.import_sat()
    except ImportError as e:
        # CI installs it (.ci/run) and requires it, like torch; locally it is optional.
        if os.environ.get("AUDIOGEN_REQUIRE_TORCH", "") not in ("", "0"):
            pytest.fail(f"stable-audio-tools is required here but not importable: {e}")
        pytest.skip(f"stable-audio-tools not importable (AUDIOGEN_SAT_PATH): {e}")


def _torch_weights(module: Any, prefix: str = "") -> dict[str, mx.array]:
    return {prefix + k: mx.array(v.detach().numpy()) for k, v in module.state_dict().items()}


def test_live_diffusers_head64_gqa(torch: ModuleType) -> None:
    builder = _builder()
    config = {
        **builder.DIFFUSERS_TINY,
        "attention_head_dim": 64,
        "num_attention_heads": 4,
        "num_key_value_attention_heads": 2,
        "cross_attention_dim": 128,
        "time_proj_dim": 256,
    }
    reference = builder.make_diffusers_dit(torch, config, seed=11)
    inputs = builder.dit_inputs(torch, channels=8, cond=24, glob=48, seed=12, frames=21)
    model = load_dit(DiTConfig.from_dict(dict(reference.config)), _torch_weights(reference))
    assert model.config.rotary_dim == 32 < model.config.head_dim
    for masked in (False, True):
        want = builder.run_diffusers_dit(torch, reference, inputs, masked=masked).numpy()
        np.testing.assert_allclose(_run(model, inputs, masked), want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("layout", ["small", "1.0"])
def test_live_stable_audio_tools(torch: ModuleType, layout: str) -> None:
    builder = _builder()
    _sat_or_skip(builder)
    kwargs: dict[str, Any] = {
        "io_channels": 8,
        "embed_dim": 128,
        "depth": 2,
        "num_heads": 2,
        "cond_token_dim": 24,
        "global_cond_dim": 24 if layout == "small" else 48,
    }
    if layout == "small":
        kwargs["attn_kwargs"] = {"qk_norm": "ln"}
    else:
        kwargs.update(cond_token_dim=64, project_cond_tokens=False)  # K/V: 1 head of 64
    reference = builder.make_sat_dit(torch, kwargs, seed=13)
    inputs = builder.dit_inputs(
        torch, channels=8, cond=kwargs["cond_token_dim"], glob=kwargs["global_cond_dim"], seed=14
    )
    config = DiTConfig.from_dict(kwargs)
    model = load_dit(config, _torch_weights(reference, "model.model."))
    want = builder.run_sat_dit(torch, reference, inputs).numpy()
    np.testing.assert_allclose(_run(model, inputs), want, atol=ATOL, rtol=0)


def test_live_key_lists_match_upstream(torch: ModuleType) -> None:
    from diffusers import StableAudioDiTModel

    with torch.device("meta"):
        transformer: Any = StableAudioDiTModel()
    keys = {k: list(v.shape) for k, v in transformer.state_dict().items()}
    assert keys == _keys("diffusers-1.0")["transformer"]
    builder = _builder()
    _sat_or_skip(builder)
    dit, _ = builder.import_sat()
    with torch.device("meta"):
        small = dit.DiffusionTransformer(**builder.SAT_SMALL)
    sat_keys = {"model.model." + k: list(v.shape) for k, v in small.state_dict().items()}
    committed = _keys("sat-small")["keys"]
    assert sat_keys == {k: v for k, v in committed.items() if k.startswith("model.model.")}
