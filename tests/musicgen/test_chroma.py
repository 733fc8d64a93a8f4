"""Chroma extractor (audiogen_musicgen.chroma) vs transformers' ``MusicgenMelodyFeatureExtractor``.

Three kinds of test:
- fixture tests (no torch): tests/fixtures/chroma/, written by tools/fixtures/chroma.py from the
  real extractor: int16 audio, the reference one-hot (as argmax indices) and its pre-argmax chroma;
- live tests against the extractor itself on synthesized signals (chords, a sweep, noise,
  silence, stereo, 8 to 96 kHz, < 1 s and > 30 s). They need torch and torchaudio; torchaudio has
  no build for this torch, so it is installed with --no-deps and its compiled libraries removed
  (SPEC §5): the extractor only uses its pure-Python Spectrogram and functional.resample;
- bad-input tests.

The one-hot must be identical frame by frame. The only ties are frames whose 12 chroma values are
all exactly zero (digital silence, batch padding): torch.argmax and numpy.argmax both pick the
first maximum, bin 0, so those are compared like any other frame.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from audiogen_core.errors import AudioFileError, InvalidInputError

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st

from audiogen_musicgen import chroma as C

# Pre-argmax chroma tolerance: torch computes the STFT and resampler in float32, we in float64 /
# the same float32 kernel; the measured max abs error is ~6e-7 (values lie in [0, 1]).
NORM_ATOL = 1e-5


def _indices(one_hot: np.ndarray) -> np.ndarray:
    assert np.array_equal(one_hot.sum(-1), np.ones(one_hot.shape[:-1], dtype=one_hot.dtype))
    return one_hot.argmax(-1)


@pytest.fixture(scope="module")
def fixture(fixtures_dir: Path) -> dict[str, Any]:
    d = fixtures_dir / "chroma"
    meta = json.loads((d / "cases.json").read_text())
    with np.load(d / "audio.npz") as a, np.load(d / "expected.npz") as e:
        return {"meta": meta, "audio": dict(a), "expected": dict(e)}


def _pcm(fixture: dict[str, Any], name: str) -> np.ndarray:
    return fixture["audio"][name].astype(np.float32) / 32768


def test_fixture_cases_match_transformers(fixture: dict[str, Any]) -> None:
    for case in fixture["meta"]["cases"]:
        name = case["name"]
        x = _pcm(fixture, name)
        ours = C.chroma_features(x, case["sample_rate"])
        np.testing.assert_array_equal(
            _indices(ours), fixture["expected"][f"{name}.index"], err_msg=name
        )
        norm = C.normalized_chroma(C.prepare_melody(x, case["sample_rate"])[None])[0]
        np.testing.assert_allclose(
            norm, fixture["expected"][f"{name}.norm"], rtol=0, atol=NORM_ATOL, err_msg=name
        )


def test_fixture_batch_matches_transformers_padding(fixture: dict[str, Any]) -> None:
    names = fixture["meta"]["batch"]
    ours = C.chroma_features_batch([_pcm(fixture, n) for n in names], 32000)
    np.testing.assert_array_equal(_indices(ours), fixture["expected"]["batch.index"])
    # The shorter melody's tail is zero padding: bin-0 frames, as upstream.
    assert ours.shape[1] == max(_pcm(fixture, n).shape[1] for n in names) // 4096 + 1


def test_fixture_silence_is_bin_zero(fixture: dict[str, Any]) -> None:
    ours = C.chroma_features(_pcm(fixture, "silence_48k"), 48000)
    assert ours.shape == (8, 12) and np.all(ours[:, 0] == 1)


def test_chroma_from_file_reads_any_rate_and_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = (0.2 * rng.standard_normal((2, 22050))).astype(np.float32)
    path = tmp_path / "melody.wav"
    soundfile.write(path, x.T, 22050, subtype="FLOAT")
    np.testing.assert_array_equal(C.chroma_from_file(path), C.chroma_features(x, 22050))


def test_long_melody_cut_to_30_s_with_warning() -> None:
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal(8000 * 31)).astype(np.float32)
    with pytest.warns(UserWarning, match="first 30 s"):
        ours = C.chroma_features(x, 8000)
    assert ours.shape == (C.CHROMA_LENGTH, 12) == (235, 12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(ours, C.chroma_features(x[: 8000 * 30], 8000))


def test_resampler_early_stop_is_exact() -> None:
    # max_output reads only the input the first outputs depend on: the same samples.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 44100)).astype(np.float32)
    full = C.sinc_resample(x, 44100, 32000)
    np.testing.assert_array_equal(C.sinc_resample(x, 44100, 32000, max_output=9999), full[:, :9999])
    # 48 kHz takes the FFT (polyphase) path: the same sums, rounded differently near the cut.
    full = C.sinc_resample(x, 48000, 32000)
    cut = C.sinc_resample(x, 48000, 32000, max_output=9999)
    np.testing.assert_allclose(cut, full[:, :9999], rtol=0, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40000),
    rate=st.sampled_from([8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000]),
    channels=st.integers(1, 3),
)
def test_frame_count_and_one_hot_rows(n: int, rate: int, channels: int) -> None:
    x = np.random.default_rng(n).uniform(-0.5, 0.5, (channels, n)).astype(np.float32)
    ours = C.chroma_features(x, rate)
    g = math.gcd(rate, 32000)
    samples_32k = -(-(32000 // g) * n // (rate // g))  # torchaudio's output length
    assert ours.shape == (max(samples_32k, 16384) // 4096 + 1, 12)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours.sum(-1), 1.0)


def test_odd_rate_falls_back_to_soxr_with_warning() -> None:
    # 11127 Hz shares only 1 with 32000: torchaudio's kernel would be 32000 x 11179 taps.
    # Not upstream-exact then, but the same music still gives the chroma it gives at 32 kHz.
    with pytest.warns(UserWarning, match="soxr"):
        ours = C.chroma_features(_chords(11127, 1.0, [0, 5]), 11127)
    np.testing.assert_array_equal(ours, C.chroma_features(_chords(32000, 1.0, [0, 5]), 32000))


def test_tile_chroma_repeats_then_cuts() -> None:
    hot = C.one_hot(np.random.default_rng(3).random((2, 7, 12)))
    tiled = C.tile_chroma(hot)
    assert tiled.shape == (2, 235, 12)
    np.testing.assert_array_equal(tiled[:, 7:14], hot)
    np.testing.assert_array_equal(tiled[:, 231:], hot[:, :4])
    long = C.one_hot(np.random.default_rng(4).random((300, 12)))
    np.testing.assert_array_equal(C.tile_chroma(long), long[:235])


@pytest.mark.parametrize(
    ("audio", "rate", "match"),
    [
        (np.zeros(0, np.float32), 32000, "empty"),
        (np.zeros((2, 0), np.float32), 32000, "empty"),
        (np.zeros((0, 100), np.float32), 32000, "empty"),
        (np.array([0.0, np.nan], np.float32), 32000, "NaN"),
        (np.array([0.0, np.inf]), 32000, "NaN or infinite"),
        (np.zeros((1, 2, 100), np.float32), 32000, "shape"),
        (np.float32(0.5), 32000, "shape"),
        (np.zeros(100, np.int16), 32000, "float"),
        (np.zeros((44100, 2), np.float32), 44100, "transpose"),
        (np.zeros(100, np.float32), 0, "positive"),
        (np.zeros(100, np.float32), -16000, "positive"),
        (np.zeros(100, np.float32), float("nan"), "positive"),
        (np.zeros(100, np.float32), True, "positive"),
        (np.zeros(100, np.float32), "44100", "positive"),
        (np.zeros(100, np.float32), 44100.5, "whole number"),
    ],
)
def test_bad_input(audio: Any, rate: Any, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match) as e:
        C.chroma_features(audio, rate)
    assert "\n" not in str(e.value)


def test_bad_batches() -> None:
    with pytest.raises(InvalidInputError, match="non-empty"):
        C.chroma_features_batch([], 32000)
    with pytest.raises(InvalidInputError, match="2 melodies but 1 sample rates"):
        C.chroma_features_batch([np.zeros(10, np.float32)] * 2, [32000])
    with pytest.raises(InvalidInputError, match="melody 1 contains NaN"):
        C.chroma_features_batch([np.zeros(10, np.float32), np.full(10, np.nan, np.float32)], 32000)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match=r"nope\.wav: audio file not found"):
        C.chroma_from_file(tmp_path / "nope.wav")
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    with pytest.raises(AudioFileError, match=r"notes\.wav: cannot decode"):
        C.chroma_from_file(text)


@pytest.fixture(scope="module")
def torchaudio(torch: ModuleType) -> ModuleType:
    try:
        return importlib.import_module("torchaudio")
    except ImportError:
        if os.environ.get("AUDIOGEN_REQUIRE_TORCH", "") not in ("", "0"):
            pytest.fail("AUDIOGEN_REQUIRE_TORCH is set but torchaudio is not importable")
        pytest.skip("torchaudio not installed: live chroma test (committed fixtures still ran)")


@pytest.fixture(scope="module")
def extractor(torchaudio: ModuleType) -> Any:
    from transformers import MusicgenMelodyFeatureExtractor
    from transformers.utils import logging

    logging.set_verbosity_error()  # its once-per-call notes about stereo input
    return MusicgenMelodyFeatureExtractor()


def _reference(torch: ModuleType, fe: Any, audio: Any, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """The extractor's one-hot and its pre-argmax chroma (captured from its normalize call).

    One (channels, samples) melody goes in as a (1, channels, samples) tensor: a 2-D array would
    be read as a batch of mono melodies, and torchaudio's resample needs a tensor.
    """
    original = torch.nn.functional.normalize
    captured: list[np.ndarray] = []

    def capture(*args: Any, **kwargs: Any) -> Any:
        out = original(*args, **kwargs)
        captured.append(out.detach().transpose(1, 2).numpy().copy())
        return out

    torch.nn.functional.normalize = capture
    try:
        if isinstance(audio, list):
            out = fe(audio, sampling_rate=rate, return_tensors="np")
        else:
            x = torch.from_numpy(np.atleast_2d(audio))[None]
            out = fe(x, sampling_rate=rate, return_tensors="np")
    finally:
        torch.nn.functional.normalize = original
    return out["input_features"], captured[0]


def _tone(freq: float, t: np.ndarray) -> np.ndarray:
    return sum(np.sin(2 * np.pi * freq * k * t) / k**1.5 for k in (1, 2, 3))  # type: ignore[return-value]


def _chords(rate: int, seconds_each: float, roots: list[int]) -> np.ndarray:
    t = np.arange(int(seconds_each * rate)) / rate
    c4 = 261.6255653005986
    parts = [sum(_tone(c4 * 2 ** ((r + s) / 12), t) for s in (0, 4, 7)) for r in roots]
    return (0.15 * np.concatenate(parts)).astype(np.float32)


def _sweep(rate: int, seconds: float, f0: float = 55.0, f1: float = 7000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    k = np.log(f1 / f0) / seconds
    return (0.5 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)).astype(np.float32)


def _signals() -> dict[str, tuple[np.ndarray, int]]:
    rng = np.random.default_rng(7)
    progression = [0, 5, 7, 9, 2, 4, 11, 0]
    return {
        "chords_44k_stereo": (
            np.stack([_chords(44100, 0.6, progression), _chords(44100, 0.6, progression[::-1])]),
            44100,
        ),
        "sweep_16k": (_sweep(16000, 4.0), 16000),
        "noise_48k": ((0.3 * rng.standard_normal(48000 * 2)).astype(np.float32), 48000),
        "silence_32k": (np.zeros(32000, np.float32), 32000),
        "silence_then_chords_22k": (
            np.concatenate([np.zeros(22050, np.float32), _chords(22050, 0.5, [7, 0])]),
            22050,
        ),
        "short_0.3s_44k": (_chords(44100, 0.3, [9]), 44100),
        "quiet_chords_8k": (1e-4 * _chords(8000, 0.7, [2, 5]), 8000),
        "sweep_96k_3ch": (np.stack([_sweep(96000, 1.0)] * 2 + [_chords(96000, 1.0, [4])]), 96000),
    }


def test_live_signals_identical_one_hot(torch: ModuleType, extractor: Any) -> None:
    worst = 0.0
    for name, (audio, rate) in _signals().items():
        ref_hot, ref_norm = _reference(torch, extractor, audio, rate)
        ours = C.chroma_features(audio, rate)
        assert ours.shape == ref_hot[0].shape, name
        np.testing.assert_array_equal(ours, ref_hot[0], err_msg=name)
        norm = C.normalized_chroma(C.prepare_melody(audio, rate)[None])[0]
        np.testing.assert_allclose(norm, ref_norm[0], rtol=0, atol=NORM_ATOL, err_msg=name)
        worst = max(worst, float(np.abs(norm - ref_norm[0]).max()))
    print(f"max abs error of the pre-argmax chroma: {worst:.2e}")


def test_live_over_30_s_stereo(torch: ModuleType, extractor: Any) -> None:
    rng = np.random.default_rng(8)
    n = int(44100 * 30.5)
    roots = rng.integers(0, 12, size=61).tolist()
    left = _chords(44100, 0.5, roots)[:n]
    audio = np.stack([left, left[::-1] + 0.01 * rng.standard_normal(n).astype(np.float32)])
    ref_hot, ref_norm = _reference(torch, extractor, audio, 44100)
    with pytest.warns(UserWarning, match="30.5 s long"):
        ours = C.chroma_features(audio, 44100)
    assert ours.shape == ref_hot[0].shape == (235, 12)
    np.testing.assert_array_equal(ours, ref_hot[0])
    norm = C.normalized_chroma(C.prepare_melody(audio[:, : 44100 * 30], 44100)[None])[0]
    np.testing.assert_allclose(norm, ref_norm[0], rtol=0, atol=NORM_ATOL)


def test_live_batch_padding(torch: ModuleType, extractor: Any) -> None:
    # Upstream pads a list batch with zeros to the longest melody (its default padding=True);
    # torchaudio cannot resample a list, so batches of different lengths are 32 kHz only there,
    # and it tells stereo from mono by the first item alone: every item is (channels, samples).
    melodies = [
        _chords(32000, 0.5, [0, 7, 5])[None],
        np.stack([_sweep(32000, 0.4), _sweep(32000, 0.4, 200.0, 900.0)]),
        _chords(32000, 0.25, [9])[None],
    ]
    ref_hot, _ = _reference(torch, extractor, melodies, 32000)
    ours = C.chroma_features_batch(melodies, 32000)
    np.testing.assert_array_equal(ours, ref_hot)


def test_live_resampler_matches_torchaudio(torchaudio: ModuleType, torch: ModuleType) -> None:
    rng = np.random.default_rng(9)
    for rate in (8000, 11025, 16000, 22050, 24000, 44100, 48000, 88200, 96000):
        x = rng.standard_normal((2, rate // 3 + 17)).astype(np.float32)
        ref = torchaudio.functional.resample(
            torch.from_numpy(x), rate, 32000, rolloff=0.945, lowpass_filter_width=24
        ).numpy()
        ours = C.sinc_resample(x, rate, 32000)
        assert ours.shape == ref.shape, rate
        np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6, err_msg=str(rate))


def test_live_filter_bank_is_transformers(extractor: Any) -> None:
    from transformers.audio_utils import chroma_filter_bank

    ref = chroma_filter_bank(num_frequency_bins=16384, num_chroma=12, sampling_rate=32000, tuning=0)
    np.testing.assert_array_equal(C.chroma_filter_bank(), ref)
    np.testing.assert_array_equal(
        C.chroma_filter_bank().astype(np.float32), extractor.chroma_filters.numpy()
    )
