"""Oobleck VAE parity with diffusers ``AutoencoderOobleck`` (autoencoder_oobleck.py, diffusers 0.42).

Fixture tests use the committed tiny checkpoint (diffusers and stable-audio-tools layouts) and the
outputs diffusers produced for it (tools/fixtures/oobleck.py); live tests build fresh random
diffusers models on torch CPU, including the full Stable Audio Open 1.0 shape. Outputs must agree
within ``ATOL``; chunked encode/decode must equal the unchunked result within ``ATOL``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core import oobleck as oobleck_mod
from audiogen_core.errors import (
    CorruptWeightsError,
    InvalidInputError,
    MissingWeightsError,
    WeightsError,
)
from audiogen_core.oobleck import (
    OobleckConfig,
    OobleckVAE,
    load_stable_audio_tools,
    sanitize,
    sat_key_to_diffusers,
)
from audiogen_core.weights import load_into, load_safetensors, save_safetensors

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten

ATOL = 1e-4
BUILDER = Path(__file__).resolve().parents[2] / "tools" / "fixtures" / "oobleck.py"


def _builder() -> ModuleType:
    """tools/fixtures/oobleck.py (randomisation, stable-audio-tools renames), loaded by path."""
    spec = importlib.util.spec_from_file_location("oobleck_fixture_builder", BUILDER)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ref(fixtures_dir: Path) -> dict[str, np.ndarray]:
    return dict(np.load(fixtures_dir / "oobleck" / "reference.npz"))


@pytest.fixture(scope="module")
def vae(fixtures_dir: Path) -> OobleckVAE:
    return OobleckVAE.from_pretrained(fixtures_dir / "oobleck" / "vae")


def _max_err(a: Any, b: Any) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def test_fixture_encode_mean(vae: OobleckVAE, ref: dict[str, np.ndarray]) -> None:
    mean = vae.encode(ref["audio"])
    assert mean.shape == ref["mean"].shape
    np.testing.assert_allclose(np.array(mean), ref["mean"], atol=ATOL, rtol=0)


def test_fixture_encode_sample_uses_diffusers_std(
    vae: OobleckVAE, ref: dict[str, np.ndarray]
) -> None:
    key = mx.random.key(3)
    drawn = np.array(vae.encode(ref["audio"], sample=True, key=key))
    eps = np.array(mx.random.normal(ref["mean"].transpose(0, 2, 1).shape, key=key))
    expected = ref["mean"] + ref["std"] * eps.transpose(0, 2, 1)
    np.testing.assert_allclose(drawn, expected, atol=ATOL, rtol=0)
    assert _max_err(drawn, ref["mean"]) > 1e-3  # a draw, not the mean


def test_fixture_decode(vae: OobleckVAE, ref: dict[str, np.ndarray]) -> None:
    audio = vae.decode(ref["latents"])
    assert audio.dtype == mx.float32 and audio.shape == ref["decoded"].shape
    np.testing.assert_allclose(np.array(audio), ref["decoded"], atol=ATOL, rtol=0)


def test_fixture_sat_layout_is_the_same_model(
    fixtures_dir: Path, vae: OobleckVAE, ref: dict[str, np.ndarray]
) -> None:
    sat = fixtures_dir / "oobleck" / "sat"
    model = load_stable_audio_tools(sat / "model.safetensors", sat / "model_config.json")
    ours = dict(tree_flatten(vae.parameters()))
    theirs = dict(tree_flatten(model.parameters()))
    assert ours.keys() == theirs.keys()
    for k in ours:
        np.testing.assert_allclose(np.array(theirs[k]), np.array(ours[k]), atol=1e-6, err_msg=k)
    np.testing.assert_allclose(
        np.array(model.decode(ref["latents"])), ref["decoded"], atol=ATOL, rtol=0
    )
    np.testing.assert_allclose(np.array(model.encode(ref["audio"])), ref["mean"], atol=ATOL)


def test_config_from_stable_audio_tools_matches_diffusers(fixtures_dir: Path) -> None:
    raw = json.loads((fixtures_dir / "oobleck" / "sat" / "model_config.json").read_text())
    sat = OobleckConfig.from_stable_audio_tools(raw)
    diff = OobleckConfig.from_dict(
        json.loads((fixtures_dir / "oobleck" / "vae" / "config.json").read_text())
    )
    assert sat.encoder_out == diff.encoder_out
    assert dataclasses.replace(sat, encoder_output_channels=None) == diff
    # the pretransform section alone parses the same
    assert OobleckConfig.from_stable_audio_tools(
        raw["model"]["pretransform"]
    ) == dataclasses.replace(sat, sampling_rate=44_100)


def test_config_from_dict_ignores_unknown_keys() -> None:
    cfg = OobleckConfig.from_dict({"_class_name": "AutoencoderOobleck", "audio_channels": 1})
    assert cfg.audio_channels == 1 and cfg.hop_length == 2048 and cfg.latent_dim == 64


@pytest.mark.parametrize(
    "edit",
    [
        lambda p: p["encoder"]["config"].update(use_snake=False),
        lambda p: p["decoder"]["config"].update(antialias_activation=True),
        lambda p: p["decoder"]["config"].update(use_nearest_upsample=True),
        lambda p: p.update(bottleneck={"type": "rvq"}),
        lambda p: p["decoder"]["config"].update(strides=[2, 2, 2]),
        lambda p: p["encoder"].update(type="dac"),
    ],
)
def test_unsupported_sat_configs_refused(fixtures_dir: Path, tmp_path: Path, edit: Any) -> None:
    raw = json.loads((fixtures_dir / "oobleck" / "sat" / "model_config.json").read_text())
    edit(raw["model"]["pretransform"]["config"])
    with pytest.raises(InvalidInputError):
        OobleckConfig.from_stable_audio_tools(raw)
    cfg = tmp_path / "model_config.json"
    cfg.write_text(json.dumps(raw))
    with pytest.raises(WeightsError, match=r"model_config\.json"):
        load_stable_audio_tools(fixtures_dir / "oobleck" / "sat" / "model.safetensors", cfg)


def test_receptive_fields_of_stable_audio_open() -> None:
    cfg = OobleckConfig()
    expected = (
        (3 + (2 + 39 / 8) + (2 / 8 + 39 / 64) + (2 / 64 + 39 / 256) + (2 / 256 + 39 / 1024))
        + (2 / 1024 + 39 / 2048)
        + 3 / 2048
    )
    assert cfg.decoder_receptive_field() == pytest.approx(expected)
    assert round(expected, 4) == 10.9863  # so the default decode overlap is 11 latent frames
    assert 8 < cfg.encoder_receptive_field() < 10


@pytest.mark.parametrize("frames", [1, 37, 101])
@pytest.mark.parametrize("chunk", [1, 7, 16, 33])
def test_chunked_decode_equals_whole(vae: OobleckVAE, frames: int, chunk: int) -> None:
    z = mx.random.normal((2, vae.config.latent_dim, frames), key=mx.random.key(frames))
    whole = np.array(vae.decode(z))
    chunked = np.array(vae.decode(z, chunk_size=chunk))
    assert chunked.shape == whole.shape == (2, 2, frames * vae.hop_length)
    np.testing.assert_allclose(chunked, whole, atol=ATOL, rtol=0)


def test_chunk_overlap_matters(vae: OobleckVAE) -> None:
    """Without overlap a chunk edge sees zero padding where the whole decode sees real values:
    the overlap, not luck, makes chunked decoding exact."""
    z = mx.random.normal((1, vae.config.latent_dim, 64), key=mx.random.key(0))
    whole = np.array(vae.decode(z))
    assert _max_err(vae.decode(z, chunk_size=16, overlap=0), whole) > 1e-3
    # the fixture model's receptive field (≈ 33 frames here) is what the default covers
    assert vae.config.decoder_receptive_field() == pytest.approx(33.25)


@pytest.mark.parametrize("extra", [0, 5])
@pytest.mark.parametrize("chunk", [3, 8, 33])
def test_chunked_encode_equals_whole(vae: OobleckVAE, chunk: int, extra: int) -> None:
    hop = vae.hop_length
    audio = mx.random.normal((2, 2, hop * 50 + extra), key=mx.random.key(chunk))
    whole = np.array(vae.encode(audio))
    chunked = np.array(vae.encode(audio, chunk_size=chunk))
    assert chunked.shape == whole.shape == (2, vae.config.latent_dim, 50)
    np.testing.assert_allclose(chunked, whole, atol=ATOL, rtol=0)


def test_numpy_snake_path_equals_mlx(
    vae: OobleckVAE, ref: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU fast path (numpy sin into an MLX buffer) against the pure-MLX snake."""
    monkeypatch.setattr(oobleck_mod, "_NUMPY_MIN_SIZE", 0)
    fast = np.array(vae.decode(ref["latents"]))
    old = oobleck_mod.set_numpy_cpu(False)
    try:
        slow = np.array(vae.decode(ref["latents"]))
    finally:
        oobleck_mod.set_numpy_cpu(old)
    np.testing.assert_allclose(fast, slow, atol=1e-5, rtol=0)
    np.testing.assert_allclose(fast, ref["decoded"], atol=ATOL, rtol=0)


def test_latent_scale_applied_like_the_pretransform(
    vae: OobleckVAE, ref: dict[str, np.ndarray]
) -> None:
    scaled = OobleckVAE(dataclasses.replace(vae.config, latent_scale=2.0))
    scaled.update(vae.parameters())
    np.testing.assert_allclose(
        np.array(scaled.decode(ref["latents"] / 2.0)), ref["decoded"], atol=ATOL, rtol=0
    )
    np.testing.assert_allclose(
        np.array(scaled.encode(ref["audio"])), ref["mean"] / 2.0, atol=ATOL, rtol=0
    )


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((1, 3, 64), np.float32), "2 channels"),
        (np.zeros((1, 2, 64), np.int16), "floating point"),
        (np.zeros((2, 64), np.float32), r"\(batch, channels, time\)"),
        (np.zeros((1, 2, 0), np.float32), "empty"),
    ],
)
def test_bad_audio(vae: OobleckVAE, bad: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        vae.encode(bad)


def test_bad_latents_and_chunking(vae: OobleckVAE) -> None:
    with pytest.raises(InvalidInputError, match="4 channels"):
        vae.decode(np.zeros((1, 64, 3), np.float32))
    z = np.zeros((1, 4, 3), np.float32)
    with pytest.raises(InvalidInputError, match="chunk_size"):
        vae.decode(z, chunk_size=0)
    with pytest.raises(InvalidInputError, match="overlap"):
        vae.decode(z, chunk_size=2, overlap=-1)


def test_bad_sanitize_layout() -> None:
    with pytest.raises(InvalidInputError, match="layout"):
        sanitize({}, layout="torch")  # type: ignore[arg-type]


def _copy_vae(fixtures_dir: Path, tmp_path: Path) -> Path:
    d = tmp_path / "vae"
    shutil.copytree(fixtures_dir / "oobleck" / "vae", d)
    return d


def test_missing_dir_and_config(fixtures_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not a directory"):
        OobleckVAE.from_pretrained(tmp_path / "nope")
    d = _copy_vae(fixtures_dir, tmp_path)
    (d / "config.json").unlink()
    with pytest.raises(WeightsError, match=r"config\.json"):
        OobleckVAE.from_pretrained(d)


def test_wrong_class_config(fixtures_dir: Path, tmp_path: Path) -> None:
    d = _copy_vae(fixtures_dir, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "_class_name": "AutoencoderKL"}))
    with pytest.raises(WeightsError, match="AutoencoderOobleck"):
        OobleckVAE.from_pretrained(d)


def test_truncated_weights(fixtures_dir: Path, tmp_path: Path) -> None:
    d = _copy_vae(fixtures_dir, tmp_path)
    f = d / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CorruptWeightsError, match=r"diffusion_pytorch_model\.safetensors"):
        OobleckVAE.from_pretrained(d)


def test_missing_and_unknown_tensors(fixtures_dir: Path, tmp_path: Path) -> None:
    d = _copy_vae(fixtures_dir, tmp_path)
    f = d / "diffusion_pytorch_model.safetensors"
    tensors = load_safetensors(f)
    tensors.pop("decoder.conv2.weight_g")
    save_safetensors(f, tensors)
    with pytest.raises(MissingWeightsError, match="weight-norm pair incomplete"):
        OobleckVAE.from_pretrained(d)
    tensors = load_safetensors(fixtures_dir / "oobleck" / "vae" / f.name)
    tensors.pop("encoder.snake1.alpha")
    save_safetensors(f, tensors)
    with pytest.raises(MissingWeightsError, match=r"diffusion_pytorch_model.*encoder.snake1.alpha"):
        OobleckVAE.from_pretrained(d)


def test_sat_checkpoint_without_vae(fixtures_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "model.safetensors"
    save_safetensors(f, {"model.model.proj_in.weight": mx.zeros((3, 3))})
    cfg = fixtures_dir / "oobleck" / "sat" / "model_config.json"
    with pytest.raises(MissingWeightsError, match=r"model\.safetensors.*pretransform"):
        load_stable_audio_tools(f, cfg)


def test_unknown_sat_key() -> None:
    with pytest.raises(MissingWeightsError, match=r"encoder\.layers\.2\.layers\.9"):
        sat_key_to_diffusers("encoder.layers.2.layers.9.weight", 5)


def _diffusers_model(torch: ModuleType, config: dict[str, Any], seed: int) -> Any:
    from diffusers import AutoencoderOobleck

    torch.manual_seed(seed)
    model: Any = AutoencoderOobleck(**config)
    model.eval()
    _builder().randomize(model, seed)
    return model


def _ours_from_state(model: Any, config: dict[str, Any], layout: str = "diffusers") -> OobleckVAE:
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    if layout == "sat":
        b = _builder()
        sat = b.sat_state_dict(model.state_dict(), len(config["downsampling_ratios"]))
        state = {k: v.numpy() for k, v in sat.items()}
    ours = OobleckVAE(OobleckConfig.from_dict(config))
    prefix = "pretransform.model." if layout == "sat" else ""
    load_into(ours, sanitize(state, layout=layout, prefix=prefix))  # type: ignore[arg-type]
    return ours


@pytest.mark.parametrize(
    "config",
    [
        dict(
            encoder_hidden_size=4,
            downsampling_ratios=[2, 2],
            channel_multiples=[1, 2],
            decoder_channels=6,
            decoder_input_channels=2,
            audio_channels=1,
        ),
        dict(
            encoder_hidden_size=8,
            downsampling_ratios=[4, 8, 2],
            channel_multiples=[1, 3, 2],
            decoder_channels=4,
            decoder_input_channels=4,
            audio_channels=2,
        ),
    ],
)
def test_live_parity_tiny(torch: ModuleType, config: dict[str, Any]) -> None:
    model = _diffusers_model(torch, config, seed=1)
    hop = int(np.prod(config["downsampling_ratios"]))
    x = torch.randn(2, config["audio_channels"], hop * 9 + 3) * 0.5
    z = torch.randn(2, config["decoder_input_channels"], 7)
    with torch.no_grad():
        post = model.encode(x).latent_dist
        decoded = model.decode(z).sample
    for layout in ("diffusers", "sat"):
        ours = _ours_from_state(model, config, layout)
        mean = ours.encode(x.numpy())
        np.testing.assert_allclose(np.array(mean), post.mean.numpy(), atol=ATOL, rtol=0)
        out = ours.decode(z.numpy())
        np.testing.assert_allclose(np.array(out), decoded.numpy(), atol=ATOL, rtol=0)


def test_live_stable_audio_open_shape(torch: ModuleType) -> None:
    """The real 1.0 VAE shape (2 → 128 … 2048 channels, ×2048), random weights: 4096 samples →
    2 latent frames, 4 latent frames → 8192 samples; both key layouts give the same tensors."""
    from diffusers import AutoencoderOobleck

    torch.manual_seed(0)
    model: Any = AutoencoderOobleck()
    model.eval()
    _builder().randomize(model, 0)
    config = dict(model.config)
    x = torch.randn(1, 2, 4096) * 0.5
    z = torch.randn(1, 64, 4)
    with torch.no_grad():
        mean = model.encode(x).latent_dist.mean.numpy()
        decoded = model.decode(z).sample.numpy()
    ours = _ours_from_state(model, config)
    assert ours.config == OobleckConfig()
    np.testing.assert_allclose(np.array(ours.encode(x.numpy())), mean, atol=ATOL, rtol=0)
    np.testing.assert_allclose(np.array(ours.decode(z.numpy())), decoded, atol=ATOL, rtol=0)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    sat = _builder().sat_state_dict(model.state_dict(), 5)
    a = sanitize(state)
    b = sanitize({k: v.numpy() for k, v in sat.items()}, layout="sat", prefix="pretransform.model.")
    assert a.keys() == b.keys() == dict(tree_flatten(ours.parameters())).keys()
    for k in a:
        np.testing.assert_allclose(np.array(a[k]), np.array(b[k]), atol=1e-6, err_msg=k)
