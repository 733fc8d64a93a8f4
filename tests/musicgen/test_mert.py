"""MERT encoder vs transformers' ``HubertModel`` configured like MERT-v1-95M.

MERT's remote code is ``HubertModel`` when its CQT and DeepNorm flags are off (they are for
v1-95M), so HubertModel is the reference. The fixture test (no torch) uses tests/fixtures/mert
(tools/fixtures/mert.py): a tiny random model in MERT's own key layout (``weight_g``/``weight_v``
positional conv, ``masked_spec_embed``) and HubertModel's outputs. Live tests rebuild random
models with torch: tiny variants of every layout switch we implement, and one full-size
MERT-v1-95M model on 1 s of 24 kHz audio.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core.errors import InvalidInputError, MissingWeightsError, WeightsError
from audiogen_core.weights import load_safetensors, save_safetensors

import mlx.core as mx
import numpy as np
import pytest

from audiogen_musicgen.mert import MertConfig, MertModel, load_mert, sanitize

ATOL = 1e-4  # last hidden state, float32
ROOT = Path(__file__).resolve().parents[2]


def _builder() -> ModuleType:
    path = ROOT / "tools" / "fixtures" / "mert.py"
    spec = importlib.util.spec_from_file_location("mert_fixture_builder", path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fixture_copy(fixtures_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "mert"
    shutil.copytree(fixtures_dir / "mert", d)
    return d


def _expected(fixtures_dir: Path) -> dict[str, np.ndarray]:
    with np.load(fixtures_dir / "mert" / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def test_fixture_matches_hubert(fixtures_dir: Path) -> None:
    model = load_mert(fixtures_dir / "mert")
    exp = _expected(fixtures_dir)
    out = np.array(model(mx.array(exp["audio"])))
    assert out.shape == exp["last_hidden_state"].shape == (2, 12, 32)
    assert np.abs(out - exp["last_hidden_state"]).max() <= ATOL
    hidden = np.stack([np.array(h) for h in model.hidden_states(mx.array(exp["audio"]))])
    assert hidden.shape == exp["hidden_states"].shape  # (layers + 1, B, T, H)
    assert np.abs(hidden - exp["hidden_states"]).max() <= ATOL
    assert np.array_equal(hidden[-1], out)  # post-LN: the last entry is last_hidden_state
    # One row alone gives that row (no cross-talk through the per-channel GroupNorm).
    one = np.array(model(mx.array(exp["audio"][1])))
    assert np.abs(one[0] - exp["last_hidden_state"][1]).max() <= ATOL


def test_frame_arithmetic(fixtures_dir: Path) -> None:
    c = MertConfig()
    assert c.num_frames(72_000) == 224  # audiocraft's 3 s excerpt at 24 kHz
    assert c.num_frames(24_000) == 74
    assert c.frame_rate == 75.0
    assert c.min_samples == 400 and c.num_frames(400) == 1 and c.num_frames(399) == 0
    model = load_mert(fixtures_dir / "mert")
    assert model(mx.zeros((1, model.config.min_samples))).shape[1] == 1


def test_config_reads_mert_json(fixtures_dir: Path) -> None:
    raw = json.loads((fixtures_dir / "mert" / "config.json").read_text())
    c = MertConfig.from_dict(raw)
    assert c.conv_kernel == (10, 3, 3, 3, 3, 2, 2) and c.conv_stride == (5, 2, 2, 2, 2, 2, 2)
    assert c.hidden_size == 32 and not c.do_stable_layer_norm and c.feat_extract_norm == "group"
    real = json.loads((fixtures_dir / "mert" / "mert-v1-95m-config.json").read_text())
    assert MertConfig.from_dict(real) == MertConfig()  # our defaults are MERT-v1-95M's


def test_sanitize_layouts(fixtures_dir: Path) -> None:
    raw = load_safetensors(fixtures_dir / "mert" / "model.safetensors")
    ours = sanitize(raw)
    assert "masked_spec_embed" not in ours
    assert not any("weight_g" in k or "weight_v" in k for k in ours)
    w = ours["encoder.pos_conv_embed.conv.weight"]
    assert w.shape == (32, 8, 8)  # (out, k, in / groups)
    v = np.array(raw["encoder.pos_conv_embed.conv.weight_v"])
    g = np.array(raw["encoder.pos_conv_embed.conv.weight_g"])
    fused = g * v / np.linalg.norm(v, axis=(0, 1), keepdims=True)  # norm over all but dim 2
    np.testing.assert_allclose(np.array(w), fused.transpose(0, 2, 1), rtol=1e-5, atol=1e-6)
    # Prefixed checkpoints (MERT's base_model_prefix) and newer torch's parametrizations.
    prefixed = {"mert_model." + k: v for k, v in raw.items()}
    renamed = {
        k.replace("weight_g", "parametrizations.weight.original0").replace(
            "weight_v", "parametrizations.weight.original1"
        ): v
        for k, v in raw.items()
    }
    for other in (sanitize(prefixed), sanitize(renamed)):
        assert other.keys() == ours.keys()
        assert all(np.array_equal(np.array(other[k]), np.array(ours[k])) for k in ours)


def test_load_with_given_weights(fixtures_dir: Path, tmp_path: Path) -> None:
    """A directory with only pytorch_model.bin: clear error, and the ``weights=`` route."""
    d = tmp_path / "bin_only"
    d.mkdir()
    shutil.copy(fixtures_dir / "mert" / "config.json", d / "config.json")
    (d / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(WeightsError, match=r"model\.safetensors.*read_bin"):
        load_mert(d)
    weights = load_safetensors(fixtures_dir / "mert" / "model.safetensors")
    model = load_mert(d, weights=weights)
    exp = _expected(fixtures_dir)
    out = np.array(model(mx.array(exp["audio"])))
    assert np.abs(out - exp["last_hidden_state"]).max() <= ATOL


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [
        ("deepnorm", True, "deepnorm"),
        ("feature_extractor_cqt", True, "feature_extractor_cqt"),
        ("conv_pos_batch_norm", True, "conv_pos_batch_norm"),
        ("feat_extract_norm", "instance", "feat_extract_norm"),
        ("hidden_act", "relu", "hidden_act"),
        ("conv_kernel", [10, 3], "differ in length"),
    ],
)
def test_unsupported_config_refused(
    fixtures_dir: Path, tmp_path: Path, key: str, value: Any, what: str
) -> None:
    d = _fixture_copy(fixtures_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg[key] = value
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError, match=what) as e:
        load_mert(d)
    assert str(d / "config.json") in str(e.value)


def test_attention_relax_accepted(fixtures_dir: Path, tmp_path: Path) -> None:
    """MERT-v1-330M sets attention_relax=32: softmax(w − max w) = softmax(w), a no-op here."""
    d = _fixture_copy(fixtures_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["attention_relax"] = 32.0
    (d / "config.json").write_text(json.dumps(cfg))
    exp = _expected(fixtures_dir)
    out = np.array(load_mert(d)(mx.array(exp["audio"])))
    assert np.abs(out - exp["last_hidden_state"]).max() <= ATOL


def test_missing_and_extra_weights(fixtures_dir: Path, tmp_path: Path) -> None:
    d = _fixture_copy(fixtures_dir, tmp_path)
    file = d / "model.safetensors"
    raw = load_safetensors(file)

    def rewrite(weights: dict[str, mx.array]) -> None:
        save_safetensors(file, weights)

    rewrite({k: v for k, v in raw.items() if k != "encoder.layers.1.final_layer_norm.bias"})
    with pytest.raises(MissingWeightsError, match=r"final_layer_norm\.bias") as e:
        load_mert(d)
    assert str(file) in str(e.value)

    rewrite({k: v for k, v in raw.items() if not k.endswith("weight_g")})
    with pytest.raises(MissingWeightsError, match="weight-norm pair incomplete") as e:
        load_mert(d)
    assert str(file) in str(e.value)

    rewrite({**raw, "feature_extractor_cqt.cqt_kernels_real": mx.zeros((4, 4))})
    with pytest.raises(MissingWeightsError, match=r"unexpected weights.*cqt") as e:
        load_mert(d)
    assert str(file) in str(e.value)

    rewrite({**raw, "feature_extractor.conv_layers.0.conv.weight": mx.zeros((16, 1, 9))})
    with pytest.raises(MissingWeightsError, match="shape mismatch"):
        load_mert(d)


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"config\.json"):
        load_mert(tmp_path)


@pytest.mark.parametrize(
    ("audio", "match"),
    [
        (mx.zeros((1, 2, 4000)), "shape"),
        (mx.zeros((1, 0)), "at least 400 samples"),
        (mx.zeros((0, 4000)), "at least 400 samples"),
        (mx.zeros((2, 399)), "at least 400 samples"),
        (mx.zeros((1, 4000), dtype=mx.int16), "floating"),
        (mx.array([[0.0] * 500 + [float("nan")]]), "NaN"),
    ],
)
def test_bad_audio(fixtures_dir: Path, audio: mx.array, match: str) -> None:
    model = load_mert(fixtures_dir / "mert")
    with pytest.raises(InvalidInputError, match=match):
        model(audio)


def test_bad_audio_type(fixtures_dir: Path) -> None:
    model = load_mert(fixtures_dir / "mert")
    with pytest.raises(InvalidInputError, match=r"mx\.array"):
        model(np.zeros((1, 4000), np.float32))  # type: ignore[arg-type]


def _ours(builder: ModuleType, config: dict[str, Any], state: dict[str, Any]) -> MertModel:
    from audiogen_core.weights import load_into

    model = MertModel(MertConfig.from_dict(config))
    weights = {k: mx.array(v.numpy()) for k, v in state.items()}
    return load_into(model, sanitize(weights))  # type: ignore[return-value]


VARIANTS: dict[str, dict[str, Any]] = {
    "mert-95m-layout": {},
    # layer-norm convs with biases, no feature-projection norm, odd positional kernel
    "layer-norm-convs": {
        "feat_extract_norm": "layer",
        "conv_bias": True,
        "feat_proj_layer_norm": False,
        "num_conv_pos_embeddings": 7,
    },
    # pre-LN encoder (MERT-v1-330M's do_stable_layer_norm)
    "stable-layer-norm": {"do_stable_layer_norm": True, "attention_relax": 32.0},
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_live_tiny_parity(torch: ModuleType, variant: str) -> None:
    b = _builder()
    config = b.mert_config(**{**b.TINY, **VARIANTS[variant]})
    ref = b.hubert_model(config, seed=1)
    rng = np.random.default_rng(1)
    audio = (0.5 * rng.standard_normal((2, 3000))).astype(np.float32)
    last, hidden = b.reference(ref, audio)
    # The live model keeps torch's current key style (parametrizations.weight.original0/1).
    model = _ours(b, config, ref.state_dict())
    out = np.array(model(mx.array(audio)))
    assert out.shape == last.shape
    assert np.abs(out - last).max() <= ATOL
    ours_hidden = np.stack([np.array(h) for h in model.hidden_states(mx.array(audio))])
    assert np.abs(ours_hidden - hidden).max() <= ATOL


def test_live_full_size_parity(torch: ModuleType) -> None:
    """MERT-v1-95M's exact config, random weights, 1 s of 24 kHz audio: last hidden state."""
    b = _builder()
    config = b.mert_config()
    ref = b.hubert_model(config, seed=2)
    rng = np.random.default_rng(2)
    audio = (0.3 * rng.standard_normal((1, 24_000))).astype(np.float32)
    with torch.no_grad():
        last = ref(torch.from_numpy(audio)).last_hidden_state.numpy()
    model = _ours(b, config, b.mert_state_dict(ref))
    out = np.array(model(mx.array(audio)))
    assert out.shape == last.shape == (1, 74, 768)
    err = float(np.abs(out - last).max())
    assert err <= ATOL, f"max abs error {err:.2e}"
