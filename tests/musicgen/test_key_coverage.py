"""Our weight mapping covers the full-size MusicGen checkpoints key for key.

tests/fixtures/musicgen_keys/<variant>.json (written by tools/musicgen_keys.py) holds the
``state_dict()`` key names and shapes of transformers' ``MusicgenForConditionalGeneration`` for
the six text variants (small / medium / large, mono 4 codebooks and stereo 8; T5-base text encoder
and the mono encodec_32khz codec for all), built on torch's meta device. Here, without torch,
every upstream tensor becomes a lazy MLX array of its shape (nothing is allocated: no test ever
evaluates one), goes through the conversion path (``convert.split_components``: decoder
``sanitize``, T5 ``sanitize(prefix="text_encoder.")``, EnCodec ``sanitize(prefix=
"audio_encoder.")``) and must fill every parameter of our models built from the same config, with
the same shapes; and removing any upstream tensor must break that, except the few that are
legitimately redundant. The live test rebuilds the key lists with transformers and compares.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core import encodec, t5
from audiogen_core.errors import MissingWeightsError

import mlx.core as mx
import mlx.nn as nn
import pytest

from audiogen_musicgen import convert
from audiogen_musicgen import weights as decoder_weights
from audiogen_musicgen.config import DecoderConfig

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "musicgen_keys"
# variant: (layers, hidden, heads, codebooks, audio channels)
VARIANTS = {
    "small": (24, 1024, 16, 4, 1),
    "medium": (48, 1536, 24, 4, 1),
    "large": (48, 2048, 32, 4, 1),
    "stereo-small": (24, 1024, 16, 8, 2),
    "stereo-medium": (48, 1536, 24, 8, 2),
    "stereo-large": (48, 2048, 32, 8, 2),
    # Melody (MusicgenMelodyForConditionalGeneration): no cross-attention, chroma projection.
    "melody": (48, 1536, 24, 4, 1),
    "melody-large": (48, 2048, 32, 4, 1),
    "stereo-melody": (48, 1536, 24, 8, 2),
    "stereo-melody-large": (48, 2048, 32, 8, 2),
}
MELODY = tuple(v for v in VARIANTS if "melody" in v)
# Which sanitizer owns which upstream keys (as convert.split_components routes them).
SANITIZERS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, mx.array]], dict[str, Any]]]] = {
    "decoder": (
        ("decoder.", "enc_to_dec_proj.", "audio_enc_to_dec_proj."),
        lambda w: decoder_weights.sanitize(w, source="test"),
    ),
    "t5": (("text_encoder.",), lambda w: t5.sanitize(w, "text_encoder.")),
    "encodec": (("audio_encoder.",), lambda w: encodec.sanitize(w, "audio_encoder.")),
}
TIED = ("text_encoder.shared.weight", "text_encoder.encoder.embed_tokens.weight")
TRAINING_BUFFERS = (".inited", ".cluster_size", ".embed_avg")  # EnCodec k-means state


@cache
def _fixture(variant: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{variant}.json").read_text())
    return data


@cache
def _models(variant: str) -> dict[str, nn.Module]:
    configs = convert.component_configs(_fixture(variant)["config"], variant)
    return convert.build_models(configs, variant)


def _lazy(keys: dict[str, list[int]]) -> dict[str, mx.array]:
    """Unevaluated zeros of each shape: shapes propagate through the sanitizers, memory does not
    get allocated (musicgen-large's 3.3 B parameters would need 13 GB)."""
    return {k: mx.zeros(shape, dtype=mx.float16) for k, shape in keys.items()}


def _owner(key: str) -> str:
    return next(part for part, (prefixes, _) in SANITIZERS.items() if key.startswith(prefixes))


def _check_component(variant: str, part: str, upstream: dict[str, mx.array]) -> None:
    prefixes, sanitize = SANITIZERS[part]
    mine = {k: v for k, v in upstream.items() if k.startswith(prefixes)}
    convert.check_parameters(_models(variant)[part], sanitize(mine), f"{variant}/{part}")


def _representatives(keys: list[str]) -> list[str]:
    """The first and last key of every name pattern (layer / codebook indices as N)."""
    groups: dict[str, list[str]] = {}
    for key in sorted(keys, key=lambda k: [int(t) if t.isdigit() else t for t in k.split(".")]):
        groups.setdefault(re.sub(r"\.\d+(?=\.)", ".N", key), []).append(key)
    return sorted({k for g in groups.values() for k in (g[0], g[-1])})


@pytest.mark.parametrize("variant", VARIANTS)
def test_fixture_configs_are_the_published_shapes(variant: str) -> None:
    layers, hidden, heads, codebooks, channels = VARIANTS[variant]
    data = _fixture(variant)
    config = data["config"]
    assert data["repo"] == f"facebook/musicgen-{variant}"
    dec = DecoderConfig.from_composite(config)
    assert (dec.num_hidden_layers, dec.hidden_size, dec.num_attention_heads) == (
        layers,
        hidden,
        heads,
    )
    assert (dec.num_codebooks, dec.audio_channels, dec.ffn_dim) == (codebooks, channels, 4 * hidden)
    assert (dec.vocab_size, dec.pad_token_id, dec.bos_token_id) == (2048, 2048, 2048)
    text = t5.T5Config.from_dict(config["text_encoder"])
    assert (text.d_model, text.num_layers, text.num_heads, text.d_ff) == (768, 12, 12, 3072)
    codec = encodec.EncodecConfig.from_dict(config["audio_encoder"])
    assert (codec.sampling_rate, codec.frame_rate, codec.audio_channels) == (32000, 50, 1)
    assert codec.codebook_size == 2048 and codec.num_quantizers == 4 == codebooks // channels
    assert dec.has_enc_to_dec_proj and data["keys"]["enc_to_dec_proj.weight"] == [hidden, 768]
    assert data["keys"][f"decoder.lm_heads.{codebooks - 1}.weight"] == [2048, hidden]
    assert f"decoder.lm_heads.{codebooks}.weight" not in data["keys"]
    if variant in MELODY:
        assert dec.is_melody and not dec.cross_attention
        assert (dec.num_chroma, dec.chroma_length) == (12, 235)
        assert data["keys"]["audio_enc_to_dec_proj.weight"] == [hidden, 12]
        assert not any("encoder_attn" in k for k in data["keys"])
    else:
        assert not dec.is_melody and dec.cross_attention


@pytest.mark.parametrize("variant", VARIANTS)
def test_mapping_fills_every_parameter_with_the_right_shape(variant: str) -> None:
    upstream = _lazy(_fixture(variant)["keys"])
    assert {_owner(k) for k in upstream} == set(SANITIZERS)  # every key has an owner
    parts = convert.split_components(upstream, variant)  # the conversion path itself
    models = _models(variant)
    for part, model in models.items():
        convert.check_parameters(model, parts[part], f"{variant}/{part}")
    _, hidden, _, codebooks, _ = VARIANTS[variant]
    dec = parts["decoder"]
    assert dec["embed_tokens.weight"].shape == (codebooks * 2049, hidden)
    assert dec["lm_heads.weight"].shape == (codebooks * 2048, hidden)
    assert dec["layers.0.self_attn.qkv_proj.weight"].shape == (3 * hidden, hidden)
    # Conv layouts were changed, not just renamed: (out, in, k) -> (out, k, in).
    up = _fixture(variant)["keys"]
    first = "encoder.layers.0.conv"
    assert up[f"audio_encoder.{first}.parametrizations.weight.original1"] == [64, 1, 7]
    assert parts["encodec"][f"{first}.weight"].shape == (64, 7, 1)


@pytest.mark.parametrize("variant", ["small", "stereo-large"])
def test_legacy_weight_norm_names_map_too(variant: str) -> None:
    """Hub checkpoints saved by transformers 4.3x name EnCodec's weight norm weight_g/weight_v."""
    legacy = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in _fixture(variant)["keys"].items()
    }
    assert any(k.endswith(".weight_g") for k in legacy)
    _check_component(variant, "encodec", _lazy(legacy))


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_upstream_key_is_consumed(variant: str) -> None:
    """Removing any upstream tensor makes loading fail, except the redundant ones: one of the two
    tied T5 embedding names, and EnCodec's k-means training buffers."""
    keys = _fixture(variant)["keys"]
    upstream = _lazy(keys)
    # Every key for small (~2 s); the first and last of each name pattern for the others.
    chosen = sorted(upstream) if variant == "small" else _representatives(list(upstream))
    for key in chosen:
        without = {k: v for k, v in upstream.items() if k != key}
        if key in TIED or key.endswith(TRAINING_BUFFERS):
            _check_component(variant, _owner(key), without)  # still complete
            continue
        with pytest.raises(MissingWeightsError):
            _check_component(variant, _owner(key), without)
    # The tied pair really is one tensor shape, so either name alone is enough.
    assert keys[TIED[0]] == keys[TIED[1]]
    redundant = [k for k in keys if k in TIED or k.endswith(TRAINING_BUFFERS)]
    assert len(redundant) == 2 + 3 * 4  # both tied names, 3 buffers x 4 quantizers


@pytest.mark.parametrize("variant", ["small", "stereo-medium"])
def test_unknown_upstream_keys_are_rejected(variant: str) -> None:
    upstream = _lazy(_fixture(variant)["keys"])
    stray = {**upstream, "decoder.model.decoder.layers.0.extra.weight": mx.zeros((4,))}
    with pytest.raises(MissingWeightsError, match="extra"):
        _check_component(variant, "decoder", stray)
    with pytest.raises(MissingWeightsError, match="style_proj"):
        convert.split_components({**upstream, "style_proj.weight": mx.zeros((4,))}, variant)


def _tool() -> ModuleType:
    path = ROOT / "tools" / "musicgen_keys.py"
    spec = importlib.util.spec_from_file_location("musicgen_keys_tool", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_live_key_lists_match_transformers(torch: ModuleType) -> None:
    tool = _tool()
    assert set(tool.VARIANTS) == set(VARIANTS)
    for variant in VARIANTS:
        live = tool.upstream_keys(torch, variant)
        committed = _fixture(variant)
        assert live["keys"] == committed["keys"], variant
        for section in ("decoder", "text_encoder", "audio_encoder"):
            assert (
                json.loads(json.dumps(live["config"][section], default=str))
                == (committed["config"][section])
            ), (variant, section)
