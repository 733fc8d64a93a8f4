"""weights: safetensors I/O errors, conv layouts, weight-norm fusion, strict loading.

Conv layouts are checked against a direct numpy convolution and, live, against torch's conv ops."""

from __future__ import annotations

import json
from pathlib import Path

from audiogen_core.errors import (
    CorruptWeightsError,
    InvalidInputError,
    MissingWeightsError,
    WeightsError,
)
from audiogen_core.weights import (
    cast_floats,
    conv1d_to_mlx,
    conv_transpose1d_to_mlx,
    fuse_weight_norm,
    fuse_weight_norms,
    load_into,
    load_safetensors,
    quantize_linears,
    safetensors_metadata,
    save_safetensors,
)

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

ATOL = 1e-5
rng = np.random.default_rng(0)


def _conv1d_ref(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Valid cross-correlation, torch layouts: x (B, Cin, T), w (Cout, Cin, K) → (B, Cout, T-K+1)."""
    k = w.shape[2]
    t = x.shape[2] - k + 1
    windows = np.stack([x[:, :, i : i + k] for i in range(t)], axis=2)  # (B, Cin, T', K)
    return np.einsum("bctk,ock->bot", windows, w)


def test_conv1d_layout_matches_direct_convolution() -> None:
    x = rng.standard_normal((2, 3, 11)).astype(np.float32)
    w = rng.standard_normal((5, 3, 4)).astype(np.float32)
    ours = mx.conv1d(mx.array(x.transpose(0, 2, 1)), mx.array(conv1d_to_mlx(w)))
    np.testing.assert_allclose(np.array(ours).transpose(0, 2, 1), _conv1d_ref(x, w), atol=ATOL)


def test_conv_transpose1d_layout_matches_scatter_definition() -> None:
    x = rng.standard_normal((1, 3, 6)).astype(np.float32)  # (B, Cin, T)
    w = rng.standard_normal((3, 2, 4)).astype(np.float32)  # torch (Cin, Cout, K)
    stride = 2
    ref = np.zeros((1, 2, (6 - 1) * stride + 4), np.float32)
    for t in range(6):
        ref[:, :, t * stride : t * stride + 4] += np.einsum("bc,cok->bok", x[:, :, t], w)
    ours = mx.conv_transpose1d(
        mx.array(x.transpose(0, 2, 1)), mx.array(conv_transpose1d_to_mlx(w)), stride=stride
    )
    np.testing.assert_allclose(np.array(ours).transpose(0, 2, 1), ref, atol=ATOL)


def test_layout_helpers_accept_numpy_and_mlx() -> None:
    w = rng.standard_normal((5, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(np.array(conv1d_to_mlx(mx.array(w))), conv1d_to_mlx(w))
    np.testing.assert_array_equal(
        np.array(conv_transpose1d_to_mlx(mx.array(w))), conv_transpose1d_to_mlx(w)
    )


def test_fuse_weight_norm_definition() -> None:
    v = rng.standard_normal((4, 3, 5)).astype(np.float32)
    g = rng.standard_normal((4, 1, 1)).astype(np.float32)
    w = fuse_weight_norm(g, v)
    norms = np.sqrt((w**2).sum(axis=(1, 2)))
    np.testing.assert_allclose(norms, np.abs(g[:, 0, 0]), rtol=1e-5)
    np.testing.assert_allclose(np.array(fuse_weight_norm(mx.array(g), mx.array(v))), w, atol=ATOL)


def test_fuse_weight_norms_both_key_styles() -> None:
    v = rng.standard_normal((4, 3, 5)).astype(np.float32)
    g = rng.standard_normal((4, 1, 1)).astype(np.float32)
    old = fuse_weight_norms({"a.conv.weight_g": g, "a.conv.weight_v": v, "a.conv.bias": g[:, 0, 0]})
    new = fuse_weight_norms(
        {
            "a.conv.parametrizations.weight.original0": g,
            "a.conv.parametrizations.weight.original1": v,
            "a.conv.bias": g[:, 0, 0],
        }
    )
    assert sorted(old) == sorted(new) == ["a.conv.bias", "a.conv.weight"]
    np.testing.assert_array_equal(old["a.conv.weight"], new["a.conv.weight"])
    with pytest.raises(MissingWeightsError, match="weight_v"):
        fuse_weight_norms({"a.weight_g": g})


def test_fuse_weight_norm_matches_torch(torch) -> None:  # type: ignore[no-untyped-def]
    conv = torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv1d(3, 4, 5))
    with torch.no_grad():
        conv.parametrizations.weight.original0.normal_()
    sd = {k: v.detach().numpy() for k, v in conv.state_dict().items()}
    fused = fuse_weight_norms(sd)
    np.testing.assert_allclose(fused["weight"], conv.weight.detach().numpy(), atol=1e-6)


def test_save_load_roundtrip_and_metadata(tmp_path: Path) -> None:
    w = {"a": mx.arange(6, dtype=mx.float32).reshape(2, 3), "b": mx.array([1, 2], dtype=mx.int32)}
    path = save_safetensors(tmp_path / "w.safetensors", w, {"source": "test"})
    back = load_safetensors(path)
    assert back.keys() == w.keys()
    np.testing.assert_array_equal(np.array(back["a"]), np.array(w["a"]))
    assert safetensors_metadata(path) == {"source": "test"}
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left


def test_truncated_safetensors_names_the_file(tmp_path: Path) -> None:
    path = save_safetensors(tmp_path / "w.safetensors", {"a": mx.zeros((64, 64))})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptWeightsError, match=r"w\.safetensors.*truncated"):
        load_safetensors(path)


@pytest.mark.parametrize("content", [b"", b"\x01\x02", b"not a safetensors file at all"])
def test_foreign_file_names_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CorruptWeightsError, match=r"bad\.safetensors"):
        load_safetensors(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"nope.safetensors"):
        load_safetensors(tmp_path / "nope.safetensors")


def test_cast_floats_keeps_integers() -> None:
    out = cast_floats({"f": mx.zeros(2), "i": mx.zeros(2, dtype=mx.int32)}, mx.float16)
    assert out["f"].dtype == mx.float16 and out["i"].dtype == mx.int32


def test_load_into_strict() -> None:
    model = nn.Linear(3, 2)
    good = {"weight": mx.ones((2, 3)), "bias": mx.zeros(2)}
    load_into(model, good, source="x.safetensors")
    np.testing.assert_array_equal(np.array(model.weight), np.ones((2, 3)))
    with pytest.raises(MissingWeightsError, match=r"x\.safetensors: missing weights: bias"):
        load_into(nn.Linear(3, 2), {"weight": mx.ones((2, 3))}, source="x.safetensors")
    with pytest.raises(MissingWeightsError, match="unexpected weights: extra"):
        load_into(nn.Linear(3, 2), {**good, "extra": mx.ones(1)}, source="x.safetensors")
    with pytest.raises(MissingWeightsError, match="shape mismatch: weight"):
        load_into(nn.Linear(3, 2), {**good, "weight": mx.ones((3, 3))}, source="x.safetensors")


def test_quantize_linears_only_where_the_group_fits() -> None:
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(32, 48), nn.Embedding(10, 64))
    x = mx.random.normal((3, 64), key=mx.random.key(0))
    ref = model.layers[0](x)
    assert quantize_linears(model, 8, group_size=64) == 1
    assert isinstance(model.layers[0], nn.QuantizedLinear)
    assert isinstance(model.layers[1], nn.Linear)  # 32 inputs: not a multiple of 64
    assert isinstance(model.layers[2], nn.Embedding)
    err = float(mx.max(mx.abs(model.layers[0](x) - ref)))
    assert err < 0.02 * float(mx.max(mx.abs(ref)))  # 8-bit, groups of 64


@pytest.mark.parametrize(("bits", "group"), [(3, 64), (8, 48)])
def test_quantize_linears_rejects_bad_settings(bits: int, group: int) -> None:
    with pytest.raises(InvalidInputError, match="must be"):
        quantize_linears(nn.Linear(64, 8), bits, group_size=group)


def test_write_model_dir_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from audiogen_core import weights as w

    tok = tmp_path / "spiece.model"
    tok.write_bytes(b"tok")
    parts = {"a": ({"x": 1}, {"w": mx.ones((2, 2), mx.float16)}), "b": ({}, {"v": mx.zeros(3)})}
    out = w.write_model_dir(tmp_path / "m", parts, [tok], {"dtype": "float16"})
    assert json.loads((out / "manifest.json").read_text()) == {"dtype": "float16"}
    assert json.loads((out / "a" / "config.json").read_text()) == {"x": 1}
    assert w.load_safetensors(out / "a" / "model.safetensors")["w"].dtype == mx.float16
    assert (out / "tokenizer" / "spiece.model").read_bytes() == b"tok"
    assert w.float_dtype(v for _, t in parts.values() for v in t.values()) == "float16,float32"
    # a failure part-way leaves nothing behind
    monkeypatch.setattr(w, "save_safetensors", lambda *a, **k: (_ for _ in ()).throw(OSError("x")))
    with pytest.raises(OSError):
        w.write_model_dir(tmp_path / "n", parts, [tok], {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "spiece.model"]
    monkeypatch.undo()
    # a complete directory that appeared meanwhile (a concurrent conversion) is kept
    with pytest.raises(OSError):
        w.write_model_dir(tmp_path / "spiece.model", parts, [tok], {})  # not a directory
    assert w.write_model_dir(tmp_path / "m", parts, [tok], {"other": 1}) == tmp_path / "m"
    assert json.loads((out / "manifest.json").read_text()) == {"dtype": "float16"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "spiece.model"]
