"""``audiogen generate`` end to end on tiny local upstream-layout MusicGen directories (mono and
stereo, written by transformers' save_pretrained) and Stable Audio directories (tests/fixtures/
stableaudio_pipeline: stable-audio-tools small layout, diffusers 1.0 layout, and an ``audiogen
convert``-ed copy): right length, rate and channels, the same audio as the library for the same
seed, one file per prompt, and one-line errors before any work."""

from __future__ import annotations

from pathlib import Path

from audiogen_core import audio

import numpy as np
import pytest
from click.testing import CliRunner

from audiogen_cli.main import cli
from audiogen_musicgen import MusicGen
from audiogen_stableaudio import StableAudio

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "musicgen_pipeline"
SA_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "stableaudio_pipeline"


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


@pytest.mark.parametrize(("variant", "channels"), [("mono", 1), ("stereo", 2)])
def test_generate_with_a_melody_file(variant: str, channels: int, tmp_path: Path) -> None:
    """A melody model from a tiny local upstream dir, a 44.1 kHz stereo melody file: the wav
    has the right shape and equals the library's output for the same melody and seed."""
    model_dir = str(FIXTURES.parent / "musicgen_melody" / variant)
    t = np.arange(44_100) / 44_100
    tune = np.sin(2 * np.pi * 262 * t * (1 + 0.5 * (t > 0.5))).astype(np.float32)
    hum = audio.write(tmp_path / "hum.wav", np.stack([tune, tune]) * 0.5, 44_100)
    out, cache = tmp_path / "song.wav", tmp_path / "cache"
    args = ["generate", "strings", "-m", model_dir, "-d", "1", "-o", str(out), "--seed", "5"]
    code, output = _run(*args, "--melody", str(hum), "--cache-dir", str(cache), "-q")
    assert code == 0, output
    wave, sr = audio.read(out)
    m = MusicGen.from_pretrained(model_dir, cache_dir=cache)
    assert (sr, wave.shape) == (m.sample_rate, (channels, m.sample_rate))
    expected = np.clip(m.generate("strings", 1.0, seed=5, melody=hum)[0], -1, 1)
    np.testing.assert_allclose(wave, expected, atol=2.0**-15 + 1e-6)
    without = np.clip(m.generate("strings", 1.0, seed=5)[0], -1, 1)
    assert np.abs(without - expected).max() > 1e-3  # the melody mattered

    code, output = _run(
        *args, "--melody", str(tmp_path / "none.wav"), "-q", "--cache-dir", str(cache)
    )
    assert code == 2 and "none.wav" in output and "Traceback" not in output
    code, output = _run(
        "generate", "a", "b", "c", "-m", model_dir, "--melody", str(hum), "--melody", str(hum), "-q"
    )
    assert code == 2 and "--melody given 2 times for 3 prompts" in output


def test_melody_on_a_text_model_is_refused(tmp_path: Path) -> None:
    hum = audio.write(tmp_path / "hum.wav", np.zeros((1, 1000), np.float32), 16_000)
    code, output = _run(
        "generate",
        "x",
        "-m",
        str(FIXTURES / "mono"),
        "--melody",
        str(hum),
        "--cache-dir",
        str(tmp_path / "c"),
        "-q",
        "-o",
        str(tmp_path / "o.wav"),
    )
    assert code == 2 and "not a melody model" in output
    assert not (tmp_path / "o.wav").exists()


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
        (["--cfg-scale", "3"], "Stable Audio options"),
        (["-m", "./no/such/dir"], "no/such/dir"),
        (["--quantize", "8"], "divisible by 64"),  # the tiny decoder has no 64-wide input
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


def _sa_small(tmp: Path) -> Path:
    """The small-layout fixture with T5 + tokenizer beside it (as a local copy of a repo)."""
    import shutil

    d = tmp / "sa-small"
    shutil.copytree(SA_FIXTURES / "sat_small", d)
    shutil.copytree(SA_FIXTURES / "diffusers" / "text_encoder", d / "text_encoder")
    shutil.copytree(SA_FIXTURES / "diffusers" / "tokenizer", d / "tokenizer")
    return d


def test_stable_audio_small_writes_stereo_44k(tmp_path: Path) -> None:
    model_dir = _sa_small(tmp_path)
    cache = tmp_path / "cache"
    out = tmp_path / "rain.flac"
    args = ["rain on a tin roof", "warm analog pad", "-m", str(model_dir), "-d", "0.05"]
    code, output = _run(
        "generate", *args, "-o", str(out), "--seed", "1", "--cache-dir", str(cache), "-q"
    )
    assert code == 0, output
    files = sorted(tmp_path.glob("rain-*.flac"))
    assert [p.name for p in files] == ["rain-1.flac", "rain-2.flac"]
    sa = StableAudio.from_pretrained(model_dir, cache_dir=cache)
    expected = np.clip(sa.generate(["rain on a tin roof", "warm analog pad"], 0.05, seed=1), -1, 1)
    for path, want in zip(files, expected, strict=True):
        wave, sr = audio.read(path)
        assert sr == 44100 and wave.shape == (2, round(0.05 * 44100))
        np.testing.assert_allclose(wave, want, atol=2.0**-23 + 1e-6)  # 24-bit flac


def test_stable_audio_1_0_layout_options(tmp_path: Path) -> None:
    out = tmp_path / "pad.wav"
    init = audio.write(tmp_path / "init.wav", np.zeros((1, 800), dtype=np.float32), 16000)
    code, output = _run(
        "generate",
        "warm analog pad",
        "-m",
        str(SA_FIXTURES / "diffusers"),
        "-d",
        "0.03",
        "-o",
        str(out),
        "--steps",
        "3",
        "--cfg-scale",
        "3",
        "--sampler",
        "dpmpp-2m-sde",
        "--negative-prompt",
        "noise",
        "--seconds-start",
        "1",
        "--init-audio",
        str(init),
        "--init-strength",
        "2",
        "--seed",
        "4",
        "--cache-dir",
        str(tmp_path / "c"),
        "-q",
    )
    assert code == 0, output
    wave, sr = audio.read(out)
    assert sr == 44100 and wave.shape == (2, round(0.03 * 44100))


def test_convert_then_generate_stable_audio(tmp_path: Path) -> None:
    converted = tmp_path / "converted"
    code, output = _run("convert", str(_sa_small(tmp_path)), "-o", str(converted))
    assert code == 0, output
    assert "Stable Audio (rf_denoiser; conditioners seconds_total)" in output
    out = tmp_path / "x.wav"
    code, output = _run("generate", "x", "-m", str(converted), "-d", "0.02", "-o", str(out), "-q")
    assert code == 0, output
    assert audio.read(out)[0].shape == (2, round(0.02 * 44100))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-d", "5"], "duration"),
        (["--sampler", "dpmpp-3m-sde"], "objective"),
        (["--steps", "0"], "steps"),
    ],
)
def test_stable_audio_bad_options(args: list[str], message: str, tmp_path: Path) -> None:
    base = ["generate", "x", "-m", str(_sa_small(tmp_path)), "--cache-dir", str(tmp_path / "c")]
    code, output = _run(*base, "-d", "0.01", "-o", str(tmp_path / "x.wav"), "-q", *args)
    assert code == 2, output
    assert message in output and "Traceback" not in output
    assert not list(tmp_path.glob("*.wav"))


def _style_ref(tmp_path: Path, seconds: float = 3.5) -> Path:
    rate = 22_050
    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * 220 * 2 ** (np.floor(t * 2) % 5 / 12) * t).astype(np.float32)
    return audio.write(tmp_path / "ref.wav", 0.5 * tone[None], rate)


def test_generate_with_style_text_and_style_only(tmp_path: Path) -> None:
    """musicgen-style (the converted tiny fixture): text + style uses double guidance with beta
    5 by default (the library's output for the same options), style alone needs no prompt."""
    model_dir = str(FIXTURES.parent / "musicgen_style" / "converted")
    ref = _style_ref(tmp_path)
    out = tmp_path / "s.wav"
    base = ["-m", model_dir, "-d", "0.4", "--seed", "2", "-q", "--style-audio", str(ref)]
    code, output = _run("generate", "upbeat", *base, "-o", str(out))
    assert code == 0, output
    wave, sr = audio.read(out)
    m = MusicGen.from_pretrained(model_dir)
    expected = np.clip(m.generate("upbeat", 0.4, seed=2, style=ref, style_beta=5.0)[0], -1, 1)
    assert (sr, wave.shape) == (32_000, (1, 12_800))
    np.testing.assert_allclose(wave, expected, atol=2.0**-15 + 1e-6)

    only = tmp_path / "only.wav"
    code, output = _run(
        "generate", *base, "--eval-q", "1", "--style-excerpt-start", "0.2", "-o", str(only)
    )
    assert code == 0, output
    wave, _ = audio.read(only)
    expected = np.clip(
        m.generate(None, 0.4, seed=2, style=ref, eval_q=1, style_excerpt_start=0.2)[0], -1, 1
    )
    np.testing.assert_allclose(wave, expected, atol=2.0**-15 + 1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "STYLE", "--style-audio", "SHORT"], "needs at least 3 s"),
        (["x", "-m", "MONO", "--style-audio", "REF"], "not a style model"),
        (["-m", "MONO"], "give a PROMPT"),
        (["x", "-m", "STYLE", "--eval-q", "9"], "--eval-q"),
        (
            ["x", "y", "z", "-m", "STYLE", "--style-audio", "REF", "--style-audio", "REF"],
            "2 times for 3 prompts",
        ),
    ],
)
def test_style_bad_options(args: list[str], message: str, tmp_path: Path) -> None:
    ref = _style_ref(tmp_path)
    short = audio.write(tmp_path / "short.wav", np.zeros((1, 20_000), np.float32), 16_000)
    names = {
        "STYLE": str(FIXTURES.parent / "musicgen_style" / "converted"),
        "MONO": str(FIXTURES / "mono"),
        "REF": str(ref),
        "SHORT": str(short),
    }
    argv = [names.get(a, a) for a in args]
    code, output = _run(
        "generate", *argv, "-q", "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "o.wav")
    )
    assert code == 2, output
    assert message in output and "Traceback" not in output
    assert not (tmp_path / "o.wav").exists()
