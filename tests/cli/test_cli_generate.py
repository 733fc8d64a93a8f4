"""``audiogen generate`` end to end on tiny local upstream-layout MusicGen directories (mono and
stereo, written by transformers' save_pretrained): right length, rate and channels, the same audio
as the library for the same seed, one file per prompt, and one-line errors before any work."""

from __future__ import annotations

from pathlib import Path

from audiogen_core import audio

import numpy as np
import pytest
from click.testing import CliRunner

from audiogen_cli.main import cli
from audiogen_musicgen import MusicGen

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "musicgen_pipeline"


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize(("variant", "channels"), [("mono", 1), ("stereo", 2)])
def test_generate_writes_audio_like_the_library(
    variant: str, channels: int, tmp_path: Path
) -> None:
    model_dir = str(FIXTURES / variant)
    out = tmp_path / "beat.wav"
    cache = tmp_path / "cache"
    code, output = _run(
        "generate",
        "lofi beat",
        "-m",
        model_dir,
        "-d",
        "1",
        "-o",
        str(out),
        "--seed",
        "3",
        "--cache-dir",
        str(cache),
        "-q",
    )
    assert code == 0, output
    wave, sr = audio.read(out)
    m = MusicGen.from_pretrained(model_dir, cache_dir=cache)
    assert sr == m.sample_rate
    assert wave.shape == (channels, m.sample_rate)
    expected = np.clip(m.generate("lofi beat", 1.0, seed=3)[0], -1, 1)
    np.testing.assert_allclose(wave, expected, atol=2.0**-15 + 1e-6)  # 16-bit wav


def test_several_prompts_are_numbered(tmp_path: Path) -> None:
    out = tmp_path / "song.flac"
    code, output = _run(
        "generate",
        "a",
        "b",
        "-m",
        str(FIXTURES / "mono"),
        "-d",
        "0.5",
        "-o",
        str(out),
        "--cache-dir",
        str(tmp_path / "c"),
        "-q",
    )
    assert code == 0, output
    assert sorted(p.name for p in tmp_path.glob("song-*.flac")) == ["song-1.flac", "song-2.flac"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "x.mp4"], "output must end in"),
        (["-o", "nowhere/x.wav"], "does not exist"),
        (["-d", "0"], "duration"),
        (["-d", "31"], "duration"),
        (["--temperature", "0"], "temperature"),
        (["--top-k", "0"], "top_k"),
        (["--top-p", "1.5"], "top_p"),
        (["-m", "stable-audio-small"], "not in this release"),
        (["-m", "./no/such/dir"], "no/such/dir"),
    ],
)
def test_bad_options_are_one_line_errors(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["generate", "x", "-m", str(FIXTURES / "mono"), "--cache-dir", str(tmp_path / "c"), "-q"]
    code, output = _run(*base, *args)
    assert code == 2, output
    assert message in output and "Traceback" not in output
    assert not list(tmp_path.glob("*.wav"))
