"""EnCodec parity with transformers ``EncodecModel`` (modeling_encodec.py, transformers 5).

Fixture tests use the committed tiny checkpoint and the codes/audio transformers produced for it
(tools/fixtures/encodec.py); live tests build fresh random transformers models on torch CPU.
Codes must be identical; decoded audio within ``ATOL``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from audiogen_core import encodec as encodec_mod
from audiogen_core.encodec import EncodecConfig, EncodecModel, sanitize
from audiogen_core.errors import (
    CorruptWeightsError,
    InvalidInputError,
    MissingWeightsError,
    WeightsError,
)
from audiogen_core.weights import load_safetensors, save_safetensors

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten, tree_unflatten

ATOL = 1e-4
BUILDER = Path(__file__).resolve().parents[2] / "tools" / "fixtures" / "encodec.py"


def _builder() -> ModuleType:
    """tools/fixtures/encodec.py (randomisation + test signal), loaded by path: tools/ is not a
    package on sys.path."""
    spec = importlib.util.spec_from_file_location("encodec_fixture_builder", BUILDER)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def fixture_model(fixtures_dir: Path) -> tuple[EncodecModel, dict[str, np.ndarray]]:
    ref = dict(np.load(fixtures_dir / "encodec" / "reference.npz"))
    return EncodecModel.from_pretrained(fixtures_dir / "encodec" / "model"), ref


def test_fixture_encode_codes_identical(fixture_model: Any) -> None:
    model, ref = fixture_model
    codes = model.encode(ref["audio"])
    assert codes.dtype == mx.int32
    np.testing.assert_array_equal(np.array(codes), ref["codes"])


def test_fixture_decode_matches(fixture_model: Any) -> None:
    model, ref = fixture_model
    audio = model.decode(ref["codes"])
    assert audio.dtype == mx.float32
    assert audio.shape == ref["decoded"].shape
    np.testing.assert_allclose(np.array(audio), ref["decoded"], rtol=0, atol=ATOL)


def test_decode_leaves_numpy_blas_threads_as_it_found_them(
    fixture_model: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The parallel conv blocks run numpy's OpenBLAS on one thread and must restore its count:
    a process-wide count of 1 left behind made the LSTM's recurrent gemv (main thread) twice
    as slow, in this decode and every later one. The LSTM, between the single-threaded conv
    layers, gets the caller's count back."""
    from audiogen_core import encodec as enc

    funcs = enc._blas_thread_funcs()
    if not funcs:
        pytest.skip("numpy is not built on OpenBLAS here (e.g. Accelerate on macOS)")
    model, data = fixture_model
    # Small blocks, so even the tiny fixture's layers are split over the worker pool.
    monkeypatch.setattr(enc, "_chunk_rows", lambda width: 8)
    setter, getter, _ = funcs[0]
    in_lstm: list[int] = []
    lstm_forward = enc._TorchLSTM._forward_numpy

    def spy(self: Any, x: np.ndarray) -> np.ndarray:
        in_lstm.append(getter())
        return lstm_forward(self, x)

    monkeypatch.setattr(enc._TorchLSTM, "_forward_numpy", spy)
    before = getter()
    setter(2)
    try:
        model.decode(mx.array(data["codes"]))
        mx.eval(model.encode(mx.array(data["audio"]))[0])
        assert getter() == 2
        assert in_lstm == [2, 2]
    finally:
        setter(before)


def test_fixture_properties(fixture_model: Any) -> None:
    model, ref = fixture_model
    assert model.sample_rate == 4000 and model.channels == 1
    assert model.frame_rate == 500 and model.config.hop_length == 8
    assert model.num_codebooks == ref["codes"].shape[1] == 4
    assert ref["codes"].shape[2] == -(-ref["audio"].shape[2] // model.config.hop_length)


def test_fixture_mlx_and_numpy_recurrence_agree(fixture_model: Any) -> None:
    """The CPU fast paths (numpy LSTM recurrence / ELU) and the pure-MLX paths give one result."""
    model, ref = fixture_model
    fast = np.array(model.decode(ref["codes"]))
    with encodec_mod.pure_mlx():
        slow = np.array(model.decode(ref["codes"]))
        codes = np.array(model.encode(ref["audio"]))
    np.testing.assert_allclose(slow, fast, rtol=0, atol=ATOL)
    np.testing.assert_allclose(slow, ref["decoded"], rtol=0, atol=ATOL)
    np.testing.assert_array_equal(codes, ref["codes"])


def _conv_modes(model: EncodecModel) -> set[str]:
    return {
        m._np_cache.value.mode
        for _, m in model.named_modules()
        if isinstance(getattr(m, "_np_cache", None), encodec_mod._Cache)
        and isinstance(m._np_cache.value, encodec_mod._ConvNp)
    }


@pytest.mark.parametrize("block_rows", [None, 311], ids=["default_blocks", "small_blocks"])
@pytest.mark.parametrize("sgemm", [True, False], ids=["cblas", "matmul"])
@pytest.mark.parametrize("causal", [False, True])
def test_numpy_cpu_path_matches_pure_mlx(
    causal: bool, sgemm: bool, block_rows: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A random model wide enough for every conv form of the CPU path (per-tap, shifted-output,
    im2col; strided, dilated, transposed), batch of 2: the numpy path and the pure-MLX path
    agree, with numpy's OpenBLAS ``cblas_sgemm`` accumulating in place and with the plain
    ``np.matmul`` fallback. ``small_blocks``: many time blocks per worker, and resnet blocks
    updated in place (non-causal: identity shortcut) whose last time block is one row long
    (2800 = 9·311 + 1), so its halo and reflected edge lie in a neighbour's overwritten rows."""
    if block_rows is not None:
        monkeypatch.setattr(encodec_mod, "_chunk_rows", lambda width: block_rows)
    if sgemm and encodec_mod._sgemm_fn() is None:
        pytest.skip("numpy is not built on OpenBLAS here (e.g. Accelerate on macOS)")
    if not sgemm:
        monkeypatch.setattr(encodec_mod, "_SGEMM", [None])
    cfg = EncodecConfig(
        sampling_rate=1600,
        num_filters=32,
        hidden_size=64,
        upsampling_ratios=(4, 2),
        num_residual_layers=2,
        codebook_size=64,
        target_bandwidths=(2.4,),
        use_causal_conv=causal,
        use_conv_shortcut=causal,
    )
    model = EncodecModel(cfg)
    rng = np.random.default_rng(0)
    flat = cast(list[tuple[str, mx.array]], tree_flatten(model.parameters()))
    params = [
        (k, rng.standard_normal(v.shape).astype(np.float32) * 0.3 / max(1, v.shape[-1]) ** 0.5)
        for k, v in flat
    ]
    model.update(tree_unflatten([(k, mx.array(v)) for k, v in params]))
    audio = (0.3 * rng.standard_normal((2, 1, 9001))).astype(np.float32)
    codes = rng.integers(0, 64, (2, model.num_codebooks, 700)).astype(np.int32)
    fast_audio = np.array(model.decode(codes))
    fast_emb = np.array(model.encoder(mx.array(audio).transpose(0, 2, 1)))
    assert _conv_modes(model) == {"acc", "shift", "im2col"}
    with encodec_mod.pure_mlx():
        slow_audio = np.array(model.decode(codes))
        slow_emb = np.array(model.encoder(mx.array(audio).transpose(0, 2, 1)))
    scale = float(np.abs(slow_audio).max())
    np.testing.assert_allclose(fast_audio, slow_audio, rtol=0, atol=1e-5 * max(1.0, scale))
    np.testing.assert_allclose(
        fast_emb, slow_emb, rtol=0, atol=1e-5 * max(1.0, np.abs(slow_emb).max())
    )


def test_config_from_dict_ignores_unknown_and_derives() -> None:
    cfg = EncodecConfig.from_dict(
        {
            "model_type": "encodec",
            "sampling_rate": 32000,
            "upsampling_ratios": [8, 5, 4, 4],
            "codebook_size": 2048,
            "target_bandwidths": [2.2],
            "something_new": 1,
        }
    )
    assert cfg.hop_length == 640 and cfg.frame_rate == 50
    assert cfg.num_quantizers == 4 and cfg.num_quantizers_for_bandwidth(2.2) == 4
    assert cfg.dim == cfg.hidden_size


def test_bad_inputs(fixture_model: Any) -> None:
    model, ref = fixture_model
    with pytest.raises(InvalidInputError, match="batch, channels, samples"):
        model.encode(ref["audio"][0])
    with pytest.raises(InvalidInputError, match="1 channel"):
        model.encode(np.zeros((1, 2, 100), np.float32))
    with pytest.raises(InvalidInputError, match="floating point"):
        model.encode(np.zeros((1, 1, 100), np.int16))
    with pytest.raises(InvalidInputError, match="empty"):
        model.encode(np.zeros((1, 1, 0), np.float32))
    with pytest.raises(InvalidInputError, match="num_codebooks"):
        model.encode(ref["audio"], num_codebooks=5)
    with pytest.raises(InvalidInputError, match="integers"):
        model.decode(ref["codes"].astype(np.float32))
    with pytest.raises(InvalidInputError, match="batch, codebooks, frames"):
        model.decode(ref["codes"][0])
    with pytest.raises(InvalidInputError, match=r"\[0, 32\)"):
        model.decode(np.full((1, 4, 3), 32, np.int32))
    with pytest.raises(InvalidInputError, match=r"\[0, 32\)"):
        model.decode(np.full((1, 4, 3), -1, np.int32))
    with pytest.raises(InvalidInputError, match="codebooks given"):
        model.decode(np.zeros((1, 5, 3), np.int32))


def test_missing_key_names_file(fixtures_dir: Path, tmp_path: Path) -> None:
    src = fixtures_dir / "encodec" / "model"
    shutil.copy(src / "config.json", tmp_path / "config.json")
    weights = load_safetensors(src / "model.safetensors")
    del weights["quantizer.layers.3.codebook.embed"]
    save_safetensors(tmp_path / "model.safetensors", weights)
    with pytest.raises(MissingWeightsError, match=r"model\.safetensors.*quantizer\.layers\.3"):
        EncodecModel.from_pretrained(tmp_path)


def test_truncated_safetensors_names_file(fixtures_dir: Path, tmp_path: Path) -> None:
    src = fixtures_dir / "encodec" / "model"
    shutil.copy(src / "config.json", tmp_path / "config.json")
    data = (src / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptWeightsError, match=r"model\.safetensors.*truncated"):
        EncodecModel.from_pretrained(tmp_path)


def test_missing_config_or_weights(fixtures_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"config\.json"):
        EncodecModel.from_pretrained(tmp_path)
    shutil.copy(fixtures_dir / "encodec" / "model" / "config.json", tmp_path / "config.json")
    with pytest.raises(WeightsError, match=r"no model\.safetensors"):
        EncodecModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(WeightsError, match="audio_encoder"):
        EncodecModel.from_pretrained(tmp_path)


# ---- live parity against transformers (torch CPU) ----

TINY: dict[str, Any] = dict(
    sampling_rate=800,
    num_filters=4,
    upsampling_ratios=[4, 2],
    hidden_size=16,
    codebook_size=32,
    num_lstm_layers=2,
    target_bandwidths=[2.0, 3.0],  # 100 frames/s · 5 bits → 4 and 6 codebooks
    normalize=False,
)

CASES: dict[str, dict[str, Any]] = {
    "musicgen-like": dict(use_causal_conv=False, use_conv_shortcut=False),
    "causal-shortcut": dict(use_causal_conv=True, use_conv_shortcut=True),
    "stereo-odd-ratios": dict(audio_channels=2, upsampling_ratios=[3, 5], use_causal_conv=False),
    "stereo-causal-trim": dict(
        audio_channels=2, use_causal_conv=True, trim_right_ratio=0.5, upsampling_ratios=[3, 2]
    ),
    "dilated-2-res-layers": dict(use_causal_conv=False, num_residual_layers=2, compress=1),
    # ≥ 32 channels: the CPU path's per-tap ("acc") and shifted-output ("shift") conv forms
    "wide-musicgen-like": dict(
        num_filters=32, hidden_size=64, use_causal_conv=False, use_conv_shortcut=False
    ),
    "wide-causal-shortcut": dict(
        num_filters=32, hidden_size=64, use_causal_conv=True, upsampling_ratios=[3, 5]
    ),
}


def _reference(torch: ModuleType, tmp_path: Path, **overrides: Any) -> Any:
    from transformers import EncodecConfig as TorchConfig
    from transformers import EncodecModel as TorchModel

    fx = _builder()
    torch.manual_seed(0)
    cfg = TorchConfig(**{**TINY, **overrides})
    model = TorchModel(cfg).eval()
    probe = torch.from_numpy(fx.chord(cfg.sampling_rate, 0.5, cfg.audio_channels))
    fx.randomize(model, probe)
    model.save_pretrained(tmp_path)
    return model


def _compare(torch: ModuleType, ref: Any, ours: EncodecModel, audio: np.ndarray, **kw: Any) -> None:
    with torch.no_grad():
        bw = kw.get("bandwidth")
        ref_codes = ref.encode(torch.from_numpy(audio), bandwidth=bw)[0][0]
        ref_audio = ref.decode(ref_codes[None], [None])[0].numpy()
    n = None if bw is None else ref_codes.shape[1]
    codes = np.array(ours.encode(audio, num_codebooks=n))
    np.testing.assert_array_equal(codes, ref_codes.numpy())
    out = np.array(ours.decode(codes))
    assert out.shape == ref_audio.shape
    np.testing.assert_allclose(out, ref_audio, rtol=0, atol=ATOL)


@pytest.mark.torch
@pytest.mark.parametrize("case", sorted(CASES))
def test_live_parity(torch: ModuleType, tmp_path: Path, case: str) -> None:
    fx = _builder()
    ref = _reference(torch, tmp_path, **CASES[case])
    ours = EncodecModel.from_pretrained(tmp_path)
    channels = ref.config.audio_channels
    sr = ref.config.sampling_rate
    for n in (1, 10, 251):  # 1 sample exercises the reflect small-input fix; odd lengths
        audio = fx.chord(sr, (n + 0.5) / sr, channels, seed=1)
        assert audio.shape[-1] == n
        _compare(torch, ref, ours, np.concatenate([audio, 0.5 * audio]))  # batch of 2
    _compare(torch, ref, ours, fx.chord(sr, 0.5, channels, seed=2), bandwidth=3.0)
    assert ours.config.num_quantizers == len(ref.quantizer.layers)
    assert ours.num_codebooks == ref.quantizer.get_num_quantizers_for_bandwidth(2.0)


@pytest.mark.torch
def test_live_pure_mlx_paths(torch: ModuleType, tmp_path: Path) -> None:
    fx = _builder()
    ref = _reference(torch, tmp_path, **CASES["musicgen-like"])
    ours = EncodecModel.from_pretrained(tmp_path)
    with encodec_mod.pure_mlx():
        _compare(torch, ref, ours, fx.chord(800, 0.3137, 1, seed=3))


def _musicgen_layout(src: Path, dst: Path, shards: bool) -> None:
    """Re-save an EncodecModel checkpoint the way a MusicGen composite holds it."""
    enc_cfg = json.loads((src / "config.json").read_text())
    cfg = {"model_type": "musicgen", "audio_encoder": enc_cfg, "decoder": {"vocab_size": 32}}
    (dst / "config.json").write_text(json.dumps(cfg))
    weights = {
        f"audio_encoder.{k}": v for k, v in load_safetensors(src / "model.safetensors").items()
    }
    other = {"decoder.model.decoder.embed_tokens.0.weight": mx.zeros((33, 8))}
    if not shards:
        save_safetensors(dst / "model.safetensors", {**weights, **other})
        return
    names = sorted(weights)
    half = len(names) // 2
    parts = {
        "model-00001-of-00003.safetensors": {k: weights[k] for k in names[:half]},
        "model-00002-of-00003.safetensors": {k: weights[k] for k in names[half:]},
    }
    for fname, part in parts.items():
        save_safetensors(dst / fname, part)
    # The decoder shard is deliberately garbage: only shards with audio_encoder keys are read.
    (dst / "model-00003-of-00003.safetensors").write_bytes(b"not a safetensors file")
    weight_map = {k: f for f, part in parts.items() for k in part}
    weight_map.update({k: "model-00003-of-00003.safetensors" for k in other})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))


@pytest.mark.torch
@pytest.mark.parametrize("shards", [False, True], ids=["single", "sharded"])
def test_live_musicgen_composite_layout(torch: ModuleType, tmp_path: Path, shards: bool) -> None:
    fx = _builder()
    plain, composite = tmp_path / "plain", tmp_path / "composite"
    plain.mkdir()
    composite.mkdir()
    ref = _reference(torch, plain, **CASES["musicgen-like"])
    _musicgen_layout(plain, composite, shards)
    a = EncodecModel.from_pretrained(plain)
    b = EncodecModel.from_pretrained(composite)
    assert a.config == b.config
    for (ka, va), (kb, vb) in zip(sorted(_flat(a).items()), sorted(_flat(b).items()), strict=True):
        assert ka == kb
        np.testing.assert_array_equal(np.array(va), np.array(vb))
    _compare(torch, ref, b, fx.chord(800, 0.2, 1, seed=4))


def _flat(model: EncodecModel) -> dict[str, mx.array]:
    return dict(tree_flatten(model.parameters()))


@pytest.mark.torch
def test_live_old_weight_norm_keys(torch: ModuleType, tmp_path: Path) -> None:
    """Checkpoints from before torch parametrizations store ``weight_g``/``weight_v``."""
    fx = _builder()
    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir()
    old.mkdir()
    ref = _reference(torch, new, **CASES["causal-shortcut"])
    weights = load_safetensors(new / "model.safetensors")
    renamed = {
        k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v"
        ): v
        for k, v in weights.items()
    }
    assert any(k.endswith("weight_g") for k in renamed)
    save_safetensors(old / "model.safetensors", renamed)
    shutil.copy(new / "config.json", old / "config.json")
    ours = EncodecModel.from_pretrained(old)
    _compare(torch, ref, ours, fx.chord(800, 0.2, 1, seed=5))


def test_sanitize_prefix_and_layouts(fixtures_dir: Path) -> None:
    raw = load_safetensors(fixtures_dir / "encodec" / "model" / "model.safetensors")
    out = sanitize({f"audio_encoder.{k}": v for k, v in raw.items()}, prefix="audio_encoder.")
    assert not any(k.startswith("audio_encoder.") for k in out)
    assert not any("embed_avg" in k or "cluster_size" in k or "inited" in k for k in out)
    assert not any("parametrizations" in k for k in out)
    v = raw["decoder.layers.3.conv.parametrizations.weight.original1"]  # ConvTranspose (in,out,k)
    assert out["decoder.layers.3.conv.weight"].shape == (v.shape[1], v.shape[2], v.shape[0])
    v = raw["decoder.layers.0.conv.parametrizations.weight.original1"]  # Conv1d (out,in,k)
    assert out["decoder.layers.0.conv.weight"].shape == (v.shape[0], v.shape[2], v.shape[1])
