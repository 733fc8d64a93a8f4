"""EnCodec (SEANet encoder/decoder + residual vector quantizer) as transformers' ``EncodecModel``.

A port of transformers ``models/encodec/modeling_encodec.py`` for the configurations MusicGen uses
(e.g. facebook/encodec_32khz: 32 kHz mono, 4 codebooks of 2048, 50 frames/s, no normalisation, no
chunking). Attribute names mirror the upstream checkpoint keys (``encoder.layers.N.conv``,
``quantizer.layers.N.codebook.embed``), so loading is ``sanitize()`` plus a strict load.

Everything runs channels-last, ``(batch, time, channels)``, the layout MLX convolutions and matmuls
want; the public ``encode``/``decode`` take and return upstream's ``(batch, channels, time)``.

Two execution paths share the weights:

- pure MLX (GPU/Metal, and any non-float32 dtype): every convolution is written as matmuls over
  time-shifted views (``_conv1d``, ``_conv_transpose1d``), because MLX's CPU ``conv_transpose1d``
  took ~10 s per EnCodec-32k upsampling layer and its ``conv1d`` ran 2-15x slower than matmuls;
  the LSTM runs a compiled two-op recurrent step.
- numpy on the CPU (float32; ``pure_mlx()`` turns it off): the whole SEANet stack runs on
  cache-sized time blocks (~4 MB of activations, halos included) spread over every core, each
  worker with a single-threaded BLAS. Each ELU is applied inside the next conv's blocks and a
  resnet block's ELU → conv → ELU → conv → add stays in cache for its block and writes its
  sum back over its input, so the 80 MB activations at 64 channels × 320k samples are read
  and written once per layer, and padding is never materialised (``_Rows``). What is left
  is mostly arithmetic: EnCodec-32k decode of 10 s is ~60 GFLOP of sgemm (60-100 GFLOP/s
  per core on a Sapphire Rapids), plus the LSTM's recurrent gemv re-reading a 16 MB weight
  every step (~0.34 ms on 2 cores), ~0.8 s of the ~1.8-2.4 s CPU time that decode measured
  (tools/bench/encodec.py, shared 2-core machine).
"""

from __future__ import annotations

import ctypes
import functools
import json
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, cast

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
    """Turn off the numpy CPU path (convolution stack and LSTM recurrence) inside the block: the
    pure-MLX code that runs on GPU/Metal, for tests and comparisons."""
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
        if _numpy_ok(x):
            mx.eval(x)
            return mx.array(self.forward_numpy(np.asarray(x)))
        bsz, length, dim = x.shape
        for n in range(self.num_layers):
            # The input projection of all steps is one matmul; only h @ W_hh stays in the loop.
            bias = self[f"bias_ih_l{n}"] + self[f"bias_hh_l{n}"]
            xp = mx.addmm(bias, x, self[f"weight_ih_l{n}"].T)
            w_hh_t = self[f"weight_hh_l{n}"].T
            h = mx.zeros((bsz, dim), dtype=x.dtype)
            c = mx.zeros((bsz, dim), dtype=x.dtype)
            outs = []
            for t in range(length):
                h, c = _lstm_step_compiled(xp[:, t], h, c, w_hh_t)
                outs.append(h)
            x = mx.stack(outs, axis=1)
        return x

    def _numpy_weights(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per layer ``(W_ih, bias, W_hh)`` as numpy with the gate rows reordered from torch's
        (i, f, g, o) to (i, f, o, g): each step then applies one sigmoid to a contiguous slice
        and one tanh to the rest, and the input projection needs no gather afterwards."""

        def make() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            out = []
            for n in range(self.num_layers):
                w_ih, w_hh = (_to_np(self[f"weight_{k}_l{n}"]) for k in ("ih", "hh"))
                bias = _to_np(self[f"bias_ih_l{n}"]) + _to_np(self[f"bias_hh_l{n}"])
                d = w_hh.shape[1]
                order = np.r_[0 : 2 * d, 3 * d : 4 * d, 2 * d : 3 * d]
                out.append((w_ih[order].copy(), bias[order].copy(), w_hh[order].copy()))
            return out

        keys = tuple(self[f"{k}_l{n}"] for n in range(self.num_layers) for k in _LSTM_KEYS)
        return _cached(self, keys, make)

    def forward_numpy(self, x: np.ndarray) -> np.ndarray:
        """The CPU path: ``(B, T, H)`` float32 → ``(B, T, H)``, same arithmetic as torch.

        The input projection of all steps is one multithreaded sgemm per layer; the loop keeps
        only ``W_hh · h`` (a gemv re-reading the 16 MB weight from L3 each step: ~0.34 ms at
        H=1024 on 2 cores, the bulk of the ~0.4 ms step) and ten small in-place ufuncs on
        preallocated buffers. numpy rather than MLX because MLX sends the 1-row product to
        sgemm (~1.0 ms, it packs the weight every step) and adds per-step graph overhead.
        A wavefront over the layers (layer 2 step t beside layer 1 step t+1) was not kept: it
        turns layer 2's batched input projection into a per-step gemv over another 16 MB.
        """
        with _blas_threads(None):
            return self._forward_numpy(x)

    def _forward_numpy(self, x: np.ndarray) -> np.ndarray:
        bsz, length, dim = x.shape
        for w_ih, bias, w_hh in self._numpy_weights():
            xp = np.matmul(x, w_ih.T)
            xp += bias
            out = np.empty((bsz, length, dim), np.float32)
            gates = np.empty((bsz, 4 * dim), np.float32)
            c = np.zeros((bsz, dim), np.float32)
            tmp = np.empty((bsz, dim), np.float32)
            h = np.zeros((bsz, dim), np.float32)
            sig, g = gates[:, : 3 * dim], gates[:, 3 * dim :]
            i_g, f_g, o_g = sig[:, :dim], sig[:, dim : 2 * dim], sig[:, 2 * dim :]
            for t in range(length):
                if bsz == 1:
                    np.dot(w_hh, h[0], out=gates[0])
                else:
                    np.matmul(h, w_hh.T, out=gates)
                gates += xp[:, t]
                # sigmoid(z) = (1 + tanh(z/2)) / 2: no overflow warnings, vectorised in numpy
                sig *= 0.5
                np.tanh(sig, out=sig)
                sig *= 0.5
                sig += 0.5
                np.tanh(g, out=g)
                c *= f_g
                np.multiply(i_g, g, out=tmp)
                c += tmp
                np.tanh(c, out=tmp)
                h = out[:, t]
                np.multiply(o_g, tmp, out=h)
            x = out
        return x


_LSTM_KEYS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class EncodecLSTM(nn.Module):
    """Multi-layer LSTM over time with a skip connection (upstream ``EncodecLSTM``)."""

    def __init__(self, config: EncodecConfig, dim: int):
        super().__init__()
        self.lstm = _TorchLSTM(dim, config.num_lstm_layers)

    def __call__(self, x: mx.array) -> mx.array:
        return self.lstm(x) + x


class _ELU(nn.Module):
    def __call__(self, x: mx.array) -> mx.array:
        return nn.elu(x)


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
        return _run_layers(self.layers, x)


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
        return _run_layers(self.layers, x)


def _to_np(a: mx.array) -> np.ndarray:
    return np.array(a.astype(mx.float32), dtype=np.float32)


class _Cache:
    """numpy copies of a module's weights in the layout the CPU path wants. A plain object, so
    ``nn.Module`` keeps it out of the parameters; ``keys`` are the MLX arrays it was made from,
    so loading new weights invalidates it."""

    def __init__(self, keys: tuple[Any, ...], value: Any):
        self.keys = keys
        self.value = value


def _cached(module: nn.Module, keys: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    hit = getattr(module, "_np_cache", None)
    if (
        isinstance(hit, _Cache)
        and len(hit.keys) == len(keys)
        and all(a is b for a, b in zip(hit.keys, keys, strict=True))
    ):
        return hit.value
    value = make()
    module._np_cache = _Cache(keys, value)
    return value


def _workers() -> ThreadPoolExecutor:
    if not _pool:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        _pool.append(ThreadPoolExecutor(max(1, n or 1), thread_name_prefix="encodec"))
    return _pool[0]


# (set, get) thread-count functions under the names numpy's OpenBLAS builds export them.
_BLAS_THREAD_FUNCS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


@functools.cache
def _blas_thread_funcs() -> list[tuple[Any, Any, Any]]:
    """Per numpy OpenBLAS library: (set count, get count, shut down the thread pool or None)."""
    funcs = []
    for lib in _numpy_blas_libs():
        for set_name, get_name in _BLAS_THREAD_FUNCS:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                shutdown = getattr(lib, "blas_thread_shutdown_", None)
                if shutdown is not None:
                    shutdown.argtypes, shutdown.restype = [], ctypes.c_int
                funcs.append((setter, getter, shutdown))
                break
    return funcs


_blas_outer_counts: list[list[int]] = []


@contextmanager
def _blas_threads(n: int | None) -> Iterator[None]:
    """numpy's OpenBLAS at ``n`` threads inside the block (None: the count it had before the
    outermost ``_blas_threads``), and its thread pool shut down on the way out.

    One thread while the block workers run (each worker already owns a core; letting every
    call spawn BLAS threads oversubscribes them), several for the main thread's LSTM gemv.
    Set globally: ``openblas_set_num_threads_local``, called in each worker before, changed the
    count for the whole process in numpy's pthreads OpenBLAS, and the LSTM's recurrent gemv
    then ran single-threaded (0.61 vs 0.33 ms a step, 0.76 vs 0.42 s for the two layers).

    The shutdown: after its last call an idle OpenBLAS thread spins for ~2^28 cycles before it
    sleeps, ~128 ms of CPU on this 2-core machine, stolen from the block workers of the next
    layer (the first upsampling conv after the LSTM: 67-77 ms, 46 ms after a pause), or from
    whatever the caller runs next. A shut-down pool is rebuilt by the next threaded call (or by
    ``openblas_set_num_threads``, so counts are only set when they change). Like the counts,
    this assumes no other thread is inside a threaded numpy BLAS call meanwhile."""
    funcs = _blas_thread_funcs()
    before = [getter() for _, getter, _ in funcs]
    outermost = not _blas_outer_counts
    if outermost:
        _blas_outer_counts.append(before)
    target = _blas_outer_counts[0] if n is None else [n] * len(funcs)

    def apply(counts: list[int], release: bool) -> None:
        for (setter, getter, shutdown), k in zip(funcs, counts, strict=True):
            if getter() != k:
                setter(k)
            if release and shutdown is not None:
                shutdown()

    try:
        apply(target, release=n == 1)
        yield
    finally:
        apply(before, release=True)
        if outermost:
            _blas_outer_counts.clear()


@functools.cache
def _numpy_blas_libs() -> list[ctypes.CDLL]:
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    paths = {
        ln[ln.index("/") :] for ln in maps.splitlines() if "scipy_openblas" in ln and "/" in ln
    }
    libs = []
    for path in sorted(paths):
        try:
            libs.append(ctypes.CDLL(path))
        except OSError:
            continue
    return libs


def _elu_np(x: np.ndarray) -> np.ndarray:
    """ELU(alpha=1) of a cache-sized block into a new array (``x`` may be a view of a layer's
    input that is still needed). torch computes ``max(x, 0) + expm1(min(x, 0))``; this is
    ``max(x, expm1(min(x, 0)))``, equal since ``expm1(x) ≥ x``: three passes in L2, not four.
    numpy's SIMD ``expm1`` is ~10x faster than MLX's CPU ``exp`` (~20 ns/element)."""
    out = np.minimum(x, 0.0)
    np.expm1(out, out=out)
    return np.maximum(x, out, out=out)


class _Rows:
    """Rows ``[start, stop)`` of a padded ``(T, C)`` signal without materialising the padding:
    interior blocks are views, only blocks at the edges are assembled (zeros outside the pad)."""

    def __init__(self, x: np.ndarray, left: int, right: int, mode: str, own_edges: bool = False):
        """``own_edges``: reflected edges are copies, not views of ``x`` (which the caller
        overwrites while blocks still read them)."""
        length = x.shape[0]
        if mode == "reflect" and length <= max(left, right):
            # upstream's short-input fix: zero-extend, reflect, cut; tiny, so materialise it
            x = np.asarray(_pad1d(mx.array(x[None]), left, right, mode)[0])
            left = right = 0
        self.x, self.left, self.length = x, left, x.shape[0]
        if left == 0 and right == 0:
            self.head = self.tail = x[:0]
        elif mode in ("constant", "zero"):
            self.head = np.zeros((left, x.shape[1]), x.dtype)
            self.tail = np.zeros((right, x.shape[1]), x.dtype)
        elif mode == "replicate":
            self.head = np.repeat(x[:1], left, axis=0)
            self.tail = np.repeat(x[-1:], right, axis=0)
        elif mode == "reflect":
            self.head = x[1 : left + 1][::-1]
            self.tail = x[self.length - 1 - right : self.length - 1][::-1]
        else:
            raise InvalidInputError(f"EnCodec pad_mode {mode!r} is not supported")
        if own_edges:
            self.head, self.tail = self.head.copy(), self.tail.copy()

    def __call__(self, start: int, stop: int) -> np.ndarray:
        lo, hi = start - self.left, stop - self.left
        if lo >= 0 and hi <= self.length:
            return self.x[lo:hi]
        out = np.zeros((stop - start, self.x.shape[1]), np.float32)
        segments = ((-self.left, self.head), (0, self.x), (self.length, self.tail))
        for seg_start, seg in segments:
            a, b = max(lo, seg_start), min(hi, seg_start + seg.shape[0])
            if a < b:
                out[a - lo : b - lo] = seg[a - seg_start : b - seg_start]
        return out


_SGEMM: list[Any] = []


def _sgemm_fn() -> Any:
    """numpy's bundled OpenBLAS ``cblas_sgemm`` (ILP64, ``scipy_``-prefixed), or None. numpy's
    matmul cannot accumulate (no beta), and a temporary plus ``+=`` per tap measured 10-15%
    slower on these block shapes (e.g. 87 → 76 ms for the 128 → 64 transposed conv)."""
    if not _SGEMM:
        fn = None
        for lib in _numpy_blas_libs():
            fn = getattr(lib, "scipy_cblas_sgemm64_", None)
            if fn is not None:
                i64, ptr, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
                fn.argtypes = (
                    [ctypes.c_int] * 3 + [i64] * 3 + [f32, ptr, i64, ptr, i64, f32, ptr, i64]
                )
                fn.restype = None
                break
        _SGEMM.append(fn)
    return _SGEMM[0]


def _sgemm_ok(a: np.ndarray, c: np.ndarray) -> bool:
    return (
        _sgemm_fn() is not None
        and a.dtype == c.dtype == np.float32
        and a.strides[1] == c.strides[1] == 4
        and a.strides[0] >= 4 * a.shape[1]
        and c.strides[0] >= 4 * c.shape[1]
    )


def _sgemm_acc(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
    """``c += a @ b`` (row-major, unit column strides; ``b`` contiguous)."""
    m, k = a.shape
    n = b.shape[1]
    row_major, no_trans = 101, 111
    _sgemm_fn()(
        row_major, no_trans, no_trans, m, n, k, 1.0,
        a.ctypes.data, a.strides[0] // 4, b.ctypes.data, n, 1.0, c.ctypes.data, c.strides[0] // 4,
    )  # fmt: skip


class _ConvNp:
    """A 1-D conv on cache-sized blocks: ``out[t] = Σ_j rows[(t + j·step)·fold …] · W_j``.

    ``taps`` is ``(m, fold·Cin, Cout)``. A strided conv folds ``stride`` samples into one row
    of ``stride·Cin`` channels (``fold``) so it becomes stride 1 with ``m = ceil(K/stride)``
    taps; a dilated conv keeps ``fold=1`` and steps ``dilation`` rows; a transposed conv is
    a stride-1 conv whose output channels are whole frames. The product is formed one of
    three ways, by shape (single-core CPU ms for the 64-channel resnet conv, 320k samples):

    - ``acc``: one sgemm per tap on row views, accumulated (43 ms; im2col + one sgemm with
      K = 3·Cin took 60 ms: the copy costs more than the wider K gains);
    - ``shift``: when ``m·Cout ≤ fold·Cin`` (e.g. the last conv to mono), one sgemm to every
      tap's output at once, then shifted adds;
    - ``im2col``: tiny ``fold·Cin`` (the first conv from mono audio), where per-tap products
      would be K=1 matvecs.
    """

    def __init__(self, taps: np.ndarray, bias: np.ndarray, fold: int, step: int):
        self.m, k_tap, self.cout = taps.shape
        self.fold, self.step, self.k_tap = fold, step, k_tap
        self.bias = bias
        if self.m == 1 or (k_tap >= 32 and self.m * self.cout > k_tap):
            self.mode, self.w = "acc", [np.ascontiguousarray(t) for t in taps]
        elif k_tap >= 32:
            self.mode = "shift"
            self.w = [np.ascontiguousarray(taps.transpose(1, 0, 2).reshape(k_tap, -1))]
        else:
            self.mode, self.w = "im2col", [np.ascontiguousarray(taps.reshape(-1, self.cout))]

    @classmethod
    def from_conv(cls, layer: EncodecConv1d) -> _ConvNp:
        """``EncodecConv1d`` weight ``(Cout, K, Cin)`` (MLX layout) → folded taps."""
        w = _to_np(layer.conv.weight)
        cout, k, cin = w.shape
        s = layer.stride
        m = -(-k // s)
        if m * s != k:  # zero taps up to a whole number of folded rows
            w = np.pad(w, [(0, 0), (0, m * s - k), (0, 0)])
        taps = w.reshape(cout, m, s * cin).transpose(1, 2, 0)
        return cls(taps, _to_np(layer.conv.bias), s, layer.dilation)

    def rows_needed(self, n: int) -> int:
        """Padded input rows (unfolded) for ``n`` outputs."""
        return (n + (self.m - 1) * self.step) * self.fold

    def __call__(
        self,
        rows: np.ndarray,
        n: int,
        pre_elu: bool,
        out: np.ndarray,
        add: np.ndarray | None = None,
    ) -> None:
        """``out`` (n, Cout) ← conv of ``rows`` (``rows_needed(n)`` padded input rows), plus
        ``add`` (a residual) when given."""
        if pre_elu:
            rows = _elu_np(rows)
        if self.fold > 1:
            rows = rows.reshape(-1, self.k_tap)
        m, step = self.m, self.step
        if self.mode == "acc" and _sgemm_ok(rows, out):
            # bias (+ residual) first, then every tap's product accumulated by sgemm itself
            if add is None:
                out[...] = self.bias
            else:
                np.add(add, self.bias, out=out)
            for j in range(m):
                _sgemm_acc(rows[j * step : j * step + n], self.w[j], out)
            return
        if add is not None and np.shares_memory(add, out):
            add = add.copy()
        if self.mode == "acc":
            np.matmul(rows[:n], self.w[0], out=out)
            if m > 1:
                tmp = np.empty_like(out)
                for j in range(1, m):
                    np.matmul(rows[j * step : j * step + n], self.w[j], out=tmp)
                    out += tmp
        elif self.mode == "shift":
            z = rows @ self.w[0]
            c = self.cout
            np.add(z[:n, :c], z[step : step + n, c : 2 * c], out=out)
            for j in range(2, m):
                out += z[j * step : j * step + n, j * c : (j + 1) * c]
        else:
            cols = np.concatenate([rows[j * step : j * step + n] for j in range(m)], axis=1)
            np.matmul(cols, self.w[0], out=out)
        out += self.bias
        if add is not None:
            out += add


def _conv_np(layer: EncodecConv1d) -> _ConvNp:
    w, b = layer.conv.weight, layer.conv.bias
    conv: _ConvNp = _cached(layer, (w, b), lambda: _ConvNp.from_conv(layer))
    return conv


def _conv_pads(layer: EncodecConv1d, length: int) -> tuple[int, int]:
    extra = layer._extra_padding(length)
    if layer.causal:
        return layer.padding_total, extra
    right = layer.padding_total // 2
    return layer.padding_total - right, right + extra


def _chunk_rows(bytes_per_row: int) -> int:
    # ~4 MB of activations per block. Each block makes ~15 numpy/ctypes calls, ~40 us of Python
    # that holds the GIL; two workers contend for it (~80 us a block of wall time measured),
    # so the 1 MB blocks that kept a resnet block in the 2 MB L2 of this Xeon lost more than
    # the cache saved (430 blocks in the last resnet block: 100-117 ms there, 86-90 ms with
    # 4 MB blocks; its L3 is fast).
    return max(64, (4 << 20) // max(1, 4 * bytes_per_row))


def _block_rows(bytes_per_row: int, weight_bytes: int, total: int) -> int:
    """Rows per block: ``_chunk_rows``, grown (up to one block per worker) while the weight,
    which every block re-reads, would outweigh the block's activations. The first EnCodec-32k
    upsampling layer has a 32 MB weight and 25 KB rows: in 64-row blocks its weight traffic was
    4x its activations' and the layer ran at ~90 GFLOP/s."""
    rows = _chunk_rows(bytes_per_row)
    need = weight_bytes // max(1, 4 * bytes_per_row)
    if need > rows:
        rows = max(rows, min(need, -(-total // _workers()._max_workers)))
    return rows


def _run_chunks(
    sources: list[_Rows], total: int, step: int, fn: Callable[[_Rows, int, int, int], None]
) -> None:
    """Call ``fn(source, batch_index, start, n)`` for cache-sized blocks of ``total`` output
    rows per batch item, on every core, each worker with a single-threaded BLAS (numpy ufuncs
    and sgemm release the GIL). Workers take the next block as they finish one, rather than
    fixed halves: on this shared 2-core machine a core lost to another process for a while
    otherwise left the layer waiting on its half."""
    blocks = [
        (src, bi, a, min(step, total - a))
        for bi, src in enumerate(sources)
        for a in range(0, total, step)
    ]
    pool = _workers()
    n_workers = min(pool._max_workers, len(blocks))
    if n_workers <= 1:
        for block in blocks:
            fn(*block)
        return
    queue = iter(blocks)
    lock = threading.Lock()

    def run(_: int) -> None:
        while True:
            with lock:
                block = next(queue, None)
            if block is None:
                return
            fn(*block)

    with _blas_threads(1):
        list(pool.map(run, range(n_workers)))


def _conv_layer_np(layer: EncodecConv1d, x: np.ndarray, pre_elu: bool) -> np.ndarray:
    conv = _conv_np(layer)
    bsz, length, _ = x.shape
    left, right = _conv_pads(layer, length)
    n_out = (length + left + right - layer.kernel_eff) // layer.stride + 1
    out = np.empty((bsz, n_out, conv.cout), np.float32)
    step = _chunk_rows(conv.m * conv.k_tap + conv.cout)

    def task(src: _Rows, bi: int, a: int, n: int) -> None:
        start = a * conv.fold
        conv(src(start, start + conv.rows_needed(n)), n, pre_elu, out[bi, a : a + n])

    _run_chunks([_Rows(xb, left, right, layer.pad_mode) for xb in x], n_out, step, task)
    return out


def _conv_transpose_layer_np(
    layer: EncodecConvTranspose1d, x: np.ndarray, pre_elu: bool
) -> np.ndarray:
    """Output frame t (``stride`` samples) is ``Σ_j x[t-j] · W_j``: a stride-1 conv over the
    zero-padded input whose output channels are whole frames, written once per frame."""
    w, b = layer.conv.weight, layer.conv.bias
    cout, k, cin = w.shape
    s = layer.stride

    def make() -> _ConvNp:
        m = -(-k // s)
        wn = np.pad(_to_np(w), [(0, 0), (0, m * s - k), (0, 0)])
        wj = wn.reshape(cout, m, s, cin).transpose(1, 3, 2, 0).reshape(m, cin, s * cout)
        # rows t … t+m-1 of the padded input hold x[t-m+1] … x[t]: taps go last-first
        return _ConvNp(wj[::-1], np.tile(_to_np(b), s), 1, 1)

    conv: _ConvNp = _cached(layer, (w, b), make)
    m = conv.m
    bsz, length, _ = x.shape
    n_frames = length + m - 1
    full = np.empty((bsz, n_frames * s, cout), np.float32)
    frames = full.reshape(bsz, n_frames, s * cout)
    step = _block_rows(m * cin + s * cout, 4 * m * cin * s * cout, n_frames)

    def task(src: _Rows, bi: int, a: int, n: int) -> None:
        conv(src(a, a + n + m - 1), n, pre_elu, frames[bi, a : a + n])

    _run_chunks([_Rows(xb, m - 1, m - 1, "constant") for xb in x], n_frames, step, task)
    pt = layer.padding_total
    right = math.ceil(pt * layer.trim_right_ratio) if layer.causal else pt // 2
    return full[:, pt - right : (length - 1) * s + k - right]


def _resnet_block_np(block: EncodecResnetBlock, x: np.ndarray, in_place: bool) -> np.ndarray:
    """ELU → conv(k, dilation) → ELU → conv(1) → + shortcut, fused per ~4 MB time block (with
    the first conv's halo), so the block's intermediates never leave the cache.

    ``in_place`` (an identity shortcut, and ``x`` ours to overwrite): the sum goes back into
    ``x``, whose block is in cache already, instead of a new array whose first write faults its
    pages in and goes to DRAM (the last EnCodec-32k decoder block: 91 → 73 ms). A block reads
    its neighbours' rows next to each boundary (the conv's halo), which they may have
    overwritten by then: those rows are copied before any block runs, and patched in after the
    ELU (which copies the block anyway)."""
    conv1, conv2 = cast(EncodecConv1d, block.block[1]), cast(EncodecConv1d, block.block[3])
    c1, c2 = _conv_np(conv1), _conv_np(conv2)
    shortcut = _conv_np(block.shortcut) if "shortcut" in block else None
    bsz, length, dim = x.shape
    left, right = _conv_pads(conv1, length)
    hidden = c1.cout
    in_place = in_place and shortcut is None
    out = x if in_place else np.empty((bsz, length, c2.cout), np.float32)
    step = _chunk_rows(c1.m * c1.k_tap + hidden + 2 * dim)
    sources = [_Rows(xb, left, right, conv1.pad_mode, own_edges=in_place) for xb in x]
    halo = left + right
    # padded rows [b, b + halo) = x rows [b - left, b + right), ELU'd, at each inner boundary b
    frozen = (
        {(bi, b): _elu_np(src(b, b + halo)) for bi, src in enumerate(sources)
         for b in range(step, length, step)}
        if in_place and halo
        else {}
    )  # fmt: skip

    def task(src: _Rows, bi: int, a: int, n: int) -> None:
        rows = _elu_np(src(a, a + c1.rows_needed(n)))
        for at, b in ((0, a), (n, a + n)):
            if (bi, b) in frozen:
                rows[at : at + halo] = frozen[bi, b]
        h = np.empty((n, hidden), np.float32)
        c1(rows, n, False, h)
        dst, res = out[bi, a : a + n], x[bi, a : a + n]
        if shortcut is None:
            c2(h, n, True, dst, add=res)
        else:
            shortcut(res, n, False, dst)
            c2(h, n, True, dst, add=dst)

    _run_chunks(sources, length, step, task)
    return out


def _numpy_seanet_ok(layers: list[nn.Module]) -> bool:
    """The fused CPU path covers weight-norm SEANet stacks (GroupNorm needs whole-signal
    statistics, so ``time_group_norm`` models stay on the MLX path)."""
    for layer in layers:
        if isinstance(layer, EncodecResnetBlock):
            convs = [m for m in layer.block if isinstance(m, EncodecConv1d)]
            if len(layer.block) != 4 or len(convs) != 2 or convs[1].conv.weight.shape[1] != 1:
                return False
            inner = [*convs, *([layer.shortcut] if "shortcut" in layer else [])]
            if any("norm" in c for c in inner):
                return False
        elif isinstance(layer, (EncodecConv1d, EncodecConvTranspose1d)):
            if "norm" in layer:
                return False
        elif not isinstance(layer, (EncodecLSTM, _ELU)):
            return False
    return True


def _seanet_numpy(layers: list[nn.Module], x: np.ndarray) -> np.ndarray:
    """Run an encoder/decoder layer list on ``(B, T, C)`` float32 numpy. Every ELU precedes a
    conv in SEANet, so it is applied inside that conv's blocks instead of as its own pass."""
    pre_elu = False
    owned = False  # x is the caller's array until the first layer has run
    for layer in layers:
        if isinstance(layer, _ELU):
            if pre_elu:
                x = _elu_np(x)
            pre_elu = True
            continue
        if isinstance(layer, EncodecLSTM):
            if pre_elu:
                x = _elu_np(x)
            x = layer.lstm.forward_numpy(x) + x
        elif isinstance(layer, EncodecResnetBlock):
            if pre_elu:
                x = _elu_np(x)
            x = _resnet_block_np(layer, x, in_place=owned or pre_elu)
        elif isinstance(layer, EncodecConvTranspose1d):
            x = _conv_transpose_layer_np(layer, x, pre_elu)
        else:
            x = _conv_layer_np(cast(EncodecConv1d, layer), x, pre_elu)
        pre_elu = False
        owned = True
    return _elu_np(x) if pre_elu else x


def _run_layers(layers: list[nn.Module], x: mx.array) -> mx.array:
    if _numpy_ok(x) and _numpy_seanet_ok(layers):
        mx.eval(x)
        with _blas_threads(1):
            y = _seanet_numpy(layers, np.asarray(x))
        return mx.array(np.ascontiguousarray(y))
    for layer in layers:
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
        raw = read_json(cfg_path)
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
