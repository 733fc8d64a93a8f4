"""EnCodec (SEANet encoder/decoder + residual vector quantizer) as transformers' ``EncodecModel``.

A port of transformers ``models/encodec/modeling_encodec.py`` for the configurations MusicGen uses
(e.g. facebook/encodec_32khz: 32 kHz mono, 4 codebooks of 2048, 50 frames/s, no normalisation, no
chunking). Attribute names mirror the upstream checkpoint keys (``encoder.layers.N.conv``,
``quantizer.layers.N.codebook.embed``), so loading is ``sanitize()`` plus a strict load.

Everything runs channels-last, ``(batch, time, channels)``, the layout MLX convolutions and matmuls
want; the public ``encode``/``decode`` take and return upstream's ``(batch, channels, time)``.

Speed (measured on a 2-core x86 CPU, MLX 0.32): MLX's CPU ``conv_transpose1d`` took ~10 s per
EnCodec-32k upsampling layer and ``conv1d`` ran 2-15x slower than a plain matmul formulation, so
every convolution here is written as matmuls over time-shifted views (see ``_conv1d`` and
``_conv_transpose1d``). The LSTM precomputes its input projection for all steps at once and runs a
compiled two-op recurrent step.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from audiogen_core.errors import InvalidInputError, MissingWeightsError, WeightsError
from audiogen_core.weights import (
    cast_floats,
    conv1d_to_mlx,
    conv_transpose1d_to_mlx,
    fuse_weight_norms,
    load_into,
    load_safetensors,
)

import mlx.core as mx
import mlx.nn as nn
import numpy as np


@dataclass(frozen=True)
class EncodecConfig:
    """transformers ``EncodecConfig`` fields and defaults (those of facebook/encodec_24khz)."""

    target_bandwidths: tuple[float, ...] = (1.5, 3.0, 6.0, 12.0, 24.0)
    sampling_rate: int = 24_000
    audio_channels: int = 1
    normalize: bool = False
    chunk_length_s: float | None = None
    overlap: float | None = None
    hidden_size: int = 128
    num_filters: int = 32
    num_residual_layers: int = 1
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2)
    norm_type: str = "weight_norm"
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    use_causal_conv: bool = True
    pad_mode: str = "reflect"
    compress: int = 2
    num_lstm_layers: int = 2
    trim_right_ratio: float = 1.0
    codebook_size: int = 1024
    codebook_dim: int | None = None
    use_conv_shortcut: bool = True

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EncodecConfig:
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {k: v for k, v in d.items() if k in names}
        for k in ("target_bandwidths", "upsampling_ratios"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    @property
    def dim(self) -> int:
        """Codebook vector size (``codebook_dim`` falls back to ``hidden_size`` upstream)."""
        return self.codebook_dim if self.codebook_dim is not None else self.hidden_size

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.upsampling_ratios))

    @property
    def codebook_nbits(self) -> int:
        return math.ceil(math.log2(self.codebook_size))

    @property
    def frame_rate(self) -> int:
        return math.ceil(self.sampling_rate / self.hop_length)

    @property
    def num_quantizers(self) -> int:
        """Quantizer layers in the checkpoint: sized for the *largest* bandwidth (upstream's
        float floor division kept on purpose)."""
        return int(1000 * self.target_bandwidths[-1] // (self.frame_rate * self.codebook_nbits))

    def num_quantizers_for_bandwidth(self, bandwidth: float | None = None) -> int:
        """transformers ``get_num_quantizers_for_bandwidth``: note it uses the exact
        ``log2(codebook_size)`` where ``num_quantizers`` uses its ceiling."""
        bw_per_q = math.log2(self.codebook_size) * self.frame_rate
        n = self.num_quantizers
        if bandwidth is not None and bandwidth > 0.0:
            n = int(max(1, math.floor(bandwidth * 1000 / bw_per_q)))
        return n


_state = {"numpy_cpu": True}
_pool: list[ThreadPoolExecutor] = []


@contextmanager
def pure_mlx() -> Iterator[None]:
    """Turn off the numpy CPU fast paths (ELU, LSTM recurrence) inside the block: the pure-MLX
    code that runs on GPU/Metal, for tests and comparisons."""
    old = _state["numpy_cpu"]
    _state["numpy_cpu"] = False
    try:
        yield
    finally:
        _state["numpy_cpu"] = old


def _numpy_ok(x: mx.array) -> bool:
    """numpy helps only on the CPU device, and only for float32 (numpy has no bfloat16)."""
    return (
        _state["numpy_cpu"]
        and x.dtype == mx.float32
        and mx.default_device().type == mx.DeviceType.cpu
    )


def _threads() -> ThreadPoolExecutor:
    if not _pool:
        _pool.append(ThreadPoolExecutor(max(1, min(8, os.cpu_count() or 1))))
    return _pool[0]


def _elu_numpy_into(src: np.ndarray, dst: np.ndarray) -> None:
    # Cache-sized chunks: min → expm1 → + max stay in L2 instead of four passes over memory.
    step = 1 << 16
    tmp = np.empty(min(step, src.size), np.float32)
    for i in range(0, src.size, step):
        a, o = src[i : i + step], dst[i : i + step]
        t = tmp[: a.size]
        np.minimum(a, 0.0, out=o)
        np.expm1(o, out=o)
        np.maximum(a, 0.0, out=t)
        o += t


def _elu(x: mx.array) -> mx.array:
    """ELU(alpha=1). On the CPU, MLX's ``exp`` measured ~20 ns/element (scalar; torch's ELU is
    ~2 ns), which made ELU the largest cost of decoding; numpy's SIMD ``expm1`` over threads is
    >10x faster. It writes straight into a fresh MLX buffer, so nothing is copied back."""
    if not _numpy_ok(x) or x.size < (1 << 16):
        return nn.elu(x)
    mx.eval(x)
    src = np.ascontiguousarray(x).reshape(-1)
    out = mx.zeros(x.shape, dtype=mx.float32)
    mx.eval(out)
    dst = np.asarray(out).reshape(-1)
    if not (dst.flags.writeable and dst.flags.c_contiguous and dst.size == x.size):
        return nn.elu(x)
    pool = _threads()
    n = pool._max_workers
    bounds = [src.size * i // n for i in range(n + 1)]
    list(
        pool.map(
            lambda i: _elu_numpy_into(
                src[bounds[i] : bounds[i + 1]], dst[bounds[i] : bounds[i + 1]]
            ),
            range(n),
        )
    )
    return out


def _pad1d(x: mx.array, left: int, right: int, mode: str) -> mx.array:
    """Pad the time axis (1) of ``(B, T, C)``; upstream ``EncodecConv1d._pad1d``.

    Reflect padding needs ``T > pad``; like upstream, a too-short input is first zero-extended on
    the right, reflected, and the extension cut off again.
    """
    if left == 0 and right == 0:
        return x
    if mode in ("constant", "zero"):
        return mx.pad(x, [(0, 0), (left, right), (0, 0)])
    if mode == "replicate":
        return mx.pad(x, [(0, 0), (left, right), (0, 0)], mode="edge")
    if mode != "reflect":
        raise InvalidInputError(f"EnCodec pad_mode {mode!r} is not supported")
    length = x.shape[1]
    extra = 0
    max_pad = max(left, right)
    if length <= max_pad:
        extra = max_pad - length + 1
        x = mx.pad(x, [(0, 0), (0, extra), (0, 0)])
        length += extra
    parts = []
    if left:
        parts.append(x[:, 1 : left + 1][:, ::-1])
    parts.append(x)
    if right:
        parts.append(x[:, length - 1 - right : length - 1][:, ::-1])
    out = mx.concatenate(parts, axis=1)
    return out[:, : out.shape[1] - extra] if extra else out


def _conv1d(
    x: mx.array, w: mx.array, b: mx.array | None, stride: int = 1, dilation: int = 1
) -> mx.array:
    """Valid (unpadded) 1-D convolution of ``(B, T, Cin)`` with an MLX weight ``(Cout, K, Cin)``.

    Written as matmuls because MLX's CPU conv is slow; the variant is picked by shape:
    tiny ``K·Cin`` → im2col (one matmul on a small window matrix); strided → fold ``stride``
    samples into channels so it becomes a stride-1 conv; few outputs → one matmul to every tap,
    then shift-add; otherwise accumulate one matmul per tap.
    """
    cout, k, cin = w.shape
    bsz, length, _ = x.shape
    span = (k - 1) * dilation + 1
    n_out = (length - span) // stride + 1
    if stride > 1:
        # Pad the kernel to a multiple of the stride with zero taps, and the input to match, then
        # view ``stride`` consecutive samples as one frame of ``stride·Cin`` channels.
        if dilation != 1:
            raise InvalidInputError("EnCodec: strided and dilated conv at once is not supported")
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
    elif k * cin <= 32:
        cols = mx.concatenate([x[:, j * dilation : j * dilation + n_out] for j in range(k)], -1)
        out = cols @ w.reshape(cout, k * cin).T
    elif k * cout <= cin:
        z = (x @ w.transpose(2, 1, 0).reshape(cin, k * cout)).reshape(bsz, length, k, cout)
        out = z[:, :n_out, 0]
        for j in range(1, k):
            out = out + z[:, j * dilation : j * dilation + n_out, j]
    else:
        out = x[:, :n_out] @ w[:, 0, :].T
        for j in range(1, k):
            out = mx.addmm(out, x[:, j * dilation : j * dilation + n_out], w[:, j, :].T)
    return out + b if b is not None else out


def _conv_transpose1d(x: mx.array, w: mx.array, b: mx.array | None, stride: int) -> mx.array:
    """Transposed conv of ``(B, T, Cin)`` with MLX weight ``(Cout, K, Cin)``; output length
    ``(T-1)·stride + K`` like torch.

    With ``m = ceil(K/stride)`` tap groups, output frame ``t`` (``stride`` samples) is
    ``Σ_j x[t-j] · W_j``: a stride-1 conv over the zero-padded input whose "channels" are whole
    output frames. Accumulating the ``m`` matmuls with ``addmm`` writes each frame once, instead of
    materialising every tap's product and overlap-adding them (measured ~2x slower at 32 kHz).
    """
    cout, k, cin = w.shape
    bsz, length, _ = x.shape
    m = -(-k // stride)
    if m * stride != k:
        w = mx.pad(w, [(0, 0), (0, m * stride - k), (0, 0)])
    # (m, Cin, stride·Cout): W_j maps one input step to the j-th frame after it
    wj = w.reshape(cout, m, stride, cin).transpose(1, 3, 2, 0).reshape(m, cin, stride * cout)
    n_frames = length + m - 1
    xp = mx.pad(x, [(0, 0), (m - 1, m - 1), (0, 0)]) if m > 1 else x
    if b is not None:
        acc = mx.addmm(mx.tile(b, stride), xp[:, m - 1 : m - 1 + n_frames], wj[0])
    else:
        acc = xp[:, m - 1 : m - 1 + n_frames] @ wj[0]
    for j in range(1, m):
        acc = mx.addmm(acc, xp[:, m - 1 - j : m - 1 - j + n_frames], wj[j])
    return acc.reshape(bsz, n_frames * stride, cout)[:, : (length - 1) * stride + k]


class _Conv(nn.Module):
    """Holds ``weight`` (MLX layout) and ``bias`` under the upstream ``.conv`` name."""

    def __init__(self, cout: int, k: int, cin: int):
        super().__init__()
        self.weight = mx.zeros((cout, k, cin))
        self.bias = mx.zeros((cout,))


class _GroupNorm1(nn.Module):
    """torch ``GroupNorm(1, C)`` (``time_group_norm``): normalise over time and channels."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.weight = mx.ones((channels,))
        self.bias = mx.zeros((channels,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        centred = x - mx.mean(x, axis=(1, 2), keepdims=True)
        var = mx.mean(centred * centred, axis=(1, 2), keepdims=True)
        return centred * mx.rsqrt(var + self.eps) * self.weight + self.bias


class EncodecConv1d(nn.Module):
    """Conv1d with upstream's asymmetric (or causal) padding: ``EncodecConv1d``."""

    def __init__(
        self,
        config: EncodecConfig,
        cin: int,
        cout: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
    ):
        super().__init__()
        self.causal = config.use_causal_conv
        self.pad_mode = config.pad_mode
        self.stride = stride
        self.dilation = dilation
        self.conv = _Conv(cout, kernel_size, cin)
        if config.norm_type == "time_group_norm":
            self.norm = _GroupNorm1(cout)
        self.kernel_eff = (kernel_size - 1) * dilation + 1
        self.padding_total = self.kernel_eff - stride

    def _extra_padding(self, length: int) -> int:
        # upstream `_get_extra_padding_for_conv1d`, in exact integer arithmetic
        k, s, pt = self.kernel_eff, self.stride, self.padding_total
        n_frames = -(-(length - k + pt) // s)
        return n_frames * s + k - pt - length

    def __call__(self, x: mx.array) -> mx.array:
        extra = self._extra_padding(x.shape[1])
        if self.causal:
            x = _pad1d(x, self.padding_total, extra, self.pad_mode)
        else:
            right = self.padding_total // 2
            x = _pad1d(x, self.padding_total - right, right + extra, self.pad_mode)
        x = _conv1d(x, self.conv.weight, self.conv.bias, self.stride, self.dilation)
        if "norm" in self:
            x = self.norm(x)
        return x


class EncodecConvTranspose1d(nn.Module):
    """ConvTranspose1d with upstream's fixed trimming (``trim_right_ratio`` when causal)."""

    def __init__(self, config: EncodecConfig, cin: int, cout: int, kernel_size: int, stride: int):
        super().__init__()
        if not (config.use_causal_conv or config.trim_right_ratio == 1.0):
            raise InvalidInputError("EnCodec: trim_right_ratio != 1.0 needs use_causal_conv")
        self.causal = config.use_causal_conv
        self.trim_right_ratio = config.trim_right_ratio
        self.stride = stride
        self.conv = _Conv(cout, kernel_size, cin)
        if config.norm_type == "time_group_norm":
            self.norm = _GroupNorm1(cout)
        self.padding_total = kernel_size - stride

    def __call__(self, x: mx.array) -> mx.array:
        x = _conv_transpose1d(x, self.conv.weight, self.conv.bias, self.stride)
        if "norm" in self:
            x = self.norm(x)
        pt = self.padding_total
        right = math.ceil(pt * self.trim_right_ratio) if self.causal else pt // 2
        left = pt - right
        return x[:, left : x.shape[1] - right]


def _lstm_step(xp_t: mx.array, h: mx.array, c: mx.array, w_hh_t: mx.array) -> list[mx.array]:
    # torch gate order: input, forget, cell (g), output
    gates = xp_t + h @ w_hh_t
    i, f, g, o = mx.split(gates, 4, axis=-1)
    c = mx.sigmoid(f) * c + mx.sigmoid(i) * mx.tanh(g)
    h = mx.sigmoid(o) * mx.tanh(c)
    return [h, c]


_lstm_step_compiled = mx.compile(_lstm_step)


class _TorchLSTM(nn.Module):
    """torch ``nn.LSTM`` parameters under torch's names (``weight_ih_l0`` …), batch-first."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        for n in range(num_layers):
            setattr(self, f"weight_ih_l{n}", mx.zeros((4 * dim, dim)))
            setattr(self, f"weight_hh_l{n}", mx.zeros((4 * dim, dim)))
            setattr(self, f"bias_ih_l{n}", mx.zeros((4 * dim,)))
            setattr(self, f"bias_hh_l{n}", mx.zeros((4 * dim,)))

    def __call__(self, x: mx.array) -> mx.array:
        bsz, length, dim = x.shape
        for n in range(self.num_layers):
            # The input projection of all steps is one matmul; only h @ W_hh stays in the loop.
            bias = self[f"bias_ih_l{n}"] + self[f"bias_hh_l{n}"]
            xp = mx.addmm(bias, x, self[f"weight_ih_l{n}"].T)
            w_hh = self[f"weight_hh_l{n}"]
            if _numpy_ok(xp):
                x = _lstm_recurrence_numpy(xp, w_hh)
                continue
            w_hh_t = w_hh.T
            h = mx.zeros((bsz, dim), dtype=x.dtype)
            c = mx.zeros((bsz, dim), dtype=x.dtype)
            outs = []
            for t in range(length):
                h, c = _lstm_step_compiled(xp[:, t], h, c, w_hh_t)
                outs.append(h)
            x = mx.stack(outs, axis=1)
        return x


def _lstm_recurrence_numpy(xp: mx.array, w_hh: mx.array) -> mx.array:
    """The recurrent loop in numpy, for the CPU. Each step is a (1 × H) · (H × 4H) product:
    MLX sends it to ``sgemm``, which in the system OpenBLAS 0.3.21 repacks the 16 MB weight every
    step (~1.1 ms at H=1024), while numpy's ``gemv`` takes ~0.35 ms; per-step MLX graph overhead
    goes away as well. Same gate order (i, f, g, o) and arithmetic as torch."""
    bsz, length, four_h = xp.shape
    dim = four_h // 4
    # Reorder torch's (i, f, g, o) rows to (i, f, o, g) once, so each step applies one sigmoid
    # to a contiguous slice and one tanh to the rest.
    order = mx.concatenate(
        [mx.arange(0, 2 * dim), mx.arange(3 * dim, 4 * dim), mx.arange(2 * dim, 3 * dim)]
    )
    xp, w_hh = xp[..., order], w_hh[order]
    mx.eval(xp, w_hh)
    xpn = np.asarray(xp)
    w = np.asarray(w_hh)
    h = np.zeros((bsz, dim), np.float32)
    c = np.zeros((bsz, dim), np.float32)
    out = np.empty((bsz, length, dim), np.float32)
    for t in range(length):
        gates = xpn[:, t] + (w @ h[0])[None] if bsz == 1 else xpn[:, t] + h @ w.T
        # sigmoid(z) = (1 + tanh(z/2)) / 2: no overflow warnings, vectorised in numpy
        sig = 0.5 + 0.5 * np.tanh(0.5 * gates[:, : 3 * dim])
        c = sig[:, dim : 2 * dim] * c + sig[:, :dim] * np.tanh(gates[:, 3 * dim :])
        h = sig[:, 2 * dim :] * np.tanh(c)
        out[:, t] = h
    return mx.array(out)


class EncodecLSTM(nn.Module):
    """Multi-layer LSTM over time with a skip connection (upstream ``EncodecLSTM``)."""

    def __init__(self, config: EncodecConfig, dim: int):
        super().__init__()
        self.lstm = _TorchLSTM(dim, config.num_lstm_layers)

    def __call__(self, x: mx.array) -> mx.array:
        return self.lstm(x) + x


class _ELU(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        return _elu(x)


class EncodecResnetBlock(nn.Module):
    """SEANet residual block: ELU → conv(k, dilation) → ELU → conv(1), plus (conv) shortcut."""

    def __init__(self, config: EncodecConfig, dim: int, dilations: tuple[int, int]):
        super().__init__()
        kernel_sizes = (config.residual_kernel_size, 1)
        hidden = dim // config.compress
        block: list[nn.Module] = []
        for i, (k, d) in enumerate(zip(kernel_sizes, dilations, strict=True)):
            cin = dim if i == 0 else hidden
            cout = dim if i == len(kernel_sizes) - 1 else hidden
            block += [_ELU(), EncodecConv1d(config, cin, cout, k, dilation=d)]
        self.block = block
        if config.use_conv_shortcut:
            self.shortcut = EncodecConv1d(config, dim, dim, kernel_size=1)

    def __call__(self, x: mx.array) -> mx.array:
        residual = self.shortcut(x) if "shortcut" in self else x
        for layer in self.block:
            x = layer(x)
        return residual + x


class EncodecEncoder(nn.Module):
    def __init__(self, config: EncodecConfig):
        super().__init__()
        c = config
        layers: list[nn.Module] = [EncodecConv1d(c, c.audio_channels, c.num_filters, c.kernel_size)]
        scaling = 1
        for ratio in reversed(c.upsampling_ratios):
            scale = scaling * c.num_filters
            for j in range(c.num_residual_layers):
                layers.append(EncodecResnetBlock(c, scale, (c.dilation_growth_rate**j, 1)))
            layers += [_ELU(), EncodecConv1d(c, scale, scale * 2, ratio * 2, stride=ratio)]
            scaling *= 2
        layers += [
            EncodecLSTM(c, scaling * c.num_filters),
            _ELU(),
            EncodecConv1d(c, scaling * c.num_filters, c.hidden_size, c.last_kernel_size),
        ]
        self.layers = layers

    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.layers:
            x = layer(x)
        return x


class EncodecDecoder(nn.Module):
    def __init__(self, config: EncodecConfig):
        super().__init__()
        c = config
        scaling = 2 ** len(c.upsampling_ratios)
        layers: list[nn.Module] = [
            EncodecConv1d(c, c.hidden_size, scaling * c.num_filters, c.kernel_size),
            EncodecLSTM(c, scaling * c.num_filters),
        ]
        for ratio in c.upsampling_ratios:
            scale = scaling * c.num_filters
            layers += [_ELU(), EncodecConvTranspose1d(c, scale, scale // 2, ratio * 2, ratio)]
            for j in range(c.num_residual_layers):
                layers.append(EncodecResnetBlock(c, scale // 2, (c.dilation_growth_rate**j, 1)))
            scaling //= 2
        layers += [_ELU(), EncodecConv1d(c, c.num_filters, c.audio_channels, c.last_kernel_size)]
        self.layers = layers

    def __call__(self, x: mx.array) -> mx.array:
        for layer in self.layers:
            x = layer(x)
        return x


class EncodecEuclideanCodebook(nn.Module):
    def __init__(self, config: EncodecConfig):
        super().__init__()
        self.embed = mx.zeros((config.codebook_size, config.dim))

    def encode(self, x: mx.array) -> mx.array:
        """Nearest code by L2 distance, with upstream's exact expression (so ties and rounding
        go the same way): argmax of ``-(|x|² - 2 x·e + |e|²)``."""
        embed_t = self.embed.T
        dist = -(
            mx.sum(x * x, axis=-1, keepdims=True)
            - 2 * (x @ embed_t)
            + mx.sum(embed_t * embed_t, axis=0, keepdims=True)
        )
        return mx.argmax(dist, axis=-1).astype(mx.int32)

    def decode(self, codes: mx.array) -> mx.array:
        return self.embed[codes]


class EncodecVectorQuantization(nn.Module):
    def __init__(self, config: EncodecConfig):
        super().__init__()
        self.codebook = EncodecEuclideanCodebook(config)


class EncodecResidualVectorQuantizer(nn.Module):
    def __init__(self, config: EncodecConfig):
        super().__init__()
        self.layers = [EncodecVectorQuantization(config) for _ in range(config.num_quantizers)]

    def encode(self, x: mx.array, num_quantizers: int) -> mx.array:
        """``(B, F, D)`` embeddings → ``(B, K, F)`` codes, each stage quantising the residual."""
        residual = x
        codes = []
        for layer in self.layers[:num_quantizers]:
            idx = layer.codebook.encode(residual)
            residual = residual - layer.codebook.decode(idx)
            codes.append(idx)
        return mx.stack(codes, axis=1)

    def decode(self, codes: mx.array) -> mx.array:
        """``(B, K, F)`` codes → ``(B, F, D)``: the sum of each codebook's embeddings."""
        out = self.layers[0].codebook.decode(codes[:, 0])
        for k in range(1, codes.shape[1]):
            out = out + self.layers[k].codebook.decode(codes[:, k])
        return out


def sanitize(weights: Mapping[str, Any], prefix: str = "") -> dict[str, mx.array]:
    """Upstream transformers EnCodec tensors → this module's parameters.

    Keeps only keys under ``prefix`` (``"audio_encoder."`` inside a MusicGen checkpoint) and strips
    it; fuses weight norm (``weight_g/weight_v`` or ``parametrizations.weight.original0/1``);
    drops the codebooks' training buffers (``inited``, ``cluster_size``, ``embed_avg``); turns
    torch conv layouts into MLX's. In the decoder the top-level ``layers.N.conv`` of every layer
    but the first and the last is a ConvTranspose1d (upstream's fixed layer order).
    """
    picked: dict[str, Any] = {}
    for key, value in weights.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name.endswith((".inited", ".cluster_size", ".embed_avg")):
            continue
        picked[name] = value if isinstance(value, mx.array) else mx.array(np.asarray(value))
    fused = fuse_weight_norms(picked)

    top_decoder_convs = sorted(
        int(k.split(".")[2])
        for k in fused
        if k.startswith("decoder.layers.") and k.endswith(".conv.weight") and k.count(".") == 4
    )
    transposed = {f"decoder.layers.{n}.conv.weight" for n in top_decoder_convs[1:-1]}
    out: dict[str, mx.array] = {}
    for key, value in fused.items():
        if key.endswith(".conv.weight") and value.ndim == 3:
            value = conv_transpose1d_to_mlx(value) if key in transposed else conv1d_to_mlx(value)
        out[key] = value
    return out


def _as_float_audio(audio: Any, channels: int) -> mx.array:
    if isinstance(audio, mx.array):
        floating = mx.issubdtype(audio.dtype, mx.floating)
        shape = tuple(audio.shape)
        dtype_name = str(audio.dtype)
    else:
        arr = np.asarray(audio)
        floating = np.issubdtype(arr.dtype, np.floating)
        shape = arr.shape
        dtype_name = str(arr.dtype)
    if not floating:
        raise InvalidInputError(f"EnCodec.encode: audio must be floating point, got {dtype_name}")
    if len(shape) != 3:
        raise InvalidInputError(
            f"EnCodec.encode: audio must be (batch, channels, samples), got shape {shape}"
        )
    if shape[1] != channels:
        raise InvalidInputError(
            f"EnCodec.encode: model takes {channels} channel(s), audio has {shape[1]} "
            f"(shape {shape})"
        )
    if shape[0] < 1 or shape[2] < 1:
        raise InvalidInputError(f"EnCodec.encode: empty audio, shape {shape}")
    if isinstance(audio, mx.array):
        return audio
    return mx.array(np.ascontiguousarray(audio, dtype=np.float32))


class EncodecModel(nn.Module):
    """EnCodec codec: ``encode`` audio → codes and ``decode`` codes → audio, transformers parity."""

    def __init__(self, config: EncodecConfig):
        super().__init__()
        if config.norm_type not in ("weight_norm", "time_group_norm"):
            raise InvalidInputError(f"EnCodec norm_type {config.norm_type!r} is not supported")
        if config.normalize or config.chunk_length_s is not None:
            # Both produce per-chunk scales/overlap-add state our codes-only API does not carry;
            # MusicGen's EnCodec uses neither.
            raise InvalidInputError(
                "EnCodec with normalize=True or chunk_length_s (e.g. encodec_48khz) is not supported"
            )
        if 2 ** int(math.log2(config.codebook_size)) != config.codebook_size:
            raise InvalidInputError("EnCodec codebook_size must be a power of 2")
        self.config = config
        self.encoder = EncodecEncoder(config)
        self.decoder = EncodecDecoder(config)
        self.quantizer = EncodecResidualVectorQuantizer(config)

    @property
    def sample_rate(self) -> int:
        return self.config.sampling_rate

    @property
    def channels(self) -> int:
        return self.config.audio_channels

    @property
    def frame_rate(self) -> int:
        return self.config.frame_rate

    @property
    def num_codebooks(self) -> int:
        """Codebooks used by default: upstream ``encode(bandwidth=None)`` takes the first target
        bandwidth (capped, like upstream's slice, at the quantizers present)."""
        n = self.config.num_quantizers_for_bandwidth(self.config.target_bandwidths[0])
        return min(n, self.config.num_quantizers)

    @property
    def dtype(self) -> mx.Dtype:
        return self.quantizer.layers[0].codebook.embed.dtype

    def encode(self, audio: Any, num_codebooks: int | None = None) -> mx.array:
        """``(B, C, T)`` float audio at ``sample_rate`` → ``(B, K, ceil(T / hop))`` int32 codes."""
        k = self.num_codebooks if num_codebooks is None else num_codebooks
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise InvalidInputError(f"EnCodec.encode: num_codebooks must be an int, got {k!r}")
        if not 1 <= k <= self.config.num_quantizers:
            raise InvalidInputError(
                f"EnCodec.encode: num_codebooks must be in 1..{self.config.num_quantizers}, got {k}"
            )
        x = _as_float_audio(audio, self.channels).astype(self.dtype)
        emb = self.encoder(x.transpose(0, 2, 1))
        codes = self.quantizer.encode(emb, int(k))
        mx.eval(codes)
        return codes

    def decode(self, codes: Any) -> mx.array:
        """``(B, K, F)`` integer codes → ``(B, C, F · hop)`` float32 audio."""
        arr = codes if isinstance(codes, mx.array) else mx.array(np.asarray(codes))
        integer = mx.issubdtype(arr.dtype, mx.integer)
        if not integer:
            raise InvalidInputError(f"EnCodec.decode: codes must be integers, got {arr.dtype}")
        if arr.ndim != 3:
            raise InvalidInputError(
                f"EnCodec.decode: codes must be (batch, codebooks, frames), got shape {arr.shape}"
            )
        bsz, k, frames = arr.shape
        if not 1 <= k <= self.config.num_quantizers:
            raise InvalidInputError(
                f"EnCodec.decode: {k} codebooks given, model has {self.config.num_quantizers}"
            )
        if bsz < 1 or frames < 1:
            raise InvalidInputError(f"EnCodec.decode: empty codes, shape {arr.shape}")
        lo, hi = (int(np.asarray(v)) for v in (mx.min(arr), mx.max(arr)))
        if lo < 0 or hi >= self.config.codebook_size:
            raise InvalidInputError(
                f"EnCodec.decode: codes must be in [0, {self.config.codebook_size}), "
                f"got values in [{lo}, {hi}]"
            )
        emb = self.quantizer.decode(arr.astype(mx.int32))
        audio = self.decoder(emb).transpose(0, 2, 1).astype(mx.float32)
        mx.eval(audio)
        return audio

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], dtype: mx.Dtype = mx.float32
    ) -> EncodecModel:
        """Load a local transformers ``EncodecModel`` directory, or the ``audio_encoder`` of a
        MusicGen composite directory (single or sharded safetensors), converting in-process."""
        root = Path(path)
        if not root.is_dir():
            raise WeightsError(f"{root}: not a directory")
        cfg_path = root / "config.json"
        try:
            raw = json.loads(cfg_path.read_text())
        except FileNotFoundError as e:
            raise WeightsError(f"{cfg_path}: config.json not found") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightsError(f"{cfg_path}: unreadable config: {e}") from e
        if not isinstance(raw, dict):
            raise WeightsError(f"{cfg_path}: config is not a JSON object")
        if raw.get("model_type") == "encodec":
            cfg_dict, prefix = raw, ""
        elif isinstance(raw.get("audio_encoder"), dict):
            cfg_dict, prefix = raw["audio_encoder"], "audio_encoder."
        else:
            raise WeightsError(
                f"{cfg_path}: neither an EnCodec config (model_type 'encodec') nor a MusicGen "
                "config with an 'audio_encoder' section"
            )
        try:
            config = EncodecConfig.from_dict(cfg_dict)
            model = cls(config)
        except (InvalidInputError, TypeError) as e:
            raise WeightsError(f"{cfg_path}: unsupported EnCodec config: {e}") from e

        files = _weight_files(root, prefix)
        raw_weights: dict[str, mx.array] = {}
        for f in files:
            raw_weights.update(load_safetensors(f))
        source = ", ".join(str(f) for f in files)
        weights = cast_floats(sanitize(raw_weights, prefix), dtype)
        load_into(model, weights, source=source)
        return model


def _weight_files(root: Path, prefix: str) -> list[Path]:
    """The safetensors files holding the EnCodec tensors: ``model.safetensors``, or the shards
    of ``model.safetensors.index.json`` that contain keys under ``prefix``. (``mx.load`` is lazy,
    so the other tensors of a single-file MusicGen checkpoint are never read.)"""
    single = root / "model.safetensors"
    index = root / "model.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise WeightsError(f"{index}: unreadable safetensors index: {e}") from e
        shards = sorted({v for k, v in weight_map.items() if k.startswith(prefix)})
        if not shards:
            raise MissingWeightsError(f"{index}: no tensors under {prefix!r}")
        return [root / s for s in shards]
    raise WeightsError(f"{root}: no model.safetensors or model.safetensors.index.json")


__all__ = ["EncodecConfig", "EncodecModel", "sanitize"]
