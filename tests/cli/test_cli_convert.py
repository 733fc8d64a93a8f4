"""``audiogen convert`` end to end: tiny upstream-layout MusicGen directories (mono / stereo,
saved by transformers) and fake hub repos (safetensors, and .bin-only with torch) become audiogen
directories that load and generate transformers' greedy codes; overwrite and path rules; one-line
errors with exit code 2 before any download."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from audiogen_cli.main import cli
from audiogen_musicgen import MusicGen

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "musicgen_pipeline"


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["convert", *args])
    return result.exit_code, result.output


def _check_codes(converted: Path, name: str) -> None:
    with np.load(FIXTURES / name / "expected.npz") as z:
        expected = {k: z[k] for k in z.files}
    model = MusicGen.from_pretrained(converted, dtype="float32")
    codes = model.generate_codes(
        [str(p) for p in expected["prompts"]],
        float(expected["duration"]),
        guidance_scale=float(expected["guidance_scale"]),
        greedy=True,
    )
    np.testing.assert_array_equal(codes, expected["codes"])


def _repo_files(name: str) -> dict[str, Any]:
    return {p.name: p for p in (FIXTURES / name).iterdir() if p.name != "expected.npz"}


def test_help_lists_convert() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "convert" in result.output
    result = CliRunner().invoke(cli, ["convert", "--help"])
    assert result.exit_code == 0
    for option in ("--output", "--dtype", "--offline", "--force"):
        assert option in result.output


@pytest.mark.parametrize("name", ["mono", "stereo"])
def test_local_dir_converts_and_generates(tmp_path: Path, name: str) -> None:
    out = tmp_path / "converted"
    code, output = _run(str(FIXTURES / name), "-o", str(out))
    assert code == 0, output
    assert f"detected: safetensors checkpoint, MusicGen {name}" in output
    assert f"wrote: {out.resolve()} (float32)" in output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["variant"] == name and manifest["source_format"] == "safetensors"
    _check_codes(out, name)


def test_overwrite_needs_force_and_dtype(tmp_path: Path) -> None:
    out = tmp_path / "converted"
    assert _run(str(FIXTURES / "mono"), "-o", str(out))[0] == 0
    code, output = _run(str(FIXTURES / "stereo"), "-o", str(out))
    assert code == 2 and "already exists" in output and "--force" in output
    assert json.loads((out / "manifest.json").read_text())["variant"] == "mono"
    code, output = _run(str(FIXTURES / "stereo"), "-o", str(out), "--force", "--dtype", "float16")
    assert code == 0, output
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["variant"], manifest["dtype"]) == ("stereo", "float16")
    assert "(float16)" in output


def test_bad_inputs_are_one_line_errors(tmp_path: Path, fake_hub: Any) -> None:
    code, output = _run("./nope/model", "-o", str(tmp_path / "out"))
    assert code == 2 and "does not exist" in output and "Traceback" not in output
    code, output = _run("facebook/musicgen-small", "-o", str(tmp_path / "missing" / "out"))
    assert code == 2 and "does not exist" in output
    assert fake_hub.count == 0  # refused before downloading anything
    code, output = _run(str(FIXTURES / "mono"), "-o", str(tmp_path / "a" / ".." / "b"))
    assert code == 2 and "'..'" in output
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "weights.npz").write_bytes(b"")
    code, output = _run(str(odd), "-o", str(tmp_path / "out"))
    assert code == 2 and "no checkpoint audiogen recognises" in output and str(odd) in output
    code, output = _run(str(FIXTURES / "mono"), "-o", str(tmp_path / "out"), "--dtype", "int8")
    assert code == 2 and "int8" in output  # click's own choice check
    code, output = _run("someone/musicgen-copy", "-o", str(tmp_path / "out"))
    assert code == 2 and "--trust-remote-code" in output and fake_hub.count == 0
    assert not (tmp_path / "out").exists()


def test_hub_repo_fetches_safetensors_only(tmp_path: Path, fake_hub: Any) -> None:
    files = _repo_files("mono")
    files["pytorch_model.bin"] = b"a duplicate of the safetensors: never downloaded"
    fake_hub.add("facebook/musicgen-small", files)
    out = tmp_path / "small"
    code, output = _run("facebook/musicgen-small", "-o", str(out))
    assert code == 0, output
    assert fake_hub.count == 1
    snapshot = Path(fake_hub.snapshot_download("facebook/musicgen-small", local_files_only=True))
    assert not (snapshot / "pytorch_model.bin").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"] == "facebook/musicgen-small"
    assert manifest["revision"] == snapshot.name
    _check_codes(out, "mono")
    # Offline: the hub cache alone is enough.
    code, output = _run("facebook/musicgen-small", "-o", str(tmp_path / "again"), "--offline")
    assert code == 0, output
    assert fake_hub.calls[-1]["local_files_only"] is True


def test_bin_only_hub_repo(torch: ModuleType, tmp_path: Path, fake_hub: Any) -> None:
    from safetensors.torch import load_file

    repo = tmp_path / "repo"
    shutil.copytree(FIXTURES / "stereo", repo, ignore=shutil.ignore_patterns("model.safetensors"))
    state = load_file(str(FIXTURES / "stereo" / "model.safetensors"))
    keys = sorted(state)
    weight_map = {}
    for i in (1, 2):
        shard = f"pytorch_model-0000{i}-of-00002.bin"
        part = keys[i - 1 :: 2]
        torch.save({k: state[k] for k in part}, repo / shard)
        weight_map.update(dict.fromkeys(part, shard))
    (repo / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (repo / "expected.npz").unlink()
    fake_hub.add_dir("facebook/musicgen-stereo-large", repo)
    out = tmp_path / "large"
    code, output = _run("facebook/musicgen-stereo-large", "-o", str(out))
    assert code == 0, output
    assert "detected: bin-sharded checkpoint, MusicGen stereo (8 codebooks)" in output
    assert fake_hub.count == 2  # safetensors first, then the .bin files
    assert any("pytorch_model-*.bin" in c["allow_patterns"] for c in fake_hub.calls[1:])
    _check_codes(out, "stereo")


def test_style_hub_repo_with_companions(torch: ModuleType, tmp_path: Path, fake_hub: Any) -> None:
    """``audiogen convert facebook/musicgen-style``: the audiocraft state_dict.bin, then t5-base,
    MERT and encodec_32khz, into one directory that generates with a style reference."""
    import importlib.util

    from audiogen_core import audio

    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    builder_path = Path(__file__).resolve().parents[2] / "tools" / "fixtures" / "musicgen_style.py"
    spec = importlib.util.spec_from_file_location("musicgen_style_builder", builder_path)
    assert spec and spec.loader
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    upstream = fixtures / "musicgen_style" / "upstream"
    companions = builder.companion_dirs(tmp_path / "companions", upstream / "encodec")
    fake_hub.add(
        "facebook/musicgen-style", {"state_dict.bin": upstream / "style" / "state_dict.bin"}
    )
    repos = {"t5": "t5-base", "mert": "m-a-p/MERT-v1-95M", "encodec": "facebook/encodec_32khz"}
    for name, repo in repos.items():
        fake_hub.add_dir(repo, companions[name])
    out = tmp_path / "style-out"
    code, output = _run("facebook/musicgen-style", "-o", str(out), "--dtype", "float16")
    assert code == 0, output
    assert "MusicGen style (4 codebooks)" in output
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["model"], manifest["variant"], manifest["dtype"]) == (
        "musicgen-style",
        "style",
        "float16",
    )
    assert {c["repo_id"] for c in fake_hub.calls} == {"facebook/musicgen-style", *repos.values()}
    m = MusicGen.from_pretrained(out)
    t = np.arange(3 * 32_000 + 100) / 32_000
    ref = audio.write(tmp_path / "ref.wav", 0.3 * np.sin(2 * np.pi * 330 * t)[None], 32_000)
    wave = m.generate("x", 0.2, style=ref, seed=0, style_beta=5.0)
    assert wave.shape == (1, 1, 6400) and np.isfinite(wave).all()
