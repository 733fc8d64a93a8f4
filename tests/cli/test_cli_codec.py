"""``audiogen codec`` end to end on the tiny EnCodec fixture (a transformers-layout directory):
the CLI's tokens equal transformers' codes, decoding writes a file of the right rate, length and
channels, and bad input is one red line with exit code 2."""

from __future__ import annotations

from pathlib import Path

from audiogen_core import audio
from audiogen_core.codes import load_codes

import numpy as np
import pytest
from click.testing import CliRunner

from audiogen_cli.main import cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "encodec"


@pytest.fixture
def wav(tmp_path: Path) -> tuple[Path, np.ndarray]:
    ref = np.load(FIXTURE / "reference.npz")
    path = tmp_path / "in.wav"
    audio.write(path, ref["audio"][0], 4000, subtype="FLOAT")
    return path, ref


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_encode_matches_reference_codes_and_decode_writes_audio(
    wav: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    path, ref = wav
    codes_path = tmp_path / "in.npz"
    code, out = _run(
        "codec", "encode", str(path), "-o", str(codes_path), "-m", str(FIXTURE / "model")
    )
    assert code == 0, out
    data = load_codes(codes_path)
    np.testing.assert_array_equal(data.codes, ref["codes"])
    assert (data.sample_rate, data.channels, data.num_samples) == (4000, 1, ref["audio"].shape[-1])

    out_wav = tmp_path / "out.flac"
    code, out = _run(
        "codec", "decode", str(codes_path), "-o", str(out_wav), "-m", str(FIXTURE / "model")
    )
    assert code == 0, out
    decoded, sr = audio.read(out_wav)
    assert sr == 4000 and decoded.shape == (1, ref["audio"].shape[-1])
    # flac is 24-bit by default: within one quantisation step (plus clipping of the reference).
    np.testing.assert_allclose(decoded[0], np.clip(ref["decoded"][0, 0], -1, 1), atol=2.0**-22)


def test_roundtrip_resamples_and_mixes_any_input(tmp_path: Path) -> None:
    t = np.arange(8820) / 44100
    stereo = 0.3 * np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)])
    src = audio.write(tmp_path / "stereo.ogg", stereo.astype(np.float32), 44100)
    code, out = _run(
        "codec", "roundtrip", str(src), "-o", str(tmp_path / "rt.wav"), "-m", str(FIXTURE / "model")
    )
    assert code == 0, out
    back, sr = audio.read(tmp_path / "rt.wav")
    assert sr == 4000 and back.shape == (1, 800)  # 0.2 s at the codec's rate, mono


def test_bad_inputs_are_one_line_errors(tmp_path: Path, wav: tuple[Path, np.ndarray]) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    code, out = _run(
        "codec", "roundtrip", str(text), "-o", str(tmp_path / "x.wav"), "-m", str(FIXTURE / "model")
    )
    assert code == 2 and "notes.wav" in out and "Traceback" not in out
    assert not (tmp_path / "x.wav").exists()

    code, out = _run(
        "codec", "decode", str(text), "-o", str(tmp_path / "y.wav"), "-m", str(FIXTURE / "model")
    )
    assert code == 2 and "not an audiogen codes file" in out

    code, out = _run(
        "codec",
        "roundtrip",
        str(wav[0]),
        "-o",
        str(tmp_path / "z.wav"),
        "-m",
        str(tmp_path / "missing"),
    )
    assert code == 2 and "missing" in out

    code, out = _run(
        "codec",
        "encode",
        str(wav[0]),
        "-o",
        str(tmp_path / "no" / "c.npz"),
        "-m",
        str(FIXTURE / "model"),
    )
    assert code == 2 and "does not exist" in out


def test_hub_id_goes_through_the_hub(
    fake_hub, wav: tuple[Path, np.ndarray], tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    fake_hub.add_dir("facebook/encodec_32khz", FIXTURE / "model")
    code, out = _run("codec", "encode", str(wav[0]), "-o", str(tmp_path / "c.npz"))
    assert code == 0, out
    np.testing.assert_array_equal(load_codes(tmp_path / "c.npz").codes, wav[1]["codes"])
    assert fake_hub.count == 1
    assert fake_hub.calls[0]["repo_id"] == "facebook/encodec_32khz"
    assert "*.safetensors" in fake_hub.calls[0]["allow_patterns"]  # type: ignore[operator]

    code, out = _run(
        "codec", "encode", str(wav[0]), "-o", str(tmp_path / "d.npz"), "-m", "someone/unknown-codec"
    )
    assert code == 2 and "trust_remote_code" in out
