"""Oobleck VAE, the autoencoder of Stable Audio Open (1.0 and small), as diffusers'
``AutoencoderOobleck`` (``diffusers/models/autoencoders/autoencoder_oobleck.py``) and
stable-audio-tools' ``OobleckEncoder``/``OobleckDecoder`` + ``VAEBottleneck``.

Attribute names mirror diffusers' checkpoint keys (``decoder.block.N.res_unit1.snake1.alpha``),
so loading a diffusers ``vae/`` directory is weight-norm fusion plus conv layout fixes; the
stable-audio-tools keys (``pretransform.model.decoder.layers.N.layers.M…``, one ``nn.Sequential``
per level) are renamed onto the same names in ``sanitize(layout="sat")``.

Everything runs channels-last, ``(batch, time, channels)``; the public ``encode``/``decode`` take
and return upstream's ``(batch, channels, time)``.

Speed (2-core x86 CPU, MLX 0.32): the Snake activation ``x + sin²(αx)/β`` runs on every
activation tensor (up to 2048·256 = 67M elements per call at 1.0's last decoder level). MLX's
CPU ``sin`` is scalar (~30 ns/element, compiled or not; torch's is no better) while numpy's SIMD
``sin`` over two threads is ~10x faster, so on the CPU the snake is computed in numpy straight into
an MLX buffer. MLX's CPU ``conv1d`` was ~2.5x slower than accumulating one ``addmm`` per tap,
which is what ``_conv1d`` does, in time tiles of 2048 rows (2x faster than whole-length passes
for the k 7 convs at 128 channels; the same conv finding as encodec.py, whose helpers are private,
so this module has its own).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from audiogen_core.errors import InvalidInputError, MissingWeightsError, WeightsError
from audiogen_core.weights import (
    cast_floats,
    conv1d_to_mlx,
    conv_transpose1d_to_mlx,
    fuse_weight_norms,
    load_into,
    load_safetensors,
    read_json,
)

import mlx.core as mx
import mlx.nn as nn
import numpy as np


@dataclass(frozen=True)
class OobleckConfig:
    """diffusers ``AutoencoderOobleck`` config fields and defaults (those of Stable Audio Open),
    plus what only stable-audio-tools' config can say (``final_tanh``, the encoder's output width,
    the pretransform ``scale``)."""

    encoder_hidden_size: int = 128
    downsampling_ratios: tuple[int, ...] = (2, 4, 4, 8, 8)
    channel_multiples: tuple[int, ...] = (1, 2, 4, 8, 16)
    decoder_channels: int = 128
    decoder_input_channels: int = 64
    audio_channels: int = 2
    sampling_rate: int = 44_100
    # diffusers ties the encoder's output width to encoder_hidden_size (128 = 2 · 64 for SAO);
    # stable-audio-tools states it as the encoder's latent_dim. None = diffusers' rule.
    encoder_output_channels: int | None = None
    final_tanh: bool = False
    # stable-audio-tools' AutoencoderPretransform divides encoded latents by this and multiplies
    # latents by it before decoding (absent = 1.0 for both SAO checkpoints).
    latent_scale: float = 1.0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OobleckConfig:
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {k: v for k, v in d.items() if k in names}
        for k in ("downsampling_ratios", "channel_multiples"):
            if k in kw:
                kw[k] = tuple(int(v) for v in kw[k])
        return cls(**kw)

    @classmethod
    def from_stable_audio_tools(cls, model_config: Mapping[str, Any]) -> OobleckConfig:
        """Parse a stable-audio-tools ``model_config.json`` (its ``model.pretransform`` section),
        or a pretransform section itself. Variants this port does not implement (ELU instead of
        snake, anti-aliased activations, nearest upsampling, other bottlenecks) are refused."""
        section: Any = model_config
        if "model" in section:
            section = section["model"]
        if "pretransform" in section:
            section = section["pretransform"]
        if section.get("type", "autoencoder") != "autoencoder":
            raise InvalidInputError(f"pretransform type {section.get('type')!r} is not Oobleck")
        pcfg = section.get("config", section)
        enc_part, dec_part = pcfg.get("encoder"), pcfg.get("decoder")
        if not isinstance(enc_part, Mapping) or not isinstance(dec_part, Mapping):
            raise InvalidInputError("pretransform config lacks encoder/decoder sections")
        for name, part in (("encoder", enc_part), ("decoder", dec_part)):
            if part.get("type", "oobleck") != "oobleck":
                raise InvalidInputError(f"{name} type {part.get('type')!r} is not 'oobleck'")
        enc, dec = enc_part.get("config", {}), dec_part.get("config", {})
        bottleneck = (pcfg.get("bottleneck") or {}).get("type", "vae")
        if bottleneck != "vae":
            raise InvalidInputError(f"bottleneck {bottleneck!r} is not supported (only 'vae')")
        for name, part in (("encoder", enc), ("decoder", dec)):
            # upstream defaults: use_snake False (ELU), antialias False, nearest upsample False
            if not part.get("use_snake", False):
                raise InvalidInputError(f"{name}: only use_snake=true Oobleck is supported")
            if part.get("antialias_activation", False):
                raise InvalidInputError(f"{name}: antialias_activation is not supported")
        if dec.get("use_nearest_upsample", False):
            raise InvalidInputError("decoder: use_nearest_upsample is not supported")
        # upstream OobleckEncoder/Decoder defaults
        strides = tuple(int(s) for s in enc.get("strides", (2, 4, 8, 8)))
        c_mults = tuple(int(c) for c in enc.get("c_mults", (1, 2, 4, 8)))
        if tuple(dec.get("strides", (2, 4, 8, 8))) != strides:
            raise InvalidInputError("decoder strides differ from the encoder's: not supported")
        if tuple(dec.get("c_mults", (1, 2, 4, 8))) != c_mults:
            raise InvalidInputError("decoder c_mults differ from the encoder's: not supported")
        io = int(pcfg.get("io_channels", enc.get("in_channels", 2)))
        if int(enc.get("in_channels", 2)) != io or int(dec.get("out_channels", 2)) != io:
            raise InvalidInputError("encoder in_channels / decoder out_channels != io_channels")
        sample_rate = model_config.get("sample_rate", 44_100)
        return cls(
            encoder_hidden_size=int(enc.get("channels", 128)),
            downsampling_ratios=strides,
            channel_multiples=c_mults,
            decoder_channels=int(dec.get("channels", 128)),
            decoder_input_channels=int(dec.get("latent_dim", 32)),
            audio_channels=io,
            sampling_rate=int(sample_rate),
            encoder_output_channels=int(enc.get("latent_dim", 32)),
            final_tanh=bool(dec.get("final_tanh", True)),
            latent_scale=float(section.get("scale", 1.0)),
        )

    @property
    def hop_length(self) -> int:
        return math.prod(self.downsampling_ratios)

    @property
    def latent_dim(self) -> int:
        return self.decoder_input_channels

    @property
    def encoder_out(self) -> int:
        return self.encoder_output_channels or self.encoder_hidden_size

    def decoder_receptive_field(self) -> float:
        """How far (in latent frames, either side) an output sample of the decoder can see.

        Walking the decoder at each level's own rate ``r`` (latent frames per frame = 1/up):
        the first conv (k 7) reaches 3 frames; each block's transposed conv (kernel 2s, stride s)
        reaches at most 2 of its input frames; its residual units (k 7, dilations 1, 3, 9) reach
        3 + 9 + 27 = 39 frames at the block's output rate; the last conv (k 7) 3 frames at the
        audio rate. For SAO ([8, 8, 4, 4, 2] up) this is ≈ 10.99 latent frames.
        """
        up = 1
        radius = 3.0
        for s in reversed(self.downsampling_ratios):
            radius += 2.0 / up
            up *= s
            radius += 39.0 / up
        return radius + 3.0 / up

    def encoder_receptive_field(self) -> float:
        """The same for the encoder, in latent frames: each block's residual units (39 frames)
        and strided conv (kernel 2s ≤ 2 output frames) at its input rate; k 7 first, k 3 last."""
        down = 1
        radius = 3.0
        for s in self.downsampling_ratios:
            radius += 39.0 * down
            down *= s
            radius += 2.0 * down
        radius += 1.0 * down
        return radius / down


_state = {"numpy_cpu": True}
# Below this many elements the thread hand-off costs more than MLX's scalar sin.
_NUMPY_MIN_SIZE = 1 << 16
_CONV_TILE = 2048
_pool: list[ThreadPoolExecutor] = []


def _threads() -> ThreadPoolExecutor:
    if not _pool:
        _pool.append(ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))))
    return _pool[0]


def set_numpy_cpu(enabled: bool) -> bool:
    """Turn the numpy snake fast path on or off (off = pure MLX, the GPU code); returns the old
    setting. For tests and comparisons."""
    old = _state["numpy_cpu"]
    _state["numpy_cpu"] = enabled
    return old


def _snake_mlx(x: mx.array, alpha: mx.array, inv_beta: mx.array) -> mx.array:
    return x + inv_beta * mx.square(mx.sin(alpha * x))


_snake_compiled = mx.compile(_snake_mlx)


def _snake_rows(src: np.ndarray, dst: np.ndarray, alpha: np.ndarray, inv_beta: np.ndarray) -> None:
    # ~256 KiB row blocks: the five passes (·α, sin, square, ·1/β, +x) stay in L2.
    step = max(1, (1 << 16) // src.shape[1])
    for i in range(0, src.shape[0], step):
        x, o = src[i : i + step], dst[i : i + step]
        np.multiply(x, alpha, out=o)
        np.sin(o, out=o)
        np.square(o, out=o)
        o *= inv_beta
        o += x


def _snake(x: mx.array, alpha: mx.array, inv_beta: mx.array) -> mx.array:
    """``x + inv_beta · sin²(alpha · x)`` over the last (channel) axis; numpy on the CPU."""
    numpy_ok = (
        _state["numpy_cpu"]
        and x.dtype == mx.float32
        and x.size >= _NUMPY_MIN_SIZE
        and mx.default_device().type == mx.DeviceType.cpu
    )
    if not numpy_ok:
        return _snake_compiled(x, alpha.astype(x.dtype), inv_beta.astype(x.dtype))
    mx.eval(x, alpha, inv_beta)
    channels = x.shape[-1]
    src = np.ascontiguousarray(x).reshape(-1, channels)
    out = mx.zeros(x.shape, dtype=mx.float32)
    mx.eval(out)
    dst = np.asarray(out).reshape(-1, channels)
    if not (dst.flags.writeable and dst.flags.c_contiguous and dst.size == x.size):
        return _snake_compiled(x, alpha, inv_beta)
    a, ib = np.asarray(alpha), np.asarray(inv_beta)
    pool = _threads()
    n = pool._max_workers
    bounds = [src.shape[0] * i // n for i in range(n + 1)]
    list(
        pool.map(
            lambda i: _snake_rows(
                src[bounds[i] : bounds[i + 1]], dst[bounds[i] : bounds[i + 1]], a, ib
            ),
            range(n),
        )
    )
    return out


def _conv1d(
    x: mx.array,
    w: mx.array,
    b: mx.array | None,
    *,
    stride: int = 1,
    dilation: int = 1,
    padding: int = 0,
) -> mx.array:
    """torch ``Conv1d`` (zero padding) on ``(B, T, Cin)`` with an MLX weight ``(Cout, K, Cin)``,
    as matmuls: strided → ``stride`` samples folded into channels (a stride-1 conv); few output
    channels → one matmul to every tap, then shift-add; tiny ``K·Cin`` → one matmul on a window
    matrix; otherwise one ``addmm`` per tap."""
    if padding:
        x = mx.pad(x, [(0, 0), (padding, padding), (0, 0)])
    cout, k, cin = w.shape
    bsz, length, _ = x.shape
    span = (k - 1) * dilation + 1
    n_out = (length - span) // stride + 1
    if stride > 1:
        if dilation != 1:
            raise InvalidInputError("Oobleck: strided and dilated conv at once is not supported")
        m = -(-k // stride)
        if m * stride != k:
            w = mx.pad(w, [(0, 0), (0, m * stride - k), (0, 0)])
        need = (n_out + m - 1) * stride
        x = (
            x[:, :need]
            if x.shape[1] >= need
            else mx.pad(x, [(0, 0), (0, need - x.shape[1]), (0, 0)])
        )
        x = x.reshape(bsz, n_out + m - 1, stride * cin)
        w = w.reshape(cout, m, stride * cin)
        return _conv1d(x, w, b)
    if k == 1:
        out = x @ w[:, 0, :].T
    elif k * cout <= cin:
        z = (x @ w.transpose(2, 1, 0).reshape(cin, k * cout)).reshape(bsz, length, k, cout)
        out = z[:, :n_out, 0]
        for j in range(1, k):
            out = out + z[:, j * dilation : j * dilation + n_out, j]
    elif k * cin <= 32:
        cols = mx.concatenate([x[:, j * dilation : j * dilation + n_out] for j in range(k)], -1)
        out = cols @ w.reshape(cout, k * cin).T
    else:
        # On the CPU, time tiles of _CONV_TILE rows: the k accumulating addmm passes over one
        # tile's output then stay in cache instead of streaming the whole (up to 268 MB) output
        # k times. Not on a GPU: there every tile is k more kernel launches (1.0's 2M-sample
        # decode made thousands), and whole-length addmms are what the device is fast at.
        tile = _CONV_TILE if mx.default_device().type == mx.DeviceType.cpu else n_out
        tiles = []
        for s in range(0, n_out, tile):
            e = min(n_out, s + tile)
            acc = x[:, s:e] @ w[:, 0, :].T if b is None else mx.addmm(b, x[:, s:e], w[:, 0, :].T)
            for j in range(1, k):
                acc = mx.addmm(acc, x[:, s + j * dilation : e + j * dilation], w[:, j, :].T)
            tiles.append(acc)
        return tiles[0] if len(tiles) == 1 else mx.concatenate(tiles, axis=1)
    return out + b if b is not None else out


def _conv_transpose1d(
    x: mx.array, w: mx.array, b: mx.array | None, stride: int, padding: int
) -> mx.array:
    """torch ``ConvTranspose1d`` on ``(B, T, Cin)`` with MLX weight ``(Cout, K, Cin)``: output
    length ``(T-1)·stride + K − 2·padding``.

    With ``m = ceil(K/stride)`` tap groups, output frame ``t`` (``stride`` samples) is
    ``Σ_j x[t-j] · W_j``: a stride-1 conv whose "channels" are whole output frames, accumulated
    with ``addmm`` so each frame is written once.
    """
    cout, k, cin = w.shape
    bsz, length, _ = x.shape
    m = -(-k // stride)
    if m * stride != k:
        w = mx.pad(w, [(0, 0), (0, m * stride - k), (0, 0)])
    # (Time tiling as in _conv1d measured no gain here: only m = 2 passes, wide outputs.)
    wj = w.reshape(cout, m, stride, cin).transpose(1, 3, 2, 0).reshape(m, cin, stride * cout)
    n_frames = length + m - 1
    xp = mx.pad(x, [(0, 0), (m - 1, m - 1), (0, 0)]) if m > 1 else x
    first = xp[:, m - 1 : m - 1 + n_frames]
    acc = mx.addmm(mx.tile(b, stride), first, wj[0]) if b is not None else first @ wj[0]
    for j in range(1, m):
        acc = mx.addmm(acc, xp[:, m - 1 - j : m - 1 - j + n_frames], wj[j])
    full = (length - 1) * stride + k
    return acc.reshape(bsz, n_frames * stride, cout)[:, padding : full - padding]


class Snake1d(nn.Module):
    """diffusers ``Snake1d`` (logscale): ``x + sin²(e^α · x) / (e^β + 1e-9)``; α, β per channel
    (stored ``(C,)`` here; diffusers keeps ``(1, C, 1)``, stable-audio-tools ``(C,)``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = mx.zeros((channels,))
        self.beta = mx.zeros((channels,))

    def __call__(self, x: mx.array) -> mx.array:
        alpha = mx.exp(self.alpha)
        inv_beta = 1.0 / (mx.exp(self.beta) + 1e-9)
        return _snake(x, alpha, inv_beta)


class _Conv(nn.Module):
    """Weight-norm-fused ``Conv1d``: ``weight`` in MLX layout ``(Cout, K, Cin)``, optional bias."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel_size: int,
        *,
        stride: int = 1,
        dilation: int = 1,
        padding: int = 0,
        bias: bool = True,
    ):
        super().__init__()
        self.weight = mx.zeros((cout, kernel_size, cin))
        if bias:
            self.bias = mx.zeros((cout,))
        self.stride, self.dilation, self.padding = stride, dilation, padding

    def __call__(self, x: mx.array) -> mx.array:
        b = self.bias if "bias" in self else None
        return _conv1d(
            x, self.weight, b, stride=self.stride, dilation=self.dilation, padding=self.padding
        )


class _ConvTranspose(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int, padding: int):
        super().__init__()
        self.weight = mx.zeros((cout, kernel_size, cin))
        self.bias = mx.zeros((cout,))
        self.stride, self.padding = stride, padding

    def __call__(self, x: mx.array) -> mx.array:
        return _conv_transpose1d(x, self.weight, self.bias, self.stride, self.padding)


class OobleckResidualUnit(nn.Module):
    """snake → conv(k 7, dilation d, same length) → snake → conv(k 1), plus the input."""

    def __init__(self, dim: int, dilation: int):
        super().__init__()
        self.snake1 = Snake1d(dim)
        self.conv1 = _Conv(dim, dim, 7, dilation=dilation, padding=3 * dilation)
        self.snake2 = Snake1d(dim)
        self.conv2 = _Conv(dim, dim, 1)

    def __call__(self, x: mx.array) -> mx.array:
        return x + self.conv2(self.snake2(self.conv1(self.snake1(x))))


class OobleckEncoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.res_unit1 = OobleckResidualUnit(cin, 1)
        self.res_unit2 = OobleckResidualUnit(cin, 3)
        self.res_unit3 = OobleckResidualUnit(cin, 9)
        self.snake1 = Snake1d(cin)
        self.conv1 = _Conv(cin, cout, 2 * stride, stride=stride, padding=math.ceil(stride / 2))

    def __call__(self, x: mx.array) -> mx.array:
        x = self.res_unit3(self.res_unit2(self.res_unit1(x)))
        return self.conv1(self.snake1(x))


class OobleckDecoderBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.snake1 = Snake1d(cin)
        self.conv_t1 = _ConvTranspose(cin, cout, 2 * stride, stride, math.ceil(stride / 2))
        self.res_unit1 = OobleckResidualUnit(cout, 1)
        self.res_unit2 = OobleckResidualUnit(cout, 3)
        self.res_unit3 = OobleckResidualUnit(cout, 9)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.conv_t1(self.snake1(x))
        return self.res_unit3(self.res_unit2(self.res_unit1(x)))


class OobleckEncoder(nn.Module):
    def __init__(self, config: OobleckConfig):
        super().__init__()
        c = config.encoder_hidden_size
        mults = (1, *config.channel_multiples)
        self.conv1 = _Conv(config.audio_channels, c, 7, padding=3)
        self.block = [
            OobleckEncoderBlock(c * mults[i], c * mults[i + 1], s)
            for i, s in enumerate(config.downsampling_ratios)
        ]
        self.snake1 = Snake1d(c * mults[-1])
        self.conv2 = _Conv(c * mults[-1], config.encoder_out, 3, padding=1)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.conv1(x)
        for block in self.block:
            x = block(x)
        return self.conv2(self.snake1(x))


class OobleckDecoder(nn.Module):
    def __init__(self, config: OobleckConfig):
        super().__init__()
        c = config.decoder_channels
        mults = (1, *config.channel_multiples)
        ups = tuple(reversed(config.downsampling_ratios))
        n = len(ups)
        self.conv1 = _Conv(config.decoder_input_channels, c * mults[-1], 7, padding=3)
        self.block = [
            OobleckDecoderBlock(c * mults[n - i], c * mults[n - i - 1], s)
            for i, s in enumerate(ups)
        ]
        self.snake1 = Snake1d(c)
        self.conv2 = _Conv(c, config.audio_channels, 7, padding=3, bias=False)
        self.final_tanh = config.final_tanh

    def __call__(self, x: mx.array) -> mx.array:
        x = self.conv1(x)
        for block in self.block:
            x = block(x)
        x = self.conv2(self.snake1(x))
        return mx.tanh(x) if self.final_tanh else x


def _as_array(x: Any, what: str, channels: int) -> mx.array:
    arr = x if isinstance(x, mx.array) else mx.array(np.asarray(x))
    if not mx.issubdtype(arr.dtype, mx.floating):
        raise InvalidInputError(f"Oobleck: {what} must be floating point, got {arr.dtype}")
    if arr.ndim != 3:
        raise InvalidInputError(
            f"Oobleck: {what} must be (batch, channels, time), got shape {tuple(arr.shape)}"
        )
    if arr.shape[1] != channels:
        raise InvalidInputError(
            f"Oobleck: {what} must have {channels} channels, got shape {tuple(arr.shape)}"
        )
    if arr.shape[0] < 1 or arr.shape[2] < 1:
        raise InvalidInputError(f"Oobleck: empty {what}, shape {tuple(arr.shape)}")
    return arr


def _check_chunking(chunk_size: int | None, overlap: int | None, default: int) -> int:
    if chunk_size is not None and (isinstance(chunk_size, bool) or chunk_size < 1):
        raise InvalidInputError(f"Oobleck: chunk_size must be a positive int, got {chunk_size!r}")
    if overlap is None:
        return default
    if isinstance(overlap, bool) or overlap < 0:
        raise InvalidInputError(f"Oobleck: overlap must be an int ≥ 0, got {overlap!r}")
    return int(overlap)


class OobleckVAE(nn.Module):
    """Oobleck VAE: ``encode`` stereo audio → ``(B, 64, T/2048)`` latents, ``decode`` back."""

    def __init__(self, config: OobleckConfig):
        super().__init__()
        if config.encoder_out % 2:
            raise InvalidInputError("Oobleck: encoder output must hold mean and scale (even)")
        if len(config.channel_multiples) != len(config.downsampling_ratios):
            raise InvalidInputError("Oobleck: one channel multiple per downsampling ratio needed")
        self.config = config
        self.encoder = OobleckEncoder(config)
        self.decoder = OobleckDecoder(config)

    @property
    def sample_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def hop_length(self) -> int:
        return self.config.hop_length

    @property
    def dtype(self) -> mx.Dtype:
        return self.decoder.conv1.weight.dtype

    def _encode_frames(self, x: mx.array, chunk_size: int | None, overlap: int) -> mx.array:
        """Encoder output ``(B, T', 2·latent)`` of channels-last audio, in chunks of
        ``chunk_size`` latent frames; same hard-cut scheme as ``decode``."""
        hop = self.hop_length
        n_out = x.shape[1]
        for s in self.config.downsampling_ratios:
            n_out = (n_out + 2 * math.ceil(s / 2) - 2 * s) // s + 1
        if chunk_size is None or chunk_size >= n_out:
            h = self.encoder(x)
            mx.eval(h)
            return h
        parts = []
        for start in range(0, n_out, chunk_size):
            end = min(start + chunk_size, n_out)
            lo = max(0, start - overlap)
            hi = min(n_out, end + overlap)
            # the last window runs to the end of the audio so its floor arithmetic matches
            stop = x.shape[1] if hi == n_out else hi * hop
            h = self.encoder(x[:, lo * hop : stop])
            part = h[:, start - lo : end - lo]
            mx.eval(part)
            parts.append(part)
        return mx.concatenate(parts, axis=1)

    def encode(
        self,
        audio: Any,
        *,
        sample: bool = False,
        key: mx.array | None = None,
        chunk_size: int | None = None,
        overlap: int | None = None,
    ) -> mx.array:
        """``(B, C, N)`` audio at ``sample_rate`` → ``(B, latent_dim, N / hop)`` latents: the
        posterior mean, or with ``sample=True`` a draw ``mean + std·ε`` (std = softplus(scale) +
        1e-4, diffusers ``OobleckDiagonalGaussianDistribution``) using ``key``.

        ``chunk_size`` (latent frames) encodes in windows widened by ``overlap`` frames each side
        (default: the encoder's receptive field) and keeps each window's middle, which equals the
        unchunked result up to float error (see ``decode``).
        """
        x = _as_array(audio, "audio", self.config.audio_channels).astype(self.dtype)
        default = math.ceil(self.config.encoder_receptive_field())
        ov = _check_chunking(chunk_size, overlap, default)
        h = self._encode_frames(x.transpose(0, 2, 1), chunk_size, ov).astype(mx.float32)
        mean, scale = mx.split(h, 2, axis=-1)
        z = mean
        if sample:
            std = nn.softplus(scale) + 1e-4
            z = mean + std * mx.random.normal(mean.shape, key=key)
        z = z / self.config.latent_scale if self.config.latent_scale != 1.0 else z
        z = z.transpose(0, 2, 1)
        mx.eval(z)
        return z

    def decode(
        self, latents: Any, *, chunk_size: int | None = None, overlap: int | None = None
    ) -> mx.array:
        """``(B, latent_dim, T)`` latents → ``(B, C, T · hop)`` float32 audio.

        With ``chunk_size`` (latent frames) the latents are decoded in windows
        ``[start − overlap, end + overlap)`` and only each window's middle ``[start, end)`` is
        kept (a hard cut, no crossfade). An output sample depends only on latents within the
        decoder's receptive field (``config.decoder_receptive_field()``, ≈ 11 frames for SAO),
        and every layer is shift-equivariant by one latent frame (= ``hop`` samples); so when
        ``overlap`` covers that field, every kept sample is computed from exactly the latents and
        intermediate values the whole-sequence decode uses, and the zero padding at a window's
        edge never reaches it: the result equals unchunked decoding up to float rounding.
        Peak memory then scales with ``chunk_size + 2·overlap`` instead of ``T``.
        """
        z = _as_array(latents, "latents", self.config.latent_dim).astype(self.dtype)
        if self.config.latent_scale != 1.0:
            z = z * self.config.latent_scale
        z = z.transpose(0, 2, 1)
        ov = _check_chunking(chunk_size, overlap, math.ceil(self.config.decoder_receptive_field()))
        n = z.shape[1]
        hop = self.hop_length
        if chunk_size is None or chunk_size >= n:
            audio = self.decoder(z)
            mx.eval(audio)
        else:
            parts = []
            for start in range(0, n, chunk_size):
                end = min(start + chunk_size, n)
                lo, hi = max(0, start - ov), min(n, end + ov)
                part = self.decoder(z[:, lo:hi])[:, (start - lo) * hop : (end - lo) * hop]
                mx.eval(part)
                parts.append(part)
            audio = mx.concatenate(parts, axis=1)
        out = audio.astype(mx.float32).transpose(0, 2, 1)
        mx.eval(out)
        return out

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], dtype: mx.Dtype = mx.float32
    ) -> OobleckVAE:
        """Load a diffusers ``AutoencoderOobleck`` directory (the ``vae/`` folder of
        ``stabilityai/stable-audio-open-1.0``: ``config.json`` +
        ``diffusion_pytorch_model.safetensors``), converting in-process."""
        root = Path(path)
        if not root.is_dir():
            raise WeightsError(f"{root}: not a directory")
        raw = read_json(root / "config.json")
        if raw.get("_class_name", "AutoencoderOobleck") != "AutoencoderOobleck":
            raise WeightsError(
                f"{root / 'config.json'}: not an AutoencoderOobleck config "
                f"(_class_name {raw.get('_class_name')!r})"
            )
        try:
            model = cls(OobleckConfig.from_dict(raw))
        except (InvalidInputError, TypeError, ValueError) as e:
            raise WeightsError(f"{root / 'config.json'}: unsupported Oobleck config: {e}") from e
        wfile = root / "diffusion_pytorch_model.safetensors"
        weights = cast_floats(sanitize(load_safetensors(wfile), layout="diffusers"), dtype)
        load_into(model, weights, source=wfile)
        return model


def load_stable_audio_tools(
    weights_path: str | os.PathLike[str],
    config_path: str | os.PathLike[str],
    dtype: mx.Dtype = mx.float32,
) -> OobleckVAE:
    """The Oobleck VAE of a stable-audio-tools checkpoint: ``model.safetensors`` (the whole
    model; only ``pretransform.model.*`` is read) and its ``model_config.json``."""
    cfg_path = Path(config_path)
    raw = read_json(cfg_path)
    try:
        model = OobleckVAE(OobleckConfig.from_stable_audio_tools(raw))
    except (InvalidInputError, TypeError, ValueError, AttributeError, KeyError) as e:
        raise WeightsError(f"{cfg_path}: unsupported pretransform config: {e}") from e
    wpath = Path(weights_path)
    tensors = load_safetensors(wpath)
    weights = sanitize(tensors, layout="sat", prefix="pretransform.model.")
    if not weights:
        raise MissingWeightsError(f"{wpath}: no tensors under 'pretransform.model.'")
    load_into(model, cast_floats(weights, dtype), source=wpath)
    return model


_SAT_RES_UNIT = {"0": "snake1", "1": "conv1", "2": "snake2", "3": "conv2"}
_SAT_ENCODER_BLOCK = {"0": "res_unit1", "1": "res_unit2", "2": "res_unit3", "3": "snake1"}
_SAT_ENCODER_BLOCK["4"] = "conv1"
_SAT_DECODER_BLOCK = {"0": "snake1", "1": "conv_t1", "2": "res_unit1", "3": "res_unit2"}
_SAT_DECODER_BLOCK["4"] = "res_unit3"


def sat_key_to_diffusers(key: str, num_blocks: int) -> str:
    """One stable-audio-tools Oobleck key (prefix stripped) → diffusers' name.

    Upstream nests ``nn.Sequential``s: ``{en,de}coder.layers.0`` is the first conv, ``layers.1…n``
    the blocks (each ``.layers.M``: encoder = 3 residual units, snake, strided conv; decoder =
    snake, transposed conv, 3 residual units; a residual unit's ``.layers`` = snake, conv, snake,
    conv), then the last snake and conv (and a parameterless tanh)."""
    parts = key.split(".")
    if len(parts) < 3 or parts[0] not in ("encoder", "decoder") or parts[1] != "layers":
        raise MissingWeightsError(f"unexpected stable-audio-tools VAE key: {key}")
    side, idx, rest = parts[0], int(parts[2]), parts[3:]
    if idx == 0:
        return ".".join([side, "conv1", *rest])
    if idx == num_blocks + 1:
        return ".".join([side, "snake1", *rest])
    if idx == num_blocks + 2:
        return ".".join([side, "conv2", *rest])
    if not (1 <= idx <= num_blocks and len(rest) >= 3 and rest[0] == "layers"):
        raise MissingWeightsError(f"unexpected stable-audio-tools VAE key: {key}")
    table = _SAT_ENCODER_BLOCK if side == "encoder" else _SAT_DECODER_BLOCK
    if rest[1] not in table:
        raise MissingWeightsError(f"unexpected stable-audio-tools VAE key: {key}")
    sub = table[rest[1]]
    tail = rest[2:]
    if sub.startswith("res_unit"):
        if len(tail) < 3 or tail[0] != "layers" or tail[1] not in _SAT_RES_UNIT:
            raise MissingWeightsError(f"unexpected stable-audio-tools VAE key: {key}")
        tail = [_SAT_RES_UNIT[tail[1]], *tail[2:]]
    return ".".join([side, "block", str(idx - 1), sub, *tail])


def sanitize(
    weights: Mapping[str, Any],
    layout: Literal["diffusers", "sat"] = "diffusers",
    prefix: str = "",
) -> dict[str, mx.array]:
    """Upstream Oobleck tensors → this module's parameters.

    Keeps only keys under ``prefix`` (stripped; e.g. ``"pretransform.model."`` in a whole
    stable-audio-tools checkpoint, whose other tensors are the DiT and conditioners), renames
    stable-audio-tools keys to diffusers' (``layout="sat"``), fuses weight norm (both key styles),
    flattens snake α/β to ``(C,)`` and turns torch conv layouts into MLX's (``conv_t1`` is the
    only ConvTranspose1d)."""
    if layout not in ("diffusers", "sat"):
        raise InvalidInputError(f"Oobleck sanitize: unknown layout {layout!r}")
    picked: dict[str, Any] = {}
    for key, value in weights.items():
        if not key.startswith(prefix):
            continue
        picked[key[len(prefix) :]] = value if isinstance(value, mx.array) else mx.array(value)
    if layout == "sat":
        blocks = {
            int(k.split(".")[2])
            for k in picked
            if k.startswith(("encoder.layers.", "decoder.layers.")) and ".layers." in k[15:]
        }
        n = max(blocks, default=0)
        picked = {sat_key_to_diffusers(k, n): v for k, v in picked.items()}
    out: dict[str, mx.array] = {}
    for key, value in fuse_weight_norms(picked).items():
        leaf = key.rsplit(".", 1)[-1]
        if leaf in ("alpha", "beta"):
            value = value.reshape(-1)
        elif leaf == "weight" and value.ndim == 3:
            is_t = key.endswith("conv_t1.weight")
            value = conv_transpose1d_to_mlx(value) if is_t else conv1d_to_mlx(value)
        out[key] = value
    return out


__all__ = [
    "OobleckConfig",
    "OobleckVAE",
    "load_stable_audio_tools",
    "sanitize",
    "sat_key_to_diffusers",
    "set_numpy_cpu",
]
