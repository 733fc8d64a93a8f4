"""``audiogen_convert.musicgen.convert_musicgen`` against the tiny transformers MusicGen fixtures
(tests/fixtures/musicgen_pipeline, built by tools/fixtures/musicgen_pipeline.py).

Without torch: the committed safetensors fixtures convert, load and generate transformers'
greedy codes; sharded safetensors convert to the same arrays; mono/stereo come from the config;
dtype casts, overwrite rules and errors. With torch (the ``torch`` fixture): the fixture model is
loaded by transformers and saved in each upstream format (single / sharded safetensors by
``save_pretrained``, single / sharded ``.bin`` as transformers < 4.35 laid them out) and every
format converts to array-equal weights that generate the fixture's codes; a bf16 checkpoint keeps
bf16 through both file formats.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core.errors import (
    CorruptWeightsError,
    InvalidInputError,
    MissingWeightsError,
    WeightsError,
)
from audiogen_core.weights import load_safetensors

import mlx.core as mx
import numpy as np
import pytest

from audiogen_convert import formats
from audiogen_convert.musicgen import COMPONENTS, convert_musicgen
from audiogen_musicgen import MusicGen
from audiogen_musicgen import convert as mg

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "musicgen_pipeline"
UPSTREAM_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def _expected(name: str) -> dict[str, Any]:
    with np.load(FIXTURES / name / "expected.npz") as z:
        return {k: z[k] for k in z.files}


def _weights(converted: Path) -> dict[str, dict[str, mx.array]]:
    return {p: load_safetensors(converted / p / "model.safetensors") for p in COMPONENTS}


def _assert_same_weights(a: Path, b: Path) -> int:
    """Every component tensor of two converted directories array-equal (dtype included)."""
    wa, wb = _weights(a), _weights(b)
    n = 0
    for part in COMPONENTS:
        assert wa[part].keys() == wb[part].keys(), part
        for k, v in wa[part].items():
            assert v.dtype == wb[part][k].dtype, (part, k)
            np.testing.assert_array_equal(
                np.array(v.astype(mx.float32)), np.array(wb[part][k].astype(mx.float32))
            )
            n += 1
    return n


def _check_greedy_codes(converted: Path, name: str) -> None:
    """The converted model's greedy CFG codes equal what transformers generated (fixture)."""
    expected = _expected(name)
    model = MusicGen.from_pretrained(converted, dtype="float32")
    prompts = [str(p) for p in expected["prompts"]]
    codes = model.generate_codes(
        prompts,
        float(expected["duration"]),
        guidance_scale=float(expected["guidance_scale"]),
        greedy=True,
    )
    np.testing.assert_array_equal(codes, expected["codes"])


def _copy_meta(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for name in UPSTREAM_FILES:
        shutil.copyfile(src / name, dst / name)
    return dst


@pytest.mark.parametrize(("name", "channels"), [("mono", 1), ("stereo", 2)])
def test_safetensors_fixture_converts_and_generates(
    tmp_path: Path, name: str, channels: int
) -> None:
    out = tmp_path / "out"
    result = convert_musicgen(FIXTURES / name, out)
    assert result.out_dir == out.resolve() and result.format == formats.SAFETENSORS
    assert result.variant == name and result.dtype == "float32"
    assert result.num_codebooks == 4 * channels
    manifest = json.loads((out / mg.MANIFEST).read_text())
    assert manifest["format"] == mg.FORMAT and manifest["source_format"] == formats.SAFETENSORS
    assert manifest["source"] == str((FIXTURES / name).resolve())
    assert manifest["variant"] == name and manifest["audio_channels"] == channels
    assert manifest["converter"] == "audiogen-convert 0.1.0"
    assert manifest["audiogen_version"] == "0.1.0" and manifest["dtype"] == "float32"
    assert sorted(p.name for p in out.iterdir()) == [
        "decoder",
        "encodec",
        "manifest.json",
        "t5",
        "tokenizer",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary directory left
    _check_greedy_codes(out, name)


def test_same_arrays_as_the_in_process_conversion(tmp_path: Path) -> None:
    ours = convert_musicgen(FIXTURES / "stereo", tmp_path / "ours").out_dir
    in_process = mg.convert(FIXTURES / "stereo", tmp_path / "in_process")
    assert _assert_same_weights(ours, in_process) > 50


def test_variant_comes_from_the_config_not_the_name(tmp_path: Path) -> None:
    misleading = tmp_path / "musicgen-small"  # a mono name on the stereo checkpoint
    shutil.copytree(FIXTURES / "stereo", misleading)
    assert convert_musicgen(misleading, tmp_path / "a").variant == "stereo"
    misleading = tmp_path / "musicgen-stereo-small"
    shutil.copytree(FIXTURES / "mono", misleading)
    assert convert_musicgen(misleading, tmp_path / "b").variant == "mono"


def test_sharded_safetensors_convert_to_the_same_arrays(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    src = FIXTURES / "mono"
    sharded = _copy_meta(src, tmp_path / "sharded")
    tensors = load_file(str(src / "model.safetensors"))
    keys = sorted(tensors)
    names = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    weight_map = {}
    for i, shard in enumerate(names):
        part = keys[i::3]
        save_file({k: tensors[k] for k in part}, str(sharded / shard))
        weight_map.update(dict.fromkeys(part, shard))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    result = convert_musicgen(sharded, tmp_path / "out")
    assert result.format == formats.SAFETENSORS_SHARDED
    single = convert_musicgen(src, tmp_path / "single").out_dir
    _assert_same_weights(result.out_dir, single)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_dtype_casts_floats_only(tmp_path: Path, dtype: str) -> None:
    base = convert_musicgen(FIXTURES / "mono", tmp_path / "base").out_dir
    result = convert_musicgen(FIXTURES / "mono", tmp_path / dtype, dtype=dtype)
    assert result.dtype == dtype
    assert json.loads((result.out_dir / mg.MANIFEST).read_text())["dtype"] == dtype
    want = getattr(mx, dtype)
    ref, got = _weights(base), _weights(result.out_dir)
    for part in COMPONENTS:
        assert ref[part].keys() == got[part].keys()
        for k, v in got[part].items():
            assert v.dtype == want, (part, k)
            np.testing.assert_array_equal(  # via float32: exact for every target dtype
                np.array(v.astype(mx.float32)),
                np.array(ref[part][k].astype(want).astype(mx.float32)),
            )
    MusicGen.from_pretrained(result.out_dir, dtype="float32")  # loads back
    with pytest.raises(InvalidInputError, match="dtype must be one of"):
        convert_musicgen(FIXTURES / "mono", tmp_path / "x", dtype="int8")


def test_output_rules(tmp_path: Path) -> None:
    src = FIXTURES / "mono"
    out = tmp_path / "out"
    convert_musicgen(src, out)
    stamp = (out / mg.MANIFEST).stat().st_mtime_ns
    with pytest.raises(InvalidInputError, match=r"already exists.*--force"):
        convert_musicgen(src, out)
    assert (out / mg.MANIFEST).stat().st_mtime_ns == stamp  # untouched
    (out / "stale.txt").write_text("from an older conversion")
    result = convert_musicgen(FIXTURES / "stereo", out, force=True)
    assert result.variant == "stereo" and not (out / "stale.txt").exists()
    assert json.loads((out / mg.MANIFEST).read_text())["audio_channels"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    with pytest.raises(InvalidInputError, match=r"must not contain '\.\.'"):
        convert_musicgen(src, tmp_path / "a" / ".." / "b")
    with pytest.raises(InvalidInputError, match=r"parent directory .* does not exist"):
        convert_musicgen(src, tmp_path / "missing" / "out")
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInputError, match="not a directory"):
        convert_musicgen(src, tmp_path / "file", force=True)
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    for target in (copy, tmp_path):  # the source itself, or a directory holding it
        with pytest.raises(InvalidInputError, match="would overwrite the source"):
            convert_musicgen(copy, target, force=True)
    assert (copy / "model.safetensors").is_file()


def test_a_failed_conversion_leaves_nothing_and_keeps_the_old_copy(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    out = tmp_path / "out"
    convert_musicgen(FIXTURES / "mono", out)
    broken = _copy_meta(FIXTURES / "mono", tmp_path / "broken")
    tensors = load_file(str(FIXTURES / "mono" / "model.safetensors"))
    del tensors["decoder.model.decoder.layers.0.fc1.weight"]
    save_file(tensors, str(broken / "model.safetensors"))
    with pytest.raises(MissingWeightsError, match=r"layers\.0\.fc1") as e:
        convert_musicgen(broken, out, force=True)
    assert str(broken / "model.safetensors") in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "out"]
    _check_greedy_codes(out, "mono")  # the previous conversion is intact


def test_unsupported_checkpoints(tmp_path: Path) -> None:
    melody = _copy_meta(FIXTURES / "mono", tmp_path / "melody")
    shutil.copyfile(FIXTURES / "mono" / "model.safetensors", melody / "model.safetensors")
    config = json.loads((melody / "config.json").read_text())
    config["model_type"] = "musicgen_melody"
    (melody / "config.json").write_text(json.dumps(config))
    # A text model's weights under a melody config: caught before anything is written.
    with pytest.raises(WeightsError, match=r"missing weights: audio_enc_to_dec_proj") as e:
        convert_musicgen(melody, tmp_path / "out")
    assert str(melody / "model.safetensors") in str(e.value)
    assert not (tmp_path / "out").exists()

    config["model_type"] = "t5"
    (melody / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="not a MusicGen config"):
        convert_musicgen(melody, tmp_path / "out")

    audiocraft = tmp_path / "audiocraft"
    audiocraft.mkdir()
    (audiocraft / "state_dict.bin").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"state_dict\.bin: truncated or not a PyTorch"):
        convert_musicgen(audiocraft, tmp_path / "out")  # before any companion is fetched
    stable = tmp_path / "stable"
    stable.mkdir()
    (stable / "model_config.json").write_text("{}")
    shutil.copyfile(FIXTURES / "mono" / "model.safetensors", stable / "model.safetensors")
    with pytest.raises(WeightsError, match=r"stable-audio-tools checkpoint.*not yet supported"):
        convert_musicgen(stable, tmp_path / "out")

    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="no checkpoint audiogen recognises") as e:
        convert_musicgen(unknown, tmp_path / "out")
    assert str(unknown) in str(e.value)
    truncated = _copy_meta(FIXTURES / "mono", tmp_path / "truncated")
    data = (FIXTURES / "mono" / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[:1000])
    with pytest.raises(CorruptWeightsError, match="truncated") as e:
        convert_musicgen(truncated, tmp_path / "out")
    assert str(truncated / "model.safetensors") in str(e.value)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_bin_without_torch_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _copy_meta(FIXTURES / "mono", tmp_path / "medium")
    (src / "pytorch_model.bin").write_bytes(b"PK\x03\x04 placeholder")
    monkeypatch.setitem(sys.modules, "torch", None)  # no [torch] extra
    with pytest.raises(WeightsError, match=r'pip install "audiogen-convert\[torch\]"') as e:
        convert_musicgen(src, tmp_path / "out")
    assert str(src / "pytorch_model.bin") in str(e.value)
    # The in-process path (MusicGen.from_pretrained) reads .bin through audiogen-convert too,
    # and says the same.
    with pytest.raises(WeightsError, match=r"audiogen-convert\[torch\]") as e:
        MusicGen.from_pretrained(src, cache_dir=tmp_path / "cache")
    assert str(src / "pytorch_model.bin") in str(e.value)
    assert not (tmp_path / "out").exists()


def test_musicgen_without_audiogen_convert_keeps_its_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _copy_meta(FIXTURES / "mono", tmp_path / "medium")
    (src / "pytorch_model.bin").write_bytes(b"PK\x03\x04 placeholder")
    monkeypatch.setitem(sys.modules, "audiogen_convert.formats", None)  # not installed
    with pytest.raises(WeightsError, match=r'pip install "audiogen-convert\[torch\]"') as e:
        mg.weight_files(src)
    assert "pytorch_model.bin" in str(e.value) and str(src) in str(e.value)


def _save_bin(torch: ModuleType, model: Any, out: Path, shards: int) -> None:
    """transformers' pre-safetensors layout: ``pytorch_model.bin``, or
    ``pytorch_model-0000i-of-0000n.bin`` + ``pytorch_model.bin.index.json`` (state dict of the
    model, tied tensors included as separate keys, as ``torch.save(model.state_dict())`` writes)."""
    model.config.save_pretrained(str(out))
    state = model.state_dict()
    if shards == 1:
        torch.save(state, out / "pytorch_model.bin")
        return
    keys = list(state)
    weight_map: dict[str, str] = {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = keys[i::shards]
        torch.save({k: state[k] for k in part}, out / name)
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2))


def _upstream_in_every_format(
    torch: ModuleType, name: str, root: Path, model: Any
) -> dict[str, Path]:
    dirs = {fmt: root / fmt for fmt in formats.FORMATS[:4]}
    model.save_pretrained(str(dirs[formats.SAFETENSORS]))
    model.save_pretrained(str(dirs[formats.SAFETENSORS_SHARDED]), max_shard_size="20KB")
    _save_bin(torch, model, _mk(dirs[formats.BIN]), 1)
    _save_bin(torch, model, _mk(dirs[formats.BIN_SHARDED]), 3)
    for d in dirs.values():
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(FIXTURES / name / f, d / f)
    return dirs


def _mk(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


@pytest.mark.torch
@pytest.mark.parametrize("name", ["mono", "stereo"])
def test_every_upstream_format_converts_to_identical_weights(
    torch: ModuleType, tmp_path: Path, name: str
) -> None:
    from transformers import MusicgenForConditionalGeneration

    model = MusicgenForConditionalGeneration.from_pretrained(str(FIXTURES / name)).eval()
    dirs = _upstream_in_every_format(torch, name, tmp_path / "upstream", model)
    assert len(list(dirs[formats.SAFETENSORS_SHARDED].glob("model-*.safetensors"))) > 2
    assert "text_encoder.encoder.embed_tokens.weight" in torch.load(
        dirs[formats.BIN] / "pytorch_model.bin", weights_only=True
    )  # the tied T5 embedding under both names, as in hub .bin files
    converted = {}
    for fmt, src in dirs.items():
        assert formats.detect(src).format == fmt
        result = convert_musicgen(src, tmp_path / f"out-{fmt}")
        assert (result.format, result.variant, result.dtype) == (fmt, name, "float32")
        converted[fmt] = result.out_dir
    reference = convert_musicgen(FIXTURES / name, tmp_path / "out-fixture").out_dir
    for fmt, out in converted.items():
        assert _assert_same_weights(out, reference) > 50, fmt
    _check_greedy_codes(converted[formats.BIN_SHARDED], name)
    _check_greedy_codes(converted[formats.BIN], name)


@pytest.mark.torch
def test_in_process_loading_reads_bin(torch: ModuleType, tmp_path: Path) -> None:
    """``MusicGen.from_pretrained`` on a .bin-only directory goes through audiogen-convert."""
    from safetensors.torch import load_file

    src = _copy_meta(FIXTURES / "mono", tmp_path / "medium")
    torch.save(load_file(str(FIXTURES / "mono" / "model.safetensors")), src / "pytorch_model.bin")
    model = MusicGen.from_pretrained(src, cache_dir=tmp_path / "cache", dtype="float32")
    expected = _expected("mono")
    codes = model.generate_codes(
        [str(p) for p in expected["prompts"]],
        float(expected["duration"]),
        guidance_scale=float(expected["guidance_scale"]),
        greedy=True,
    )
    np.testing.assert_array_equal(codes, expected["codes"])


@pytest.mark.torch
def test_bf16_checkpoint_keeps_bf16(torch: ModuleType, tmp_path: Path) -> None:
    from transformers import MusicgenForConditionalGeneration

    model = MusicgenForConditionalGeneration.from_pretrained(
        str(FIXTURES / "mono"), dtype=torch.bfloat16
    ).eval()
    assert model.decoder.lm_heads[0].weight.dtype == torch.bfloat16
    dirs = _upstream_in_every_format(torch, "mono", tmp_path / "upstream", model)
    outs = {}
    for fmt, src in dirs.items():
        result = convert_musicgen(src, tmp_path / f"out-{fmt}")
        assert result.dtype == "bfloat16", fmt
        outs[fmt] = result.out_dir
    for out in outs.values():
        _assert_same_weights(out, outs[formats.SAFETENSORS])
    weights = _weights(outs[formats.BIN])
    heads = weights["decoder"]["lm_heads.weight"]  # per-codebook heads, concatenated
    assert heads.dtype == mx.bfloat16
    want = torch.cat([h.weight.detach() for h in model.decoder.lm_heads]).float().numpy()
    np.testing.assert_array_equal(np.array(heads.astype(mx.float32)), want)
    # Cast at conversion: bf16 → float32 is exact.
    up = convert_musicgen(dirs[formats.BIN], tmp_path / "f32", dtype="float32").out_dir
    np.testing.assert_array_equal(np.array(_weights(up)["decoder"]["lm_heads.weight"]), want)
    MusicGen.from_pretrained(outs[formats.BIN], dtype="float32").generate_codes(
        "lofi beat", 0.1, greedy=True
    )
