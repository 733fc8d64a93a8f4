"""Packaging: the workspace builds five wheels of one version, and the audiogen-core wheel alone
(plus its registry dependencies, in a fresh venv) encodes and decodes audio with a tiny EnCodec.

This installs from the package registry (or uv's cache), so it is the slowest test here (~30 s warm).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = [
    "audiogen_core",
    "audiogen_musicgen",
    "audiogen_stableaudio",
    "audiogen_convert",
    "audiogen_cli",
]


def _load_check_versions():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "check_versions", ROOT / "tools" / "check_versions.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not on PATH; the packaging test needs it (pip install uv)")
    return uv


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [_uv(), "build", "--all-packages", "--quiet", "-o", str(out)], cwd=ROOT, check=True
    )
    return out


def test_versions_agree() -> None:
    assert _load_check_versions().problems() == []


def test_version_checker_catches_a_mismatch(tmp_path: Path) -> None:
    tree = tmp_path / "ws"
    shutil.copytree(ROOT / "packages", tree / "packages", ignore=shutil.ignore_patterns("*.pyc"))
    cli = tree / "packages" / "audiogen-cli" / "pyproject.toml"
    cli.write_text(cli.read_text().replace('version = "0.1.0"', 'version = "0.1.1"', 1))
    found = _load_check_versions().problems(tree)
    assert any("package versions differ" in p for p in found)
    assert any("audiogen-cli: __version__ 0.1.0 != pyproject 0.1.1" in p for p in found)


def test_all_wheels_built_with_one_version(dist: Path) -> None:
    wheels = sorted(p.name for p in dist.glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == sorted(PACKAGES)
    assert {w.split("-")[1] for w in wheels} == {"0.1.0"}
    for wheel in dist.glob("*.whl"):
        if wheel.name.startswith("audiogen_core-"):
            continue
        with zipfile.ZipFile(wheel) as z:
            meta = next(n for n in z.namelist() if n.endswith("METADATA"))
            text = z.read(meta).decode()
        assert "Requires-Dist: audiogen-core<0.2,>=0.1.0" in text, wheel.name


USE_CORE = r"""
import importlib.util, sys, numpy as np
fixture = sys.argv[1]
import audiogen_core
from audiogen_core import audio, backend
from audiogen_core.encodec import EncodecModel
for name in ("torch", "transformers", "audiogen_musicgen", "audiogen_cli"):
    assert importlib.util.find_spec(name) is None, f"{name} leaked into a core-only install"
ref = np.load(f"{fixture}/reference.npz")
model = EncodecModel.from_pretrained(f"{fixture}/model")
codes = np.array(model.encode(ref["audio"]))
assert (codes == ref["codes"]).all(), "codes differ from transformers"
decoded = np.array(model.decode(ref["codes"]))
err = float(np.abs(decoded - ref["decoded"]).max())
assert err <= 1e-4, err
path = audio.write(sys.argv[2], decoded[0], model.sample_rate)
back, sr = audio.read(path)
assert sr == model.sample_rate and back.shape == decoded[0].shape
print("core wheel ok", backend.active_blas(), err)
"""


def test_core_wheel_alone_round_trips_audio(dist: Path, tmp_path: Path) -> None:
    fixture = ROOT / "tests" / "fixtures" / "encodec"
    assert (fixture / "reference.npz").exists(), "run tools/make_fixtures.py encodec"
    venv = tmp_path / "venv"
    uv = _uv()
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    py = venv / "bin" / "python"
    (wheel,) = dist.glob("audiogen_core-*.whl")
    subprocess.run([uv, "pip", "install", "--quiet", "--python", str(py), str(wheel)], check=True)
    proc = subprocess.run(
        [str(py), "-c", USE_CORE, str(fixture), str(tmp_path / "out.wav")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "core wheel ok" in proc.stdout
