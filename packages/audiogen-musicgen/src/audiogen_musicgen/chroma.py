"""Chroma features for MusicGen melody conditioning, matching transformers'
``MusicgenMelodyFeatureExtractor`` (models/musicgen_melody/feature_extraction_musicgen_melody.py).

Pipeline, in upstream's order:

1. resample every channel to 32 kHz with torchaudio's windowed-sinc resampler
   (``functional.resample(..., rolloff=0.945, lowpass_filter_width=24)``), then average the channels
   (upstream resamples the (batch, channels, samples) tensor first and takes the mean after);
2. keep the first 30 s (upstream truncates silently through ``SequenceFeatureExtractor.pad``;
   we warn);
3. right-pad a batch with zeros to its longest melody, and anything shorter than ``n_fft`` with
   zeros on both sides up to ``n_fft``;
4. power spectrogram as torchaudio's ``Spectrogram(n_fft=win=16384, hop=4096, power=2,
   center=True, normalized=True)``: periodic Hann window, reflect padding of n_fft // 2, the
   spectrum divided by sqrt(sum(window**2)) ("window" normalisation) before squaring;
5. librosa-style chroma filter bank (transformers' ``audio_utils.chroma_filter_bank``, cast to
   float32 as upstream does), per-frame inf-norm with eps 1e-6, argmax -> one-hot.

Why the resampler is ported rather than soxr: the output is an argmax over 12 bins, so any
difference in the 32 kHz signal can flip frames whose two strongest pitch classes are close.
torchaudio's kernel is cheap to rebuild in numpy (same float32 arithmetic, same padding and
stride-``orig`` convolution), which keeps the resampled signal within float32 rounding of
upstream's (measured: <= 2e-7 per sample). soxr VHQ has a different passband edge (upstream cuts
at 0.945 of the lower Nyquist) and phase: on tonal test signals its chroma still matched, but on
white noise 40 of 251 frames (44.1 and 48 kHz) took another argmax, chroma values moving by up to
0.07. soxr is only used for sample rates whose reduced ratio would need a huge sinc kernel
(e.g. 11127 Hz; torchaudio would need gigabytes there too), with a warning.

The STFT runs in float64 (torch's in float32): upstream's rounding is then the only difference,
which keeps ours as close to it as any float32 implementation could be.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

from audiogen_core.audio import read
from audiogen_core.audio import resample as soxr_resample
from audiogen_core.errors import InvalidInputError

import numpy as np

SAMPLE_RATE = 32000
N_FFT = 16384
HOP_LENGTH = 4096
NUM_CHROMA = 12
MAX_SECONDS = 30
MAX_SAMPLES = MAX_SECONDS * SAMPLE_RATE
# Frames of a full 30 s melody (960000 // 4096 + 1): the decoder's chroma prefix length.
CHROMA_LENGTH = MAX_SAMPLES // HOP_LENGTH + 1

# MusicgenMelodyFeatureExtractor's torchaudio.functional.resample arguments.
RESAMPLE_ROLLOFF = 0.945
RESAMPLE_LOWPASS_WIDTH = 24
# torch.nn.functional.normalize's eps in _torch_extract_fbank_features.
NORM_EPS = 1e-6
# Sinc kernels above this many float32 entries (64 MiB) come from sample rates with a tiny common
# divisor with 32 kHz (e.g. 11127 Hz); those fall back to soxr.
_MAX_KERNEL_ELEMENTS = 1 << 24
# Rows of the strided resampling matmul per chunk: bounds the copied window matrix to ~16 MiB.
_CHUNK_ELEMENTS = 1 << 22
# Overlap-save block of the small-ratio resampler, and the largest orig * new (reduced rates) it
# handles: 8 to 192 kHz except the 44.1 kHz family, where one matmul per chunk is faster (measured).
_FFT_BLOCK = 4096
_POLYPHASE_MAX_PAIRS = 64


def hertz_to_octave(
    freq: np.ndarray, tuning: float = 0.0, bins_per_octave: int = NUM_CHROMA
) -> np.ndarray:
    """transformers ``audio_utils.hertz_to_octave`` (after librosa): octaves above A440 / 16."""
    stuttgart_pitch = 440.0 * 2.0 ** (tuning / bins_per_octave)
    result: np.ndarray = np.log2(freq / (float(stuttgart_pitch) / 16))
    return result


def chroma_filter_bank(
    num_frequency_bins: int = N_FFT,
    num_chroma: int = NUM_CHROMA,
    sampling_rate: int = SAMPLE_RATE,
    tuning: float = 0.0,
    power: float | None = 2.0,
    weighting_parameters: tuple[float, float] | None = (5.0, 2.0),
    start_at_c_chroma: bool = True,
) -> np.ndarray:
    """transformers ``audio_utils.chroma_filter_bank``: float64 (num_chroma, n_fft // 2 + 1).

    ``num_frequency_bins`` is the FFT size (upstream passes n_fft), not the number of rfft bins.
    """
    frequencies = np.linspace(0, sampling_rate, num_frequency_bins, endpoint=False)[1:]
    freq_bins = num_chroma * hertz_to_octave(frequencies, tuning=tuning, bins_per_octave=num_chroma)
    # A made-up 0 Hz bin 1.5 octaves below bin 1 (librosa's choice).
    freq_bins = np.concatenate(([freq_bins[0] - 1.5 * num_chroma], freq_bins))
    bins_width = np.concatenate((np.maximum(freq_bins[1:] - freq_bins[:-1], 1.0), [1]))
    filters = np.subtract.outer(freq_bins, np.arange(0, num_chroma, dtype="d")).T
    num_chroma2 = np.round(float(num_chroma) / 2)
    # Into -num_chroma/2 .. num_chroma/2; the 10 * num_chroma offset keeps remainder's input > 0.
    filters = np.remainder(filters + num_chroma2 + 10 * num_chroma, num_chroma) - num_chroma2
    filters = np.exp(-0.5 * (2 * filters / np.tile(bins_width, (num_chroma, 1))) ** 2)
    if power is not None:
        filters = filters / np.sum(filters**power, axis=0, keepdims=True) ** (1.0 / power)
    if weighting_parameters is not None:
        center, half_width = weighting_parameters
        filters *= np.tile(
            np.exp(-0.5 * (((freq_bins / num_chroma - center) / half_width) ** 2)),
            (num_chroma, 1),
        )
    if start_at_c_chroma:
        filters = np.roll(filters, -3 * (num_chroma // 12), axis=0)
    return np.ascontiguousarray(filters[:, : int(1 + num_frequency_bins / 2)])


def _sinc_kernel(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> np.ndarray:
    """torchaudio ``_get_sinc_resample_kernel`` (sinc_interp_hann) for float32 input.

    ``orig`` and ``new`` are already divided by their gcd. Returns (new, 2 * width + orig) float32;
    the arithmetic order and dtype follow torchaudio (it builds the kernel in the input's dtype).
    """
    base_freq = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base_freq)
    idx = np.arange(-width, width + orig, dtype=np.float32)[None, :] / np.float32(orig)
    t = np.arange(0, -new, -1, dtype=np.float32)[:, None] / np.float32(new) + idx
    t *= np.float32(base_freq)
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * np.float32(math.pi) / np.float32(lowpass_filter_width) / np.float32(2)) ** 2
    t *= np.float32(math.pi)
    scale = np.float32(base_freq / orig)
    with np.errstate(invalid="ignore", divide="ignore"):
        kernels = np.where(t == 0, np.float32(1.0), np.sin(t) / t).astype(np.float32)
    kernels *= window * scale
    return kernels


def _sinc_kernel_size(sr_in: int, sr_out: int) -> int:
    g = math.gcd(sr_in, sr_out)
    orig, new = sr_in // g, sr_out // g
    width = math.ceil(RESAMPLE_LOWPASS_WIDTH * orig / (min(orig, new) * RESAMPLE_ROLLOFF))
    return new * (2 * width + orig)


def sinc_resample(
    audio: np.ndarray,
    sr_in: int,
    sr_out: int,
    *,
    lowpass_filter_width: int = RESAMPLE_LOWPASS_WIDTH,
    rolloff: float = RESAMPLE_ROLLOFF,
    max_output: int | None = None,
) -> np.ndarray:
    """torchaudio ``functional.resample`` (sinc_interp_hann) on float32 (C, N); float32 (C, M) out.

    M = ceil(N * new / orig) with the rates reduced by their gcd, as torchaudio. ``max_output``
    stops early: only the input the first ``max_output`` outputs depend on is read, so those
    samples equal the full resampling's (bit for bit on the matmul path, to float64 rounding on
    the FFT path).
    """
    x = np.ascontiguousarray(audio, dtype=np.float32)
    if sr_in == sr_out:
        return x if max_output is None else x[:, :max_output]
    g = math.gcd(sr_in, sr_out)
    orig, new = sr_in // g, sr_out // g
    kernel = _sinc_kernel(orig, new, lowpass_filter_width, rolloff)
    klen = kernel.shape[1]
    width = (klen - orig) // 2
    length = x.shape[1]
    out_len = -(-new * length // orig)
    if max_output is not None and out_len > max_output:
        # Output block k (samples k*new .. k*new+new-1) reads padded input k*orig .. k*orig+klen.
        blocks = -(-max_output // new)
        x = x[:, : blocks * orig + width + orig]
        out_len = max_output
    # torchaudio pads (width, width + orig) with zeros and convolves with stride orig: output
    # block k is kernel @ x_pad[k*orig : k*orig + klen]; blocks are laid out block-major.
    padded = np.pad(x, ((0, 0), (width, width + orig)))
    n_blocks = (padded.shape[1] - klen) // orig + 1
    out = np.empty((x.shape[0], n_blocks * new), dtype=np.float32)
    for c in range(x.shape[0]):
        if orig * new <= _POLYPHASE_MAX_PAIRS:
            out[c] = _resample_polyphase(padded[c], kernel, orig, n_blocks)
        else:
            out[c] = _resample_matmul(padded[c], kernel, orig, n_blocks)
    return out[:, :out_len]


def _resample_matmul(
    padded: np.ndarray, kernel: np.ndarray, orig: int, n_blocks: int
) -> np.ndarray:
    """Output block k = kernel @ padded[k*orig : k*orig + klen], as one matmul per chunk."""
    new, klen = kernel.shape
    kernel_t = np.ascontiguousarray(kernel.T)
    windows = np.lib.stride_tricks.sliding_window_view(padded, klen)[::orig]
    chunk = max(1, _CHUNK_ELEMENTS // klen)
    out = np.empty(n_blocks * new, dtype=np.float32)
    for start in range(0, n_blocks, chunk):
        stop = min(start + chunk, n_blocks)
        block = np.ascontiguousarray(windows[start:stop]) @ kernel_t
        out[start * new : stop * new] = block.reshape(-1)
    return out


def _resample_polyphase(
    padded: np.ndarray, kernel: np.ndarray, orig: int, n_blocks: int
) -> np.ndarray:
    """The same sums for small ratios (e.g. 16 or 48 kHz), where the matmul above would have only
    ``new`` (1 to 4) columns and spend its time copying overlapping windows.

    Splitting input and kernel by residue mod ``orig`` makes output phase j the sum over r of
    correlations of ``padded[r::orig]`` with ``kernel[j, r::orig]``. Those run as float64 FFT
    overlap-save in blocks of 4096 (rounding ~1e-15, far below the float32 rounding of
    torchaudio's direct convolution, so the result matches it as closely as the matmul does).
    """
    new, klen = kernel.shape
    taps = -(-klen // orig)
    kernel_full = np.zeros((new, taps * orig), dtype=np.float64)
    kernel_full[:, :klen] = kernel
    size = max(_FFT_BLOCK, 1 << (4 * taps).bit_length())
    step = size - taps + 1
    frames = -(-n_blocks // step)
    length = (frames - 1) * step + size
    acc = np.zeros((new, frames, size // 2 + 1), dtype=np.complex128)
    for r in range(orig):
        # Block k reads padded[(k + q) * orig + r] * kernel[j, q * orig + r] over q; zeros past the
        # end meet only the zero kernel taps added above.
        phase = np.zeros(length, dtype=np.float64)
        src = padded[r::orig][:length]
        phase[: src.shape[0]] = src
        spectra = np.fft.rfft(
            np.lib.stride_tricks.sliding_window_view(phase, size)[::step], axis=-1
        )
        # Correlation = convolution with the reversed taps.
        taps_r = np.fft.rfft(kernel_full[:, r::orig][:, ::-1], size, axis=-1)
        acc += spectra[None] * taps_r[:, None]
    # Outputs taps-1 .. size-1 of each circular block are the linear (uncorrupted) ones.
    valid = np.fft.irfft(acc, size, axis=-1)[:, :, taps - 1 :].reshape(new, -1)[:, :n_blocks]
    result: np.ndarray = valid.T.astype(np.float32).reshape(-1)
    return result


def _check_sample_rate(sample_rate: Any) -> int:
    if isinstance(sample_rate, bool) or not isinstance(
        sample_rate, int | float | np.integer | np.floating
    ):
        raise InvalidInputError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    value = float(sample_rate)
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"sample_rate must be a positive number of Hz, got {sample_rate!r}")
    if value != int(value):
        # torchaudio's resampler (which upstream uses) needs whole-Hz rates as well.
        raise InvalidInputError(f"sample_rate must be a whole number of Hz, got {sample_rate!r}")
    return int(value)


def _check_audio(audio: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(audio)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{what} must be a float array, got {type(audio).__name__}") from e
    if not np.issubdtype(arr.dtype, np.floating):
        raise InvalidInputError(f"{what} must be a float array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr[None, :]
    elif arr.ndim != 2:
        raise InvalidInputError(
            f"{what} must be shaped (samples,) or (channels, samples), got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"{what} is empty (shape {arr.shape})")
    if arr.shape[0] > 64 and arr.shape[0] > arr.shape[1]:
        raise InvalidInputError(
            f"{what} has shape {arr.shape}: expected (channels, samples); transpose it"
        )
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{what} contains NaN or infinite samples")
    return np.ascontiguousarray(arr, dtype=np.float32)


def resample(audio: np.ndarray, sr_in: int, sr_out: int, *, what: str = "audio") -> np.ndarray:
    """float32 (C, N) from ``sr_in`` to ``sr_out`` with torchaudio's windowed-sinc resampler
    (``sinc_resample``); rates with no small ratio (a kernel of more than 16 M taps) fall back to
    soxr VHQ with a warning, as ``prepare_melody`` does."""
    if _sinc_kernel_size(sr_in, sr_out) <= _MAX_KERNEL_ELEMENTS:
        return sinc_resample(audio, sr_in, sr_out)
    warnings.warn(
        f"{what}: {sr_in} Hz has no small ratio to {sr_out} Hz; resampling with soxr instead of "
        "the reference's sinc resampler",
        stacklevel=3,
    )
    out: np.ndarray = soxr_resample(audio, sr_in, sr_out, quality="VHQ")
    return out


def prepare_melody(audio: Any, sample_rate: Any, *, what: str = "melody") -> np.ndarray:
    """(samples,) or (channels, samples) at any rate -> float32 mono 32 kHz, at most 30 s.

    Longer melodies are cut to their first 30 s with a warning (upstream cuts silently).
    """
    arr = _check_audio(audio, what)
    rate = _check_sample_rate(sample_rate)
    seconds = arr.shape[1] / rate
    if _sinc_kernel_size(rate, SAMPLE_RATE) <= _MAX_KERNEL_ELEMENTS:
        resampled = sinc_resample(arr, rate, SAMPLE_RATE, max_output=MAX_SAMPLES)
    else:
        warnings.warn(
            f"{what}: {rate} Hz has no small ratio to 32000 Hz; resampling with soxr instead of "
            "transformers' sinc resampler, so a few chroma frames may differ from transformers'",
            stacklevel=3,
        )
        resampled = soxr_resample(arr, rate, SAMPLE_RATE, quality="VHQ")
    if resampled.shape[1] > MAX_SAMPLES:
        resampled = resampled[:, :MAX_SAMPLES]
    if seconds > MAX_SECONDS:
        warnings.warn(
            f"{what} is {seconds:.1f} s long; only its first {MAX_SECONDS} s condition the music",
            stacklevel=3,
        )
    # Mean over channels after resampling: upstream's order (stereo.mean(dim=0) in __call__).
    mono: np.ndarray = resampled.mean(axis=0, dtype=np.float32)
    return mono


def _hann_window(n: int) -> np.ndarray:
    # torch.hann_window(n) (periodic=True): 0.5 - 0.5 cos(2 pi k / n).
    k = np.arange(n, dtype=np.float64)
    result: np.ndarray = 0.5 - 0.5 * np.cos(2.0 * np.pi * k / n)
    return result.astype(np.float32)


_FILTERS: np.ndarray | None = None
_WINDOW: np.ndarray | None = None


def _constants() -> tuple[np.ndarray, np.ndarray]:
    global _FILTERS, _WINDOW
    if _FILTERS is None or _WINDOW is None:
        # Upstream keeps the bank as a float32 tensor (.float()); round it the same way.
        _FILTERS = chroma_filter_bank().astype(np.float32).astype(np.float64)
        _WINDOW = _hann_window(N_FFT).astype(np.float64)
    return _FILTERS, _WINDOW


def normalized_chroma(waveforms: np.ndarray) -> np.ndarray:
    """(batch, samples) float32 mono 32 kHz -> (batch, frames, 12) float32 inf-normed chroma.

    Frames = max(samples, n_fft) // hop + 1. This is upstream's ``_torch_extract_fbank_features``
    before its argmax.
    """
    filters, window = _constants()
    wav = np.asarray(waveforms, dtype=np.float64)
    length = wav.shape[-1]
    if length < N_FFT:
        pad = N_FFT - length
        wav = np.pad(wav, ((0, 0), (pad // 2, pad // 2 + pad % 2)))
    half = N_FFT // 2
    wav = np.pad(wav, ((0, 0), (half, half)), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(wav, N_FFT, axis=-1)[:, ::HOP_LENGTH]
    norm = float(np.sqrt(np.sum(window**2)))
    out = np.empty((wav.shape[0], frames.shape[1], NUM_CHROMA), dtype=np.float32)
    for b in range(wav.shape[0]):
        spec = np.fft.rfft(frames[b] * window, axis=-1) / norm
        power = spec.real**2 + spec.imag**2
        raw = power @ filters.T
        peak = np.maximum(raw.max(axis=-1, keepdims=True), NORM_EPS)
        out[b] = raw / peak
    return out


def one_hot(chroma: np.ndarray) -> np.ndarray:
    """Strongest pitch class per frame -> one-hot float32, ties to the lowest bin (torch.argmax).

    All-zero frames (digital silence, batch padding) therefore become bin 0 (C).
    """
    idx = np.argmax(chroma, axis=-1)
    result: np.ndarray = np.eye(chroma.shape[-1], dtype=np.float32)[idx]
    return result


def chroma_features(audio: Any, sample_rate: Any) -> np.ndarray:
    """One melody -> one-hot chroma (frames, 12) float32, frames = 32 kHz samples // 4096 + 1.

    ``audio`` is (samples,) or (channels, samples) float at any whole-Hz rate; at most 30 s are
    used (longer melodies are cut with a warning), so frames <= 235. Anything shorter than
    16384 samples at 32 kHz gives 5 frames.
    """
    mono = prepare_melody(audio, sample_rate)
    result: np.ndarray = one_hot(normalized_chroma(mono[None]))[0]
    return result


def chroma_features_batch(melodies: Sequence[Any], sample_rates: int | Sequence[int]) -> np.ndarray:
    """Several melodies -> (batch, frames, 12) one-hot, frames set by the longest one.

    As upstream's feature extractor with its default ``padding=True``: each 32 kHz mono melody is
    right-padded with zeros to the longest before the spectrogram. The padded tail becomes bin-0
    frames, and the last ~2 frames of a shorter melody see those zeros instead of its own
    reflection, so they can differ from its chroma computed alone (as upstream's do).
    """
    if isinstance(melodies, np.ndarray) or len(melodies) == 0:
        raise InvalidInputError("melodies must be a non-empty list of arrays")
    if isinstance(sample_rates, Sequence):
        if len(sample_rates) != len(melodies):
            raise InvalidInputError(
                f"got {len(melodies)} melodies but {len(sample_rates)} sample rates"
            )
        rates = list(sample_rates)
    else:
        rates = [sample_rates] * len(melodies)
    monos = [
        prepare_melody(m, r, what=f"melody {i}")
        for i, (m, r) in enumerate(zip(melodies, rates, strict=True))
    ]
    longest = max(m.shape[0] for m in monos)
    batch = np.zeros((len(monos), longest), dtype=np.float32)
    for i, m in enumerate(monos):
        batch[i, : m.shape[0]] = m
    return one_hot(normalized_chroma(batch))


def tile_chroma(chroma: np.ndarray, length: int = CHROMA_LENGTH) -> np.ndarray:
    """(…, frames, 12) -> (…, length, 12) the way MusicgenMelodyForConditionalGeneration does it.

    Upstream projects the chroma first and then repeats the whole sequence ceil(length / frames)
    times and cuts to ``length`` (or just cuts a longer one); the projection is per frame, so
    tiling the one-hot first gives the same prefix.
    """
    frames = chroma.shape[-2]
    if frames < length:
        reps = [1] * chroma.ndim
        reps[-2] = math.ceil(length / frames)
        chroma = np.tile(chroma, reps)
    result: np.ndarray = chroma[..., :length, :]
    return result


def chroma_from_file(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a melody file (anything ``audiogen_core.audio.read`` decodes) -> one-hot chroma.

    Decoding errors raise ``AudioFileError`` and bad content ``InvalidInputError``, naming the file.
    """
    audio, rate = read(path)
    try:
        mono = prepare_melody(audio, rate, what=os.fspath(path))
    except InvalidInputError as e:
        raise InvalidInputError(f"{os.fspath(path)}: {e}") from e
    result: np.ndarray = one_hot(normalized_chroma(mono[None]))[0]
    return result


__all__ = [
    "CHROMA_LENGTH",
    "SAMPLE_RATE",
    "chroma_features",
    "chroma_features_batch",
    "chroma_filter_bank",
    "chroma_from_file",
    "normalized_chroma",
    "one_hot",
    "prepare_melody",
    "sinc_resample",
    "tile_chroma",
]
