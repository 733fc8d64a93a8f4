"""``audiogen_convert.formats``: which upstream layout a directory holds (SPEC §2 order), reading
each file format with dtypes kept, and the errors for missing shards, truncated files, unknown
layouts and a missing torch. Layout tests use placeholder files (detection reads no weights);
the ``.bin`` reading tests take the ``torch`` fixture and compare with torch's own tensors."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from audiogen_core.errors import CorruptWeightsError, MissingWeightsError, WeightsError

import mlx.core as mx
import numpy as np
import pytest

from audiogen_convert import formats

MONO = Path(__file__).resolve().parents[1] / "fixtures" / "musicgen_pipeline" / "mono"


def _layout(root: Path, files: dict[str, str]) -> Path:
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    return root


ST = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
BINS = ["pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin"]


def _index(shards: list[str]) -> str:
    return json.dumps({"metadata": {}, "weight_map": {"a": shards[0], "b": shards[1]}})


LAYOUTS = [
    # (files present, expected format, expected weight files, needs torch)
    (
        {"config.json": "{}", "model.safetensors": "", "pytorch_model.bin": ""},
        formats.SAFETENSORS,
        ["model.safetensors"],
        False,
    ),
    (
        {
            "config.json": "{}",
            "model.safetensors.index.json": _index(ST),
            **dict.fromkeys(ST, ""),
            "pytorch_model.bin": "",
        },
        formats.SAFETENSORS_SHARDED,
        ST,
        False,
    ),
    (
        {
            "config.json": "{}",
            "pytorch_model.bin": "",
            "pytorch_model.bin.index.json": _index(BINS),
        },
        formats.BIN,
        ["pytorch_model.bin"],
        True,
    ),
    (
        {
            "config.json": "{}",
            "pytorch_model.bin.index.json": _index(BINS),
            **dict.fromkeys(BINS, ""),
        },
        formats.BIN_SHARDED,
        BINS,
        True,
    ),
    (
        {"state_dict.bin": "", "compression_state_dict.bin": ""},
        formats.AUDIOCRAFT,
        ["state_dict.bin", "compression_state_dict.bin"],
        True,
    ),
    (
        {"model_config.json": "{}", "model.safetensors": "", "model.ckpt": ""},
        formats.STABLE_AUDIO_TOOLS,
        ["model.safetensors"],
        False,
    ),
    (
        {"model_config.json": "{}", "model.ckpt": ""},
        formats.STABLE_AUDIO_TOOLS,
        ["model.ckpt"],
        True,
    ),
]


@pytest.mark.parametrize(("files", "fmt", "weights", "needs_torch"), LAYOUTS)
def test_detect_follows_the_spec_order(
    tmp_path: Path, files: dict[str, str], fmt: str, weights: list[str], needs_torch: bool
) -> None:
    root = _layout(tmp_path / "repo", files)
    found = formats.detect(root)
    assert found.format == fmt
    assert [f.name for f in found.files] == weights
    assert found.needs_torch == needs_torch
    if "config.json" in files:
        assert found.config == root / "config.json"
    elif "model_config.json" in files:
        assert found.config == root / "model_config.json"
    else:
        assert found.config is None


def test_transformers_config_wins_over_model_config(tmp_path: Path) -> None:
    # A transformers repo that also carries a model_config.json is still a transformers repo.
    root = _layout(
        tmp_path / "repo",
        {"config.json": "{}", "model_config.json": "{}", "model.safetensors": ""},
    )
    assert formats.detect(root).format == formats.SAFETENSORS


def test_unknown_layout_names_the_directory(tmp_path: Path) -> None:
    root = _layout(tmp_path / "odd", {"config.json": "{}", "weights.npz": "", "notes.txt": ""})
    with pytest.raises(MissingWeightsError, match="no checkpoint audiogen recognises") as e:
        formats.detect(root)
    assert str(root) in str(e.value) and "weights.npz" in str(e.value)
    with pytest.raises(WeightsError, match="not a directory"):
        formats.detect(root / "notes.txt")
    with pytest.raises(WeightsError, match="not a directory"):
        formats.detect(tmp_path / "nope")


@pytest.mark.parametrize(
    ("index_name", "shards"),
    [("model.safetensors.index.json", ST), ("pytorch_model.bin.index.json", BINS)],
)
def test_index_errors_name_the_index(tmp_path: Path, index_name: str, shards: list[str]) -> None:
    root = _layout(
        tmp_path / "repo", {"config.json": "{}", index_name: _index(shards), shards[0]: ""}
    )
    with pytest.raises(MissingWeightsError, match=f"shard {shards[1]} is missing") as e:
        formats.detect(root)
    assert str(root / index_name) in str(e.value)

    (root / index_name).write_text(json.dumps({"weight_map": {"a": "../escape.bin"}}))
    with pytest.raises(CorruptWeightsError, match="bad shard name"):
        formats.detect(root)
    (root / index_name).write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CorruptWeightsError, match="no weight_map"):
        formats.detect(root)
    (root / index_name).write_text("{truncated")
    with pytest.raises(CorruptWeightsError, match="unreadable JSON") as corrupt:
        formats.detect(root)
    assert str(root / index_name) in str(corrupt.value)


def test_safetensors_read_and_truncated(tmp_path: Path) -> None:
    found = formats.detect(MONO)
    weights = found.load()
    assert len(weights) > 100 and all(isinstance(v, mx.array) for v in weights.values())
    assert dict(found.tensors()).keys() == weights.keys()
    root = tmp_path / "truncated"
    root.mkdir()
    data = (MONO / "model.safetensors").read_bytes()
    (root / "config.json").write_text("{}")
    (root / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(CorruptWeightsError, match="truncated") as e:
        formats.detect(root).load()
    assert str(root / "model.safetensors") in str(e.value)


def test_duplicate_key_across_shards(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    root = tmp_path / "dup"
    root.mkdir()
    save_file({"a": np.zeros(2, np.float32)}, str(root / "s1.safetensors"))
    save_file({"a": np.ones(2, np.float32)}, str(root / "s2.safetensors"))
    index = {"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CorruptWeightsError, match="keys also in another shard") as e:
        formats.detect(root).load()
    assert "s2.safetensors" in str(e.value)


def test_without_torch_a_bin_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Simulates an install without the [torch] extra (a None entry makes `import torch` fail).
    monkeypatch.setitem(sys.modules, "torch", None)
    path = tmp_path / "pytorch_model.bin"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(WeightsError, match=r'pip install "audiogen-convert\[torch\]"') as e:
        formats.read_bin(path)
    assert str(path) in str(e.value)
    with pytest.raises(WeightsError, match="not found"):
        formats.read_bin(tmp_path / "absent.bin")


@dataclass
class NotATensor:
    """Any class: weights_only loading must refuse to construct it."""

    payload: str = "code could run here"


def test_bin_dtypes_are_kept(torch: ModuleType, tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 5, generator=g)
    state = {
        "f32": base,
        "f16": base.half(),
        "bf16": base.bfloat16(),
        "bf16_strided": base.bfloat16().t(),  # non-contiguous storage view
        "f64": base.double(),
        "i64": torch.arange(6).reshape(2, 3),
        "flag": torch.tensor([True, False]),
    }
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    got = formats.read_bin(path)
    assert got.keys() == state.keys()
    expected_dtypes = {
        "f32": mx.float32,
        "f16": mx.float16,
        "bf16": mx.bfloat16,
        "bf16_strided": mx.bfloat16,
        "f64": mx.float32,  # MLX has no float64 on the GPU; nothing upstream needs it
        "i64": mx.int64,
        "flag": mx.bool_,
    }
    for key, tensor in state.items():
        assert got[key].dtype == expected_dtypes[key], key
        assert tuple(got[key].shape) == tuple(tensor.shape), key
        want = tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
        have = got[key].astype(mx.float32) if tensor.is_floating_point() else got[key]
        np.testing.assert_array_equal(np.array(have), want.astype(np.array(have).dtype))


def test_bin_containers_and_legacy_files(torch: ModuleType, tmp_path: Path) -> None:
    state = {"w": torch.randn(4, 2), "b": torch.zeros(4)}
    cases = {
        # audiocraft's export_lm layout: config as a YAML string beside the tensors.
        "state_dict.bin": {"best_state": state, "xp.cfg": "lm:\n  dim: 4\n", "exported": True},
        "model.ckpt": {"state_dict": state, "global_step": 7},  # a Lightning checkpoint
        "plain.bin": state,
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
    torch.save(state, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)  # no mmap
    for name in [*cases, "legacy.bin"]:
        got = formats.read_bin(tmp_path / name)
        assert got.keys() == state.keys(), name
        for k, v in state.items():
            np.testing.assert_array_equal(np.array(got[k]), v.numpy())


def test_bin_errors_name_the_file(torch: ModuleType, tmp_path: Path) -> None:
    good = tmp_path / "good.bin"
    torch.save({"w": torch.randn(64, 64)}, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptWeightsError, match="truncated or not a PyTorch checkpoint") as e:
        formats.read_bin(truncated)
    assert str(truncated) in str(e.value)

    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x80\x02 definitely not a checkpoint")
    with pytest.raises(CorruptWeightsError) as e:
        formats.read_bin(garbage)
    assert str(garbage) in str(e.value)

    unsafe = tmp_path / "unsafe.bin"
    torch.save({"w": torch.zeros(2), "obj": NotATensor()}, unsafe)
    with pytest.raises(CorruptWeightsError, match="weights_only") as e:
        formats.read_bin(unsafe)
    assert str(unsafe) in str(e.value)

    no_table = tmp_path / "no_table.bin"
    torch.save({"step": 3, "name": "x"}, no_table)
    with pytest.raises(CorruptWeightsError, match="no tensor table") as e:
        formats.read_bin(no_table)
    assert str(no_table) in str(e.value)
