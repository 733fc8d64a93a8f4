"""T5 encoder parity with transformers ``T5EncoderModel`` (models/t5/modeling_t5.py).

Fixture tests replay outputs recorded by tools/fixtures/t5.py; live tests build fresh random
configs on torch CPU. Tolerance: 1e-4 max abs in fp32.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core.errors import (
    CorruptWeightsError,
    InvalidInputError,
    MissingWeightsError,
    WeightsError,
)
from audiogen_core.t5 import T5Config, T5Encoder, _relative_position_buckets, sanitize
from audiogen_core.weights import load_safetensors, save_safetensors

import mlx.core as mx
import numpy as np
import pytest

ATOL = 1e-4


@pytest.fixture(scope="module")
def t5_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "t5"


def _expected(model_dir: Path) -> dict[str, np.ndarray]:
    with np.load(model_dir / "expected.npz") as f:
        return {k: f[k] for k in f.files}


def _run(model: T5Encoder, exp: dict[str, np.ndarray]) -> np.ndarray:
    return np.array(model(exp["input_ids"], exp["attention_mask"]))


@pytest.mark.parametrize("name", ["relu", "gated"])
def test_fixture_hidden_states_match_transformers(t5_dir: Path, name: str) -> None:
    exp = _expected(t5_dir / name)
    assert (exp["attention_mask"] == 0).any(), "fixture batch must contain padding"
    model = T5Encoder.from_pretrained(t5_dir / name)
    out = _run(model, exp)
    assert out.shape == exp["last_hidden_state"].shape
    np.testing.assert_allclose(out, exp["last_hidden_state"], rtol=0, atol=ATOL)


def test_config_follows_feed_forward_proj_not_name(t5_dir: Path) -> None:
    relu = T5Encoder.from_pretrained(t5_dir / "relu").config
    gated = T5Encoder.from_pretrained(t5_dir / "gated").config
    assert (relu.is_gated_act, relu.dense_act_fn) == (False, "relu")
    assert (gated.is_gated_act, gated.dense_act_fn) == (True, "gelu_new")
    assert T5Config(feed_forward_proj="gated-silu").dense_act_fn == "silu"
    assert T5Config(feed_forward_proj="gelu").dense_act_fn == "gelu"


def test_config_from_dict_ignores_unknown_keys() -> None:
    cfg = T5Config.from_dict({"d_model": 16, "num_layers": 1, "architectures": ["x"], "x": 1})
    assert (cfg.d_model, cfg.num_layers) == (16, 1)


@pytest.mark.parametrize("proj", ["gated-gelu-x", "fancy-gelu", "gated-tanhshrink"])
def test_config_rejects_bad_feed_forward_proj(proj: str) -> None:
    with pytest.raises(InvalidInputError, match="feed_forward_proj"):
        T5Config(feed_forward_proj=proj)


def test_padding_does_not_change_valid_positions(t5_dir: Path) -> None:
    """A padded row's valid positions equal the same prompt encoded alone (keys are masked)."""
    exp = _expected(t5_dir / "gated")
    model = T5Encoder.from_pretrained(t5_dir / "gated")
    padded = _run(model, exp)
    for row in range(exp["input_ids"].shape[0]):
        n = int(exp["attention_mask"][row].sum())
        alone = np.array(model(exp["input_ids"][row : row + 1, :n]))
        np.testing.assert_allclose(padded[row, :n], alone[0], rtol=0, atol=1e-5)


def test_sanitize_prefix_decoder_and_tied_embedding(t5_dir: Path) -> None:
    ours = load_safetensors(t5_dir / "relu" / "model.safetensors")
    upstream = {f"text_encoder.{k}": v for k, v in ours.items() if k != "shared.weight"}
    upstream["text_encoder.encoder.embed_tokens.weight"] = ours["shared.weight"]
    upstream["text_encoder.decoder.block.0.layer.0.SelfAttention.q.weight"] = mx.zeros((2, 2))
    upstream["text_encoder.lm_head.weight"] = mx.zeros((2, 2))
    upstream["decoder.model.decoder.layers.0.fc1.weight"] = mx.zeros((2, 2))
    upstream["enc_to_dec_proj.weight"] = mx.zeros((2, 2))
    out = sanitize(upstream, prefix="text_encoder.")
    assert out.keys() == ours.keys()
    assert mx.array_equal(out["shared.weight"], ours["shared.weight"])
    both = dict(ours, **{"encoder.embed_tokens.weight": ours["shared.weight"]})
    assert sanitize(both).keys() == ours.keys()


def test_composite_text_encoder_checkpoint(t5_dir: Path, tmp_path: Path) -> None:
    """A MusicGen-style directory: config.json with a ``text_encoder`` section and
    ``text_encoder.*`` keys among others."""
    src = t5_dir / "gated"
    config = json.loads((src / "config.json").read_text())
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "musicgen", "text_encoder": config, "decoder": {"x": 1}})
    )
    weights = {
        f"text_encoder.{k}": v for k, v in load_safetensors(src / "model.safetensors").items()
    }
    weights["decoder.model.decoder.layers.0.fc1.weight"] = mx.zeros((2, 2))
    save_safetensors(tmp_path / "model.safetensors", weights)
    exp = _expected(src)
    out = _run(T5Encoder.from_pretrained(tmp_path), exp)
    np.testing.assert_allclose(out, exp["last_hidden_state"], rtol=0, atol=ATOL)


def test_sharded_checkpoint(t5_dir: Path, tmp_path: Path) -> None:
    src = t5_dir / "relu"
    shutil.copy(src / "config.json", tmp_path / "config.json")
    weights = load_safetensors(src / "model.safetensors")
    keys = sorted(weights)
    half = len(keys) // 2
    weight_map = {}
    for i, part in enumerate((keys[:half], keys[half:])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_safetensors(tmp_path / name, {k: weights[k] for k in part})
        weight_map.update(dict.fromkeys(part, name))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    exp = _expected(src)
    np.testing.assert_allclose(
        _run(T5Encoder.from_pretrained(tmp_path), exp), exp["last_hidden_state"], atol=ATOL, rtol=0
    )


@pytest.mark.parametrize("dtype", [mx.float16, mx.bfloat16])
def test_half_precision_close_to_fp32(t5_dir: Path, dtype: mx.Dtype) -> None:
    exp = _expected(t5_dir / "gated")
    model = T5Encoder.from_pretrained(t5_dir / "gated", dtype=dtype)
    wo = model.encoder.block[0].layer[1].DenseReluDense.wo.weight
    # transformers keeps ``wo`` in fp32 for fp16 (``_keep_in_fp32_modules``)
    assert wo.dtype == (mx.float32 if dtype == mx.float16 else dtype)
    assert model.shared.weight.dtype == dtype
    out = np.array(model(exp["input_ids"], exp["attention_mask"]).astype(mx.float32))
    np.testing.assert_allclose(out, exp["last_hidden_state"], rtol=0, atol=0.1)


def _copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir(exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    shutil.copy(src / "model.safetensors", dst / "model.safetensors")
    return dst / "model.safetensors"


def test_missing_weight_names_file_and_key(t5_dir: Path, tmp_path: Path) -> None:
    path = _copy_model(t5_dir / "relu", tmp_path)
    weights = load_safetensors(path)
    del weights["encoder.block.1.layer.1.DenseReluDense.wi.weight"]
    save_safetensors(path, weights)
    with pytest.raises(MissingWeightsError, match=r"model\.safetensors.*block\.1\.layer\.1"):
        T5Encoder.from_pretrained(tmp_path)


def test_wrong_shape_names_file(t5_dir: Path, tmp_path: Path) -> None:
    path = _copy_model(t5_dir / "relu", tmp_path)
    weights = load_safetensors(path)
    weights["encoder.final_layer_norm.weight"] = mx.ones((7,))
    save_safetensors(path, weights)
    with pytest.raises(MissingWeightsError, match=r"model\.safetensors.*shape.*final_layer_norm"):
        T5Encoder.from_pretrained(tmp_path)


def test_truncated_safetensors_names_file(t5_dir: Path, tmp_path: Path) -> None:
    path = _copy_model(t5_dir / "relu", tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptWeightsError, match=r"model\.safetensors.*truncated"):
        T5Encoder.from_pretrained(tmp_path)


def test_missing_config_and_weights(t5_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not a directory"):
        T5Encoder.from_pretrained(tmp_path / "nope")
    with pytest.raises(WeightsError, match=r"config\.json"):
        T5Encoder.from_pretrained(tmp_path)
    shutil.copy(t5_dir / "relu" / "config.json", tmp_path / "config.json")
    with pytest.raises(WeightsError, match=r"no model\.safetensors"):
        T5Encoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"d_model": 8, "feed_forward_proj": "bad-gelu"}')
    with pytest.raises(WeightsError, match=r"config\.json.*feed_forward_proj"):
        T5Encoder.from_pretrained(tmp_path)


def test_bad_inputs(t5_dir: Path) -> None:
    model = T5Encoder.from_pretrained(t5_dir / "relu")
    with pytest.raises(InvalidInputError, match="batch, length"):
        model(np.array([1, 2, 3]))
    with pytest.raises(InvalidInputError, match="integers"):
        model(np.array([[1.0, 2.0]]))
    with pytest.raises(InvalidInputError, match="attention_mask shape"):
        model(np.array([[1, 2]]), np.array([[1, 1, 1]]))


def test_relative_position_buckets_match_transformers(torch: ModuleType) -> None:
    from transformers.models.t5.modeling_t5 import T5Attention

    for num_buckets, max_distance in [(32, 128), (16, 24), (8, 16), (64, 256), (20, 50)]:
        length = 2 * max_distance + 37
        pos = torch.arange(length)
        ref = T5Attention._relative_position_bucket(
            pos[None, :] - pos[:, None], True, num_buckets, max_distance
        )
        ours = _relative_position_buckets(length, num_buckets, max_distance)
        np.testing.assert_array_equal(ours, ref.numpy())


LIVE_CONFIGS: list[dict[str, Any]] = [
    dict(num_layers=1, num_heads=2, d_kv=8, d_model=16, d_ff=32, feed_forward_proj="relu"),
    dict(
        num_layers=3,
        num_heads=4,
        d_kv=16,
        d_model=48,
        d_ff=64,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=12,
        feed_forward_proj="relu",
    ),
    dict(
        num_layers=2,
        num_heads=3,
        d_kv=12,
        d_model=24,
        d_ff=40,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=20,
        feed_forward_proj="gated-gelu",
    ),
    dict(num_layers=4, num_heads=6, d_kv=4, d_model=32, d_ff=48, feed_forward_proj="gated-gelu"),
    dict(num_layers=2, num_heads=2, d_kv=8, d_model=16, d_ff=24, feed_forward_proj="gated-silu"),
    dict(num_layers=2, num_heads=2, d_kv=8, d_model=16, d_ff=24, feed_forward_proj="gelu"),
]


@pytest.mark.parametrize("kwargs", LIVE_CONFIGS, ids=lambda k: f"{k['feed_forward_proj']}")
def test_live_random_configs_match_transformers(
    torch: ModuleType, tmp_path: Path, kwargs: dict[str, Any]
) -> None:
    from transformers import T5Config as HFConfig
    from transformers import T5EncoderModel

    vocab = 50
    model = T5EncoderModel(HFConfig(vocab_size=vocab, **kwargs)).eval()
    # Upstream initialises the bias table small; widen it so wrong buckets would show.
    bias = model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias
    torch.nn.init.normal_(bias.weight, std=1.0)
    model.save_pretrained(str(tmp_path))
    length = 45
    ids = torch.randint(0, vocab, (3, length), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, length, dtype=torch.long)
    mask[1, 30:] = 0
    mask[2, 4:] = 0
    with torch.no_grad():
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    ours = T5Encoder.from_pretrained(tmp_path)
    out = np.array(ours(ids.numpy(), mask.numpy()))
    np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL)


def test_live_full_t5_checkpoint_drops_decoder(torch: ModuleType, tmp_path: Path) -> None:
    from transformers import T5Config as HFConfig
    from transformers import T5ForConditionalGeneration

    model = T5ForConditionalGeneration(
        HFConfig(vocab_size=40, d_model=16, d_kv=8, num_heads=2, d_ff=32, num_layers=2)
    ).eval()
    model.save_pretrained(str(tmp_path))
    ids = torch.randint(0, 40, (2, 9))
    with torch.no_grad():
        ref = model.encoder(input_ids=ids).last_hidden_state.numpy()
    out = np.array(T5Encoder.from_pretrained(tmp_path)(ids.numpy()))
    np.testing.assert_allclose(out, ref, rtol=0, atol=ATOL)
