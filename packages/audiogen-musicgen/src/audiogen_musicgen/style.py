"""MusicGen-style's style conditioner, after MERT: features → style tokens for the LM prefix.

Ported from audiocraft main (commit 896ec7c47f5e5d1e5aa1e4b260c4405328bf009d),
``audiocraft/modules/conditioners.py`` ``StyleConditioner`` / ``FeatureExtractor`` (their
``_get_wav_embedding`` after the MERT call, and ``forward``), with the building blocks
``modules/transformer.py`` ``StreamingTransformer`` and ``quantization/{vq,core_vq}.py``
``ResidualVectorQuantizer``. At inference the path is::

    MERT last hidden state (B, T, 768), 75 Hz
    → embed: Linear(768 → 512)
    → transformer: + cos|sin positions, 8 pre-LN layers (8 heads, FFN 2048, exact GELU, no
      biases, **non-causal**)
    → batch_norm: BatchNorm1d(512, affine=False) with its running statistics
    → rvq: the first ``eval_q`` of 6 Euclidean codebooks (1024 × 512); output = the sum of the
      chosen code vectors
    → every ``ds_factor``-th frame starting at frame 0 (15 → 5 Hz)
    → output_proj: Linear(512 → LM width), times the length mask.

Attribute names mirror the checkpoint keys under ``condition_provider.conditioners.self_wav.``
in audiocraft's ``state_dict.bin``; ``sanitize`` strips that prefix, renames the codebooks
(``rvq.vq.layers.N._codebook.embed`` → ``rvq.layers.N.embed``: MLX treats ``_`` names as
private) and drops training buffers. MERT itself is not in that checkpoint (audiocraft loads
m-a-p/MERT-v1-95M from the hub), so this module takes its features as input.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from audiogen_core.errors import InvalidInputError, MissingWeightsError
from audiogen_core.weights import load_into

import mlx.core as mx
import mlx.nn as nn
import numpy as np

PREFIX = "condition_provider.conditioners.self_wav."

# audiocraft's StyleConditioner ``transformer_scale`` presets: (d_model, num_heads, num_layers).
_SCALES: dict[str, tuple[int, int, int]] = {
    "xsmall": (256, 8, 4),
    "default": (512, 8, 8),
    "large": (1024, 16, 24),
}


@dataclass(frozen=True)
class StyleConfig:
    """Shape and inference settings of the style conditioner (defaults: facebook/musicgen-style)."""

    feature_dim: int = 768  # MERT-v1-95M hidden size; audiocraft hard-codes Linear(768, dim)
    dim: int = 512
    num_heads: int = 8
    num_layers: int = 8
    ffn_dim: int = 2048  # audiocraft: 4 * dim
    output_dim: int = 1536  # the LM width
    n_q: int = 6  # RVQ codebooks in the checkpoint (audiocraft ``n_q_out``)
    bins: int = 1024
    eval_q: int = 3  # codebooks used at inference (audiocraft default; its docs suggest 1)
    ds_factor: int = 15
    batch_norm: bool = True
    excerpt_length: float = 3.0  # seconds of reference audio fed to MERT
    sample_rate: int = 32000  # rate at which audiocraft cuts the excerpt (the model's rate)
    feature_rate: int = 75  # MERT frames per second (audiocraft hard-codes 75)
    max_period: float = 10000.0
    norm_eps: float = 1e-5

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StyleConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_audiocraft(cls, style: Mapping[str, Any], output_dim: int) -> StyleConfig:
        """From the ``conditioners.self_wav.style`` section of a checkpoint's ``xp.cfg``."""
        scale = str(style.get("transformer_scale", "default"))
        if scale not in _SCALES:
            raise InvalidInputError(
                f"style conditioner: transformer_scale {scale!r} is not supported "
                f"(known: {sorted(_SCALES)})"
            )
        if style.get("model_name", "mert") != "mert":
            raise InvalidInputError(
                f"style conditioner: feature extractor {style.get('model_name')!r} is not "
                "supported (only 'mert', as in facebook/musicgen-style)"
            )
        dim, heads, layers = _SCALES[scale]
        return cls(
            dim=dim,
            num_heads=heads,
            num_layers=layers,
            ffn_dim=4 * dim,
            output_dim=int(output_dim),
            n_q=int(style.get("n_q_out", 6)),
            bins=int(style.get("bins", 1024)),
            eval_q=int(style.get("eval_q", 3)),
            ds_factor=int(style.get("ds_factor", 15)),
            batch_norm=bool(style.get("batch_norm", True)),
            excerpt_length=float(style.get("length", 3.0)),
            sample_rate=int(style.get("sample_rate", 32000)),
        )

    @property
    def excerpt_samples(self) -> int:
        """Excerpt length in samples at ``sample_rate`` (audiocraft: ``int(length * sr)``)."""
        return int(self.excerpt_length * self.sample_rate)


@dataclass
class StyleOutput:
    """``tokens`` (B, T', output_dim) for the LM prefix, already multiplied by ``mask`` (B, T');
    ``codes`` (B, eval_q, T) the RVQ indices of **every** MERT frame (before downsampling; the
    tokens use frames 0, ds, 2·ds, …)."""

    tokens: mx.array
    mask: mx.array
    codes: mx.array


def sinusoids(length: int, dim: int, max_period: float = 10000.0) -> mx.array:
    """audiocraft ``create_sin_embedding`` for positions ``0..length-1``, float32:
    ``phase = pos / max_period ** (i / (half - 1))``, output ``[cos(phase) | sin(phase)]``."""
    half = dim // 2
    adim = np.arange(half, dtype=np.float32) / np.float32(half - 1)
    periods = np.power(np.float32(max_period), adim, dtype=np.float32)
    phase = np.arange(length, dtype=np.float32)[:, None] / periods[None, :]
    return mx.array(np.concatenate([np.cos(phase), np.sin(phase)], axis=-1))


class SelfAttention(nn.Module):
    """audiocraft ``StreamingMultiheadAttention`` (custom / memory-efficient path, no bias,
    non-causal): one packed ``in_proj_weight`` whose rows are ``[q; k; v]``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = mx.zeros((3 * dim, dim))
        self.out_proj = nn.Linear(dim, dim, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, d = x.shape
        h = self.num_heads
        qkv = (x @ self.in_proj_weight.T).reshape(b, t, 3, h, d // h).transpose(2, 0, 3, 1, 4)
        out = mx.fast.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], scale=1.0 / math.sqrt(d // h)
        )
        return self.out_proj(out.transpose(0, 2, 1, 3).reshape(b, t, d))


class TransformerLayer(nn.Module):
    """audiocraft ``StreamingTransformerLayer`` with ``norm_first=True``, no layer scale, no
    cross-attention: ``x + sa(norm1(x))`` then ``x + linear2(gelu(linear1(norm2(x))))``."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, eps: float) -> None:
        super().__init__()
        self.self_attn = SelfAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.linear1 = nn.Linear(dim, ffn_dim, bias=False)
        self.linear2 = nn.Linear(ffn_dim, dim, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        x = x + self.self_attn(self.norm1(x))
        return x + self.linear2(nn.gelu(self.linear1(self.norm2(x))))  # exact (erf) GELU


class Transformer(nn.Module):
    """audiocraft ``StreamingTransformer`` as the style conditioner builds it: sinusoidal
    positions (scale 1) added to the input, then the layers; no final norm."""

    def __init__(self, config: StyleConfig) -> None:
        super().__init__()
        self.max_period = config.max_period
        self.layers = [
            TransformerLayer(config.dim, config.num_heads, config.ffn_dim, config.norm_eps)
            for _ in range(config.num_layers)
        ]

    def __call__(self, x: mx.array) -> mx.array:
        x = x + sinusoids(x.shape[1], x.shape[2], self.max_period).astype(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return x


class BatchNorm(nn.Module):
    """``nn.BatchNorm1d(dim, affine=False)`` in eval mode: ``(x - mean) / sqrt(var + eps)`` over
    the channel (last) axis, with the running statistics from the checkpoint."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.running_mean = mx.zeros((dim,))
        self.running_var = mx.ones((dim,))

    def __call__(self, x: mx.array) -> mx.array:
        return (x - self.running_mean) * mx.rsqrt(self.running_var + self.eps)


class Codebook(nn.Module):
    """audiocraft ``EuclideanCodebook`` at inference (its k-means init and EMA updates are
    training-only)."""

    def __init__(self, bins: int, dim: int) -> None:
        super().__init__()
        self.embed = mx.zeros((bins, dim))

    def encode(self, x: mx.array) -> mx.array:
        # Same expression as upstream, -(|x|² - 2 x·Eᵀ + |E|²), so near-ties break the same way.
        e = self.embed
        dist = -((x * x).sum(-1, keepdims=True) - 2 * (x @ e.T) + (e * e).sum(-1)[None])
        return mx.argmax(dist, axis=-1)


class ResidualVQ(nn.Module):
    """audiocraft ``ResidualVectorQuantizer`` (eval): each of the first ``n`` codebooks quantizes
    the residual left by the previous ones; the output is the sum of the chosen vectors."""

    def __init__(self, n_q: int, bins: int, dim: int) -> None:
        super().__init__()
        self.layers = [Codebook(bins, dim) for _ in range(n_q)]

    def __call__(self, x: mx.array, n: int) -> tuple[mx.array, mx.array]:
        b, t, d = x.shape
        residual = x.reshape(b * t, d)
        quantized = mx.zeros_like(residual)
        codes = []
        for layer in self.layers[:n]:
            idx = layer.encode(residual)
            q = layer.embed[idx]
            residual = residual - q
            quantized = quantized + q
            codes.append(idx.reshape(b, t))
        return quantized.reshape(b, t, d), mx.stack(codes, axis=1)


class StyleConditioner(nn.Module):
    """MERT features → style tokens (``StyleOutput``); see the module docstring."""

    def __init__(self, config: StyleConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Linear(config.feature_dim, config.dim)
        self.transformer = Transformer(config)
        if config.batch_norm:
            self.batch_norm = BatchNorm(config.dim, config.norm_eps)
        self.rvq = ResidualVQ(config.n_q, config.bins, config.dim)
        self.output_proj = nn.Linear(config.dim, config.output_dim)

    def num_tokens(self, frames: int) -> int:
        """Tokens produced from ``frames`` MERT frames: ``ceil(frames / ds_factor)``."""
        return -(-frames // self.config.ds_factor)

    def token_lengths(self, num_samples: Sequence[int] | np.ndarray) -> np.ndarray:
        """Valid-token counts (float, like upstream) for references of ``num_samples`` samples
        at ``config.sample_rate`` — audiocraft divides the *whole reference's* length by
        ``sample_rate / 75 * ds_factor``, so any reference at least one excerpt long keeps
        every token; 0 (no reference) masks them all."""
        per_token = self.config.sample_rate / self.config.feature_rate * self.config.ds_factor
        return np.asarray(num_samples, dtype=np.float64) / per_token

    def null_tokens(self, batch: int, frames: int = 1) -> StyleOutput:
        """The style prefix of a branch without a reference: zero vectors with a zero mask.
        audiocraft gives ``frames`` = 1 when no sample in the CFG batch has a reference, and
        the reference branches' token count otherwise (the null wav is padded to their length
        and then masked to zero)."""
        c = self.config
        return StyleOutput(
            tokens=mx.zeros((batch, frames, c.output_dim)),
            mask=mx.zeros((batch, frames), dtype=mx.int32),
            codes=mx.zeros((batch, 0, 0), dtype=mx.int32),
        )

    def __call__(
        self,
        features: mx.array,
        *,
        eval_q: int | None = None,
        lengths: Sequence[float] | np.ndarray | None = None,
    ) -> StyleOutput:
        """``features``: MERT last hidden states (B, T, feature_dim) of the 24 kHz excerpt.
        ``eval_q``: RVQ codebooks to use (1..n_q; default ``config.eval_q``). ``lengths``:
        valid-token counts per sample (``token_lengths``); default all valid."""
        c = self.config
        if features.ndim != 3 or features.shape[-1] != c.feature_dim:
            raise InvalidInputError(
                f"style conditioner: expected MERT features of shape (batch, frames, "
                f"{c.feature_dim}), got {tuple(features.shape)}"
            )
        if features.shape[1] < 1:
            raise InvalidInputError("style conditioner: the MERT features have no frames")
        n = c.eval_q if eval_q is None else eval_q
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= c.n_q:
            raise InvalidInputError(
                f"style conditioner: eval_q must be an integer in 1..{c.n_q}, got {eval_q!r}"
            )
        x = self.transformer(self.embed(features.astype(mx.float32)))
        if c.batch_norm:
            x = self.batch_norm(x)
        quantized, codes = self.rvq(x, int(n))
        tokens = self.output_proj(quantized[:, :: c.ds_factor])
        b, t = tokens.shape[:2]
        if lengths is None:
            mask = mx.ones((b, t), dtype=mx.int32)
        else:
            valid = np.asarray(lengths, dtype=np.float64).reshape(-1)
            if valid.shape[0] != b:
                raise InvalidInputError(
                    f"style conditioner: {valid.shape[0]} lengths for a batch of {b}"
                )
            mask = mx.array((np.arange(t)[None, :] < valid[:, None]).astype(np.int32))
        return StyleOutput(tokens=tokens * mask[..., None], mask=mask, codes=codes)


def excerpt_start(
    num_samples: int,
    config: StyleConfig,
    *,
    start: int | None = None,
    seed: int | None = None,
) -> int:
    """Where the style excerpt begins, in samples at ``config.sample_rate``.

    audiocraft draws it with ``random.randint(0, T - excerpt)`` even at inference; we take
    ``start`` when given, else a draw from ``seed`` (reproducible). A reference shorter than the
    excerpt is an error: upstream's ``randint`` fails on it too.
    """
    need = config.excerpt_samples
    if num_samples < need:
        raise InvalidInputError(
            f"style reference is {num_samples / config.sample_rate:.2f} s; the style excerpt "
            f"needs at least {config.excerpt_length:g} s"
        )
    room = num_samples - need
    if start is not None:
        if not 0 <= start <= room:
            raise InvalidInputError(
                f"style excerpt start {start} is outside 0..{room} for a reference of "
                f"{num_samples} samples"
            )
        return int(start)
    return int(np.random.default_rng(seed).integers(0, room + 1))


_CODEBOOK = re.compile(r"^rvq\.vq\.layers\.(\d+)\._codebook\.embed$")
_DROP = (".inited", ".cluster_size", ".embed_avg", ".num_batches_tracked")


def sanitize(weights: Mapping[str, Any], prefix: str = PREFIX) -> dict[str, mx.array]:
    """audiocraft ``state_dict.bin`` tensors → this module's parameters (float32).

    Keeps keys under ``prefix``, drops training buffers (codebook ``inited`` / ``cluster_size`` /
    ``embed_avg``, BatchNorm ``num_batches_tracked``) and renames ``rvq.vq.layers.N._codebook.
    embed`` → ``rvq.layers.N.embed``. The released checkpoint is all float16; the style path
    runs in float32 like audiocraft on the CPU.
    """
    out: dict[str, mx.array] = {}
    for key, value in weights.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        if name.endswith(_DROP):
            continue
        m = _CODEBOOK.match(name)
        if m:
            name = f"rvq.layers.{m.group(1)}.embed"
        arr = value if isinstance(value, mx.array) else mx.array(np.asarray(value))
        out[name] = arr.astype(mx.float32) if mx.issubdtype(arr.dtype, mx.floating) else arr
    return out


def load_style(
    config: StyleConfig,
    weights: Mapping[str, Any],
    *,
    source: str = "weights",
    prefix: str = PREFIX,
) -> StyleConditioner:
    """Build a ``StyleConditioner`` and load the upstream ``weights`` into it (strict: missing,
    unexpected or mis-shaped keys raise ``MissingWeightsError`` naming ``source``)."""
    params = sanitize(weights, prefix)
    if not params:
        raise MissingWeightsError(f"{source}: no style conditioner weights (keys {prefix}*)")
    model = StyleConditioner(config)
    load_into(model, params, source=source)
    return model


__all__ = [
    "PREFIX",
    "StyleConditioner",
    "StyleConfig",
    "StyleOutput",
    "excerpt_start",
    "load_style",
    "sanitize",
    "sinusoids",
]
