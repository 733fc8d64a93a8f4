"""audiogen_core.audio: codec round trips, resampling accuracy, loudness against pyloudnorm,
atomic writes, path rules, bad inputs and playback (player and subprocess patched)."""

from __future__ import annotations

import os
import subprocess
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

from audiogen_core import audio
from audiogen_core.errors import AudioFileError, AudiogenError, InvalidInputError

import numpy as np
import pyloudnorm
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

SR = 44100
LSB16 = 2.0**-15  # one 16-bit step: libsndfile's wav conversion can be off by up to one step
LSB24 = 2.0**-23


def sine(freq: float, seconds: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def noise(shape: tuple[int, ...], amp: float = 0.5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-amp, amp, shape).astype(np.float32)


def peak_freq(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


# Round trips


def test_wav_float_is_exact(tmp_path: Path) -> None:
    x = noise((2, 5000), amp=1.0)
    out = audio.write(tmp_path / "a.wav", x, SR, subtype="FLOAT")
    back, sr = audio.read(out)
    assert sr == SR
    assert back.dtype == np.float32 and back.shape == (2, 5000)
    np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize(
    ("name", "subtype", "bound"),
    [
        ("a.wav", None, LSB16),  # default PCM_16
        ("a.wav", "PCM_24", LSB24),
        ("a.flac", "PCM_16", LSB16),
        ("a.flac", None, LSB24),  # default PCM_24
    ],
)
def test_pcm_round_trip_within_quantisation(
    tmp_path: Path, name: str, subtype: str | None, bound: float
) -> None:
    x = noise((2, 8000), amp=1.0)
    back, sr = audio.read(audio.write(tmp_path / name, x, SR, subtype=subtype))
    assert sr == SR and back.shape == x.shape
    err = float(np.abs(back - x).max())
    assert err <= bound, err


def test_ogg_round_trip_loose(tmp_path: Path) -> None:
    # Vorbis is lossy: a clean tone survives with a small error, same length and pitch.
    x = np.stack([sine(440, 1.0), sine(660, 1.0)])
    back, sr = audio.read(audio.write(tmp_path / "a.ogg", x, SR))
    assert sr == SR and back.shape == x.shape
    assert float(np.sqrt(np.mean((back - x) ** 2))) < 0.02
    assert peak_freq(back[0], SR) == pytest.approx(440, abs=1.5)
    assert peak_freq(back[1], SR) == pytest.approx(660, abs=1.5)


def test_mp3_decodes(tmp_path: Path) -> None:
    if "MP3" not in soundfile.available_formats():
        pytest.skip("this libsndfile has no MP3 support")
    x = sine(1000, 1.0)
    path = tmp_path / "a.mp3"
    soundfile.write(path, x, SR, format="MP3", subtype="MPEG_LAYER_III")
    back, sr = audio.read(path)
    assert sr == SR and back.dtype == np.float32 and back.shape[0] == 1
    assert abs(back.shape[1] - len(x)) <= 2048  # encoder delay/padding, if any
    assert peak_freq(back[0, : len(x)], SR) == pytest.approx(1000, abs=1.5)


def test_read_converts_rate_and_channels(tmp_path: Path) -> None:
    x = np.stack([sine(500, 0.5), sine(500, 0.5, amp=0.25)])
    path = audio.write(tmp_path / "s.wav", x, SR, subtype="FLOAT")
    mono, sr = audio.read(path, sample_rate=32000, channels=1)
    assert sr == 32000
    assert mono.shape == (1, round(x.shape[1] * 32000 / SR))
    expected = audio.resample(audio.to_mono(x), SR, 32000)
    np.testing.assert_allclose(mono, expected, atol=1e-6)


def test_write_accepts_1d_and_float64(tmp_path: Path) -> None:
    x = noise((3000,)).astype(np.float64)
    back, _ = audio.read(audio.write(tmp_path / "m.wav", x, SR, subtype="FLOAT"))
    assert back.shape == (1, 3000)
    np.testing.assert_array_equal(back[0], x.astype(np.float32))


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 2), st.integers(1, 300)),
        elements=st.floats(-1.0, 1.0, width=32),
    )
)
def test_property_any_unit_range_array_round_trips_wav_float(
    tmp_path_factory: pytest.TempPathFactory, x: np.ndarray
) -> None:
    path = tmp_path_factory.mktemp("prop") / "x.wav"
    back, _ = audio.read(audio.write(path, x, 16000, subtype="FLOAT"))
    np.testing.assert_array_equal(back, x)


# Resampling


def test_resample_keeps_frequency_and_matches_the_ideal_sine() -> None:
    f = 1000.0
    x = sine(f, 1.0)  # 44100 samples
    y = audio.resample(x, 44100, 32000)
    assert y.dtype == np.float32 and y.shape == (1, 32000)
    assert peak_freq(y[0], 32000) == pytest.approx(f, abs=1.0)
    # A band-limited tone resampled is the same tone sampled at the new rate (edges aside).
    ideal = 0.5 * np.sin(2 * np.pi * f * np.arange(32000) / 32000)
    err = float(np.abs(y[0] - ideal)[500:-500].max())
    assert err < 1e-4, err


def test_resample_per_channel() -> None:
    x = np.stack([sine(300, 0.5), sine(2000, 0.5)])
    y = audio.resample(x, SR, 48000)
    assert y.shape == (2, round(x.shape[1] * 48000 / SR))
    assert peak_freq(y[0], 48000) == pytest.approx(300, abs=2.5)
    assert peak_freq(y[1], 48000) == pytest.approx(2000, abs=2.5)
    np.testing.assert_allclose(y[1], audio.resample(x[1], SR, 48000)[0], atol=1e-7)


def test_resample_identity_is_a_copy() -> None:
    x = noise((2, 100))
    y = audio.resample(x, 32000, 32000)
    np.testing.assert_array_equal(y, x)
    y[0, 0] = 5.0
    assert x[0, 0] != 5.0


RATES = [8000, 16000, 22050, 24000, 32000, 44100, 48000]


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 4000), st.sampled_from(RATES), st.sampled_from(RATES))
def test_property_resample_length(n: int, sr_in: int, sr_out: int) -> None:
    y = audio.resample(np.zeros(n, np.float32), sr_in, sr_out)
    # soxr rounds half up (4233 samples 16k -> 8k gives 2117), not Python's round-half-even.
    assert y.shape == (1, int(Fraction(n * sr_out, sr_in) + Fraction(1, 2)))


@pytest.mark.parametrize("rate", [0, -44100, float("nan"), float("inf"), True, "44100", None])
def test_resample_rejects_bad_rates(rate: Any) -> None:
    with pytest.raises(InvalidInputError, match="sr_in"):
        audio.resample(np.zeros(10, np.float32), rate, 32000)


def test_resample_rejects_bad_quality_and_nan() -> None:
    with pytest.raises(InvalidInputError, match="quality"):
        audio.resample(np.zeros(10, np.float32), SR, 32000, quality="best")
    with pytest.raises(InvalidInputError, match="NaN"):
        audio.resample(np.array([0.0, np.nan], np.float32), SR, 32000)


# Channels


def test_to_mono_averages() -> None:
    x = noise((2, 50))
    np.testing.assert_allclose(audio.to_mono(x), (x[:1] + x[1:]) / 2, atol=1e-7)
    np.testing.assert_array_equal(audio.to_mono(x[0]), x[:1])


def test_to_channels() -> None:
    m = noise((1, 50))
    s = audio.to_channels(m, 2)
    assert s.shape == (2, 50)
    np.testing.assert_array_equal(s[0], m[0])
    np.testing.assert_array_equal(s[1], m[0])
    np.testing.assert_allclose(audio.to_channels(noise((4, 50)), 1), audio.to_mono(noise((4, 50))))
    np.testing.assert_array_equal(audio.to_channels(s, 2), s)
    with pytest.raises(InvalidInputError, match="cannot convert 2 channels to 6"):
        audio.to_channels(s, 6)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="channels"):
            audio.to_channels(m, bad)  # type: ignore[arg-type]


@settings(max_examples=30, deadline=None)
@given(
    hnp.arrays(np.float32, st.integers(1, 64), elements=st.floats(-1, 1, width=32)),
    st.integers(1, 8),
)
def test_property_duplicate_then_mono_is_identity(x: np.ndarray, n: int) -> None:
    np.testing.assert_allclose(audio.to_mono(audio.to_channels(x, n))[0], x, atol=1e-7)


# Levels

LEVEL_TOL = 1e-4  # dB / LU


def test_loudness_matches_pyloudnorm_and_bs1770_reference() -> None:
    x = sine(1000, 3.0, amp=1.0)
    ours = audio.loudness(x, SR)
    assert ours == pytest.approx(pyloudnorm.Meter(SR).integrated_loudness(x.astype(np.float64)))
    # BS.1770-4: a 0 dBFS 1 kHz sine in one channel reads -3.01 LKFS.
    assert ours == pytest.approx(-3.01, abs=0.05)
    # Channel powers add: the same tone in both channels reads 10*log10(2) louder.
    stereo = audio.loudness(np.stack([x, x]), SR)
    assert stereo - ours == pytest.approx(10 * np.log10(2), abs=LEVEL_TOL)


def test_loudness_of_short_clip_uses_one_block() -> None:
    long_tone = sine(1000, 2.0)
    short = long_tone[: SR // 10]  # 100 ms < the 400 ms gating block
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        level = audio.loudness(short, SR)
    meter = pyloudnorm.Meter(SR, block_size=len(short) / SR)
    assert level == pytest.approx(meter.integrated_loudness(short.astype(np.float64)))
    # A steady tone reads about the same however long it is (the K-filter settles in ms).
    assert level == pytest.approx(audio.loudness(long_tone, SR), abs=0.3)
    assert np.isfinite(audio.loudness(long_tone[:17], SR))


def test_silence_stays_silence() -> None:
    z = np.zeros((2, SR), np.float32)
    assert audio.loudness(z, SR) == float("-inf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero RuntimeWarning either
        for out in (
            audio.loudness_normalize(z, SR),
            audio.peak_normalize(z),
            audio.rms_normalize(z),
        ):
            np.testing.assert_array_equal(out, z)


def test_loudness_normalize_hits_target() -> None:
    x = noise((2, 2 * SR), amp=0.05)
    y = audio.loudness_normalize(x, SR, target_lufs=-23.0)
    assert y.dtype == np.float32
    assert audio.loudness(y, SR) == pytest.approx(-23.0, abs=LEVEL_TOL)
    assert float(np.abs(y).max()) <= 1.0


def test_loudness_normalize_limits_peak_with_warning() -> None:
    x = sine(1000, 1.0, amp=0.1)  # reaching 0 LUFS needs a peak near +3 dBFS
    with pytest.warns(UserWarning, match="peak"):
        y = audio.loudness_normalize(x, SR, target_lufs=0.0)
    assert float(np.abs(y).max()) == pytest.approx(1.0, abs=1e-6)
    assert float(np.abs(y).max()) <= 1.0
    assert audio.loudness(y, SR) < 0.0


def test_peak_normalize() -> None:
    x = noise((2, 1000), amp=0.3)
    y = audio.peak_normalize(x, -6.0)
    assert float(np.abs(y).max()) == pytest.approx(10 ** (-6 / 20), rel=1e-6)
    np.testing.assert_allclose(y / np.abs(y).max(), x / np.abs(x).max(), atol=1e-6)  # shape kept


def test_rms_normalize_and_its_peak_limit() -> None:
    x = noise((1, 10000), amp=0.1)
    y = audio.rms_normalize(x, -20.0)
    assert 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2))) == pytest.approx(
        -20.0, abs=LEVEL_TOL
    )
    square = np.sign(sine(100, 0.5)).astype(np.float32) * 0.1
    square[0, ...] = 1.0  # one spike: full RMS target would put it far beyond full scale
    with pytest.warns(UserWarning, match="peak"):
        z = audio.rms_normalize(square, -3.0)
    assert float(np.abs(z).max()) <= 1.0


@pytest.mark.parametrize("target", [0.5, float("nan"), float("inf"), "loud"])
def test_normalisers_reject_bad_targets(target: Any) -> None:
    x = noise((1, SR))
    with pytest.raises(InvalidInputError, match="target_dbfs"):
        audio.peak_normalize(x, target)
    with pytest.raises(InvalidInputError, match="target_dbfs"):
        audio.rms_normalize(x, target)
    with pytest.raises(InvalidInputError, match="target_lufs"):
        audio.loudness_normalize(x, SR, target)


def test_loudness_rejects_too_many_channels() -> None:
    with pytest.raises(InvalidInputError, match="at most 5 channels"):
        audio.loudness(noise((6, SR)), SR)


# Writing: atomicity, paths, validation


def test_failed_write_keeps_existing_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = audio.write(tmp_path / "keep.flac", sine(440, 0.2), SR)
    before = target.read_bytes()

    def half_then_fail(file: str, *args: Any, **kwargs: Any) -> None:
        Path(file).write_bytes(b"RIFF half written")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(soundfile, "write", half_then_fail)
    with pytest.raises(AudioFileError, match=r"keep\.flac"):
        audio.write(target, noise((1, 1000)), SR)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.flac"]

    def interrupted(file: str, *args: Any, **kwargs: Any) -> None:
        Path(file).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(soundfile, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        audio.write(tmp_path / "new.wav", noise((1, 1000)), SR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.flac"]


def test_write_replaces_and_uses_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "x.wav"
    audio.write(target, noise((1, 100)), SR, subtype="FLOAT")
    second = noise((1, 100), seed=1)
    audio.write(target, second, SR, subtype="FLOAT")
    np.testing.assert_array_equal(audio.read(target)[0], second)
    assert [p.name for p in tmp_path.iterdir()] == ["x.wav"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_write_path_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = noise((1, 100))
    (tmp_path / "sub").mkdir()
    with pytest.raises(InvalidInputError, match=r"'\.\.'"):
        audio.write(tmp_path / "sub" / ".." / "x.wav", x, SR)
    with pytest.raises(InvalidInputError, match="mkdir_parents"):
        audio.write(tmp_path / "missing" / "x.wav", x, SR)
    assert not (tmp_path / "missing").exists()
    out = audio.write(tmp_path / "made" / "deep" / "x.wav", x, SR, mkdir_parents=True)
    assert out == (tmp_path / "made" / "deep" / "x.wav").resolve() and out.is_file()
    with pytest.raises(InvalidInputError, match=r"\.wav, \.flac, \.ogg"):
        audio.write(tmp_path / "x.mp4", x, SR)
    with pytest.raises(InvalidInputError, match="no suffix"):
        audio.write(tmp_path / "x", x, SR)
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(InvalidInputError, match="is a directory"):
        audio.write(tmp_path / "dir.wav", x, SR)
    monkeypatch.chdir(tmp_path)
    rel = audio.write("rel.WAV", x, SR)
    assert rel == (tmp_path / "rel.WAV").resolve() and rel.is_absolute()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.array([0.0, np.nan, 0.1], np.float32), "1 NaN"),
        (np.array([0.0, np.inf, -np.inf], np.float32), "2 infinite"),
        (np.zeros(100, np.int16), "float array"),
        (np.zeros(100, bool), "float array"),
        (np.zeros((1, 2, 100), np.float32), "shape"),
        (np.zeros((1, 0), np.float32), "empty"),
        (np.zeros((1000, 2), np.float32), r"audio\.T"),  # (samples, channels) by mistake
    ],
)
def test_write_rejects_bad_audio(tmp_path: Path, data: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        audio.write(tmp_path / "bad.flac", data, SR)
    assert list(tmp_path.iterdir()) == []


def test_write_channel_limits_checked_before_libsndfile(tmp_path: Path) -> None:
    # 256-channel Vorbis crashes libsndfile 1.2 (segfault); the check must come first.
    with pytest.raises(InvalidInputError, match="at most 255"):
        audio.write(tmp_path / "many.ogg", np.zeros((300, 1000), np.float32), SR)
    with pytest.raises(InvalidInputError, match="at most 8"):
        audio.write(tmp_path / "many.flac", np.zeros((9, 1000), np.float32), SR)
    back, _ = audio.read(audio.write(tmp_path / "six.wav", noise((6, 100)), SR))
    assert back.shape == (6, 100)


@pytest.mark.parametrize("rate", [0, -1, 44100.5, True, "44100"])
def test_write_rejects_bad_rate(tmp_path: Path, rate: Any) -> None:
    with pytest.raises(InvalidInputError, match="sample_rate"):
        audio.write(tmp_path / "x.wav", noise((1, 10)), rate)


def test_write_rejects_subtype_the_format_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="VORBIS"):
        audio.write(tmp_path / "x.ogg", noise((1, 10)), SR, subtype="PCM_16")


def test_write_clips_with_warning(tmp_path: Path) -> None:
    x = np.array([[0.5, 1.5, -2.0, 1.0]], np.float32)
    with pytest.warns(UserWarning, match="clipping 2 samples"):
        out = audio.write(tmp_path / "c.wav", x, SR, subtype="FLOAT")
    np.testing.assert_array_equal(audio.read(out)[0], [[0.5, 1.0, -1.0, 1.0]])


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 2), st.integers(1, 50)),
        elements=st.floats(-1.0, 1.0, width=32),
    ),
    st.sampled_from([np.nan, np.inf, -np.inf]),
    st.data(),
)
def test_property_any_non_finite_sample_is_rejected(
    tmp_path_factory: pytest.TempPathFactory, x: np.ndarray, bad: float, data: st.DataObject
) -> None:
    c = data.draw(st.integers(0, x.shape[0] - 1))
    n = data.draw(st.integers(0, x.shape[1] - 1))
    x[c, n] = bad
    folder = tmp_path_factory.mktemp("nonfinite")
    with pytest.raises(InvalidInputError, match="NaN"):
        audio.write(folder / "x.wav", x, 16000)
    assert list(folder.iterdir()) == []
    for normalise in (audio.peak_normalize, audio.rms_normalize):
        with pytest.raises(InvalidInputError, match="NaN"):
            normalise(x)


# Reading bad files


def bad_files(tmp: Path) -> dict[str, Path]:
    good = audio.write(tmp / "good.wav", sine(440, 0.1), SR)
    (tmp / "text.wav").write_text("this is not audio\n")
    (tmp / "truncated.wav").write_bytes(good.read_bytes()[:20])
    soundfile.write(tmp / "empty.wav", np.zeros((0, 1), np.float32), SR)
    soundfile.write(tmp / "nan.wav", np.array([0.0, np.nan], np.float32), SR, subtype="FLOAT")
    (tmp / "folder.wav").mkdir()
    return {
        "missing": tmp / "missing.wav",
        "folder": tmp / "folder.wav",
        "text": tmp / "text.wav",
        "truncated": tmp / "truncated.wav",
        "empty": tmp / "empty.wav",
        "nan": tmp / "nan.wav",
    }


@pytest.mark.parametrize(
    ("kind", "match"),
    [
        ("missing", "not found"),
        ("folder", "directory"),
        ("text", "cannot decode"),
        ("truncated", "cannot decode"),
        ("empty", "empty"),
        ("nan", "NaN"),
    ],
)
def test_read_bad_files_name_the_file(tmp_path: Path, kind: str, match: str) -> None:
    path = bad_files(tmp_path)[kind]
    with pytest.raises(AudioFileError, match=match) as info:
        audio.read(path)
    assert str(path) in str(info.value)


def test_read_conversion_errors_name_the_file(tmp_path: Path) -> None:
    path = audio.write(tmp_path / "stereo.wav", noise((2, 100)), SR)
    with pytest.raises(InvalidInputError, match="cannot convert 2 channels to 3") as info:
        audio.read(path, channels=3)
    assert str(path) in str(info.value)
    with pytest.raises(InvalidInputError, match="sample_rate") as info:
        audio.read(path, sample_rate=0)
    assert str(path) in str(info.value)


# Playback


class FakeRun:
    def __init__(self, fail: int | None = None) -> None:
        self.calls: list[tuple[Any, dict[str, Any]]] = []
        self.fail = fail

    def __call__(self, argv: Any, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        self.calls.append((argv, kwargs))
        if self.fail is not None:
            raise subprocess.CalledProcessError(self.fail, argv)
        return subprocess.CompletedProcess(argv, 0)


def patch_players(monkeypatch: pytest.MonkeyPatch, available: set[str], run: FakeRun) -> None:
    monkeypatch.setattr(
        audio.shutil, "which", lambda name: f"/usr/bin/{name}" if name in available else None
    )
    monkeypatch.setattr(audio.subprocess, "run", run)


def test_play_passes_resolved_path_as_one_list_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weird = audio.write(tmp_path / "a b; rm -rf ~ $(x).wav", sine(440, 0.1), SR)
    monkeypatch.chdir(tmp_path)
    run = FakeRun()
    patch_players(monkeypatch, {"paplay", "ffplay"}, run)
    audio.play(weird.name)
    [(argv, kwargs)] = run.calls
    assert argv == ["/usr/bin/paplay", str(weird)]
    assert kwargs == {"check": True}  # no shell=True


def test_play_picks_a_player_that_handles_the_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flac = audio.write(tmp_path / "a.flac", sine(440, 0.1), SR)
    run = FakeRun()
    patch_players(monkeypatch, {"aplay", "ffplay"}, run)
    audio.play(flac)  # aplay plays wav only
    assert run.calls[0][0] == [
        "/usr/bin/ffplay",
        "-nodisp",
        "-autoexit",
        "-loglevel",
        "error",
        str(flac),
    ]


def test_play_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wav = audio.write(tmp_path / "a.wav", sine(440, 0.1), SR)
    patch_players(monkeypatch, set(), FakeRun())
    with pytest.raises(AudiogenError, match="no audio player found"):
        audio.play(wav)
    patch_players(monkeypatch, {"aplay"}, FakeRun(fail=1))
    with pytest.raises(AudiogenError, match="aplay exited with status 1"):
        audio.play(wav)
    with pytest.raises(AudioFileError, match=r"nope\.wav"):
        audio.play(tmp_path / "nope.wav")
