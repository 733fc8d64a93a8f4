"""MERT-v1-95M, the audio encoder MusicGen-style embeds its reference excerpt with.

MERT's remote code (``modeling_MERT.py`` in m-a-p/MERT-v1-95M) subclasses transformers'
``HubertModel``; with ``feature_extractor_cqt`` and ``deepnorm`` off (they are, for v1-95M) it *is*
``HubertModel``, so that is the parity reference (tests/musicgen/test_mert.py). Layout:

- feature encoder: 7 bias-free convs (512 ch; kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2 →
  ×320, so 75 frames/s at 24 kHz), a per-channel GroupNorm after the first, exact GELU after each;
- feature projection: LayerNorm(512) + Linear(512 → 768);
- encoder: a grouped conv positional embedding (kernel 128, 16 groups, weight norm over dim 2,
  GELU) added to the input, LayerNorm, then 12 post-LN layers (768, 12 heads, FFN 3072).

audiocraft's ``StyleConditioner`` (``audiocraft/modules/conditioners.py``, ``FeatureExtractor``)
feeds MERT the **raw** 24 kHz mono waveform (julius resample from the 32 kHz excerpt, no
zero-mean/unit-variance normalisation, unlike MERT's own processor) and keeps
``last_hidden_state``: ``MertModel.__call__`` returns exactly that. Batches are not padded there
either, so there is no attention mask here: every row of a batch has the same length.

Everything runs channels-last ``(batch, time, channels)``, the layout MLX convolutions want.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from audiogen_core.errors import InvalidInputError, MissingWeightsError, WeightsError
from audiogen_core.fastmath import gelu_fast
from audiogen_core.weights import (
    cast_floats,
    conv1d_to_mlx,
    fuse_weight_norm,
    load_into,
    load_safetensors,
    read_json,
)

import mlx.core as mx
import mlx.nn as nn


@dataclass(frozen=True)
class MertConfig:
    """The fields of MERT's ``MERTConfig`` (a ``HubertConfig`` plus MERT flags) that change the
    forward pass; defaults are MERT-v1-95M's config.json."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512, 512, 512, 512, 512, 512, 512)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    conv_pos_batch_norm: bool = False
    feat_proj_layer_norm: bool = True
    do_stable_layer_norm: bool = False
    sample_rate: int = 24_000
    # MERT-only flags: the CQT branch and DeepNorm change the network; we refuse them.
    feature_extractor_cqt: bool = False
    deepnorm: bool = False
    # MERT only reaches its "relaxed" attention under deepnorm, and there it is softmax(w - max w),
    # which equals softmax(w): accepted whatever its value.
    attention_relax: float = -1.0
    adapter_attn_dim: int | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "MERT config") -> MertConfig:
        """From a MERT / Hubert config.json dict; unknown keys are ignored, unsupported
        settings raise ``WeightsError`` naming ``source``."""
        names = {f.name for f in fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k in names:
                kw[k] = tuple(v) if isinstance(v, list) else v
        try:
            config = cls(**kw)
        except TypeError as e:
            raise WeightsError(f"{source}: bad MERT config: {e}") from e
        config.validate(source)
        return config

    @property
    def frame_rate(self) -> float:
        """Output frames per second (75 for MERT-v1-95M at 24 kHz)."""
        hop = 1
        for s in self.conv_stride:
            hop *= s
        return self.sample_rate / hop

    def num_frames(self, samples: int) -> int:
        """Frames out of ``samples`` input samples (0 when too short for the conv stack)."""
        n = samples
        for k, s in zip(self.conv_kernel, self.conv_stride, strict=True):
            n = (n - k) // s + 1
            if n < 1:
                return 0
        return n

    @property
    def min_samples(self) -> int:
        """The shortest input that yields one frame (400 samples for MERT-v1-95M)."""
        n = 1
        for k, s in zip(reversed(self.conv_kernel), reversed(self.conv_stride), strict=True):
            n = (n - 1) * s + k
        return n

    def validate(self, source: str = "MERT config") -> None:
        """Refuse, with ``WeightsError``, every setting this port does not implement."""
        problems: list[str] = []
        if self.feature_extractor_cqt:
            problems.append("feature_extractor_cqt=true (MERT's nnAudio CQT branch)")
        if self.deepnorm:
            problems.append("deepnorm=true (MERT's scaled residuals)")
        if self.conv_pos_batch_norm:
            problems.append("conv_pos_batch_norm=true")
        if self.adapter_attn_dim is not None:
            problems.append("adapter_attn_dim is set (attention adapters)")
        if self.feat_extract_norm not in ("group", "layer"):
            problems.append(f"feat_extract_norm={self.feat_extract_norm!r} (need group or layer)")
        for name in ("hidden_act", "feat_extract_activation"):
            if getattr(self, name) != "gelu":
                problems.append(f"{name}={getattr(self, name)!r} (only gelu)")
        n = len(self.conv_dim)
        if not (n and len(self.conv_stride) == n and len(self.conv_kernel) == n):
            problems.append("conv_dim, conv_stride and conv_kernel differ in length")
        if self.hidden_size % self.num_attention_heads:
            problems.append("hidden_size is not a multiple of num_attention_heads")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            problems.append("hidden_size is not a multiple of num_conv_pos_embedding_groups")
        if problems:
            raise WeightsError(f"{source}: unsupported MERT settings: {'; '.join(problems)}")


def _gelu(x: mx.array) -> mx.array:
    """Exact GELU (torch's ``nn.GELU()``, transformers' ``ACT2FN["gelu"]``). On the CPU, MLX's
    ``erf`` runs at ~50 ns/element and the feature encoder alone pushes 15M elements through
    GELU for 3 s of audio; ``fastmath.gelu_fast``'s fused rational form is ~5x faster there
    (tools/bench/mert.py)."""
    return gelu_fast(x)


class _ChannelNorm(nn.Module):
    """``nn.GroupNorm(C, C)`` on channels-last input: each channel normalised over time."""

    def __init__(self, dims: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = mx.ones((dims,))
        self.bias = mx.zeros((dims,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        mean = mx.mean(x, axis=1, keepdims=True)
        xc = x - mean
        var = mx.mean(xc * xc, axis=1, keepdims=True)
        return xc * mx.rsqrt(var + self.eps) * self.weight + self.bias


class _ConvLayer(nn.Module):
    """conv → (norm) → GELU; ``layer_norm`` is a per-channel GroupNorm ("group", first layer
    only) or a LayerNorm over channels ("layer", every layer), named as upstream."""

    def __init__(self, config: MertConfig, i: int) -> None:
        super().__init__()
        c_in = config.conv_dim[i - 1] if i > 0 else 1
        c_out = config.conv_dim[i]
        self.conv = nn.Conv1d(
            c_in,
            c_out,
            config.conv_kernel[i],
            stride=config.conv_stride[i],
            bias=config.conv_bias,
        )
        self.norm_kind = (
            config.feat_extract_norm if (i == 0 or config.feat_extract_norm == "layer") else ""
        )
        if self.norm_kind == "group":
            self.layer_norm: nn.Module = _ChannelNorm(c_out)
        elif self.norm_kind == "layer":
            # transformers builds this LayerNorm with torch's default eps, not the config's.
            self.layer_norm = nn.LayerNorm(c_out, eps=1e-5)

    def __call__(self, x: mx.array) -> mx.array:
        x = self.conv(x)
        if self.norm_kind:
            x = self.layer_norm(x)
        return _gelu(x)


class FeatureEncoder(nn.Module):
    def __init__(self, config: MertConfig) -> None:
        super().__init__()
        self.conv_layers = [_ConvLayer(config, i) for i in range(len(config.conv_dim))]

    def __call__(self, audio: mx.array) -> mx.array:
        x = audio[:, :, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nn.Module):
    def __init__(self, config: MertConfig) -> None:
        super().__init__()
        self.use_norm = config.feat_proj_layer_norm
        if self.use_norm:
            self.layer_norm = nn.LayerNorm(config.conv_dim[-1], eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.conv_dim[-1], config.hidden_size)

    def __call__(self, x: mx.array) -> mx.array:
        if self.use_norm:
            x = self.layer_norm(x)
        return self.projection(x)


class PositionalConvEmbedding(nn.Module):
    """Grouped "same" conv (weight norm fused at load) → drop the extra frame of an even
    kernel → GELU."""

    def __init__(self, config: MertConfig) -> None:
        super().__init__()
        k = config.num_conv_pos_embeddings
        self.conv = nn.Conv1d(
            config.hidden_size,
            config.hidden_size,
            k,
            padding=k // 2,
            groups=config.num_conv_pos_embedding_groups,
        )
        self.remove = 1 if k % 2 == 0 else 0

    def __call__(self, x: mx.array) -> mx.array:
        y = self.conv(x)
        if self.remove:
            y = y[:, : -self.remove]
        return _gelu(y)


class Attention(nn.Module):
    def __init__(self, config: MertConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.scale = (d // self.num_heads) ** -0.5
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def __call__(self, x: mx.array) -> mx.array:
        b, t, d = x.shape

        def heads(y: mx.array) -> mx.array:
            return y.reshape(b, t, self.num_heads, -1).transpose(0, 2, 1, 3)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        o = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.out_proj(o.transpose(0, 2, 1, 3).reshape(b, t, d))


class FeedForward(nn.Module):
    def __init__(self, config: MertConfig) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output_dense = nn.Linear(config.intermediate_size, config.hidden_size)

    def __call__(self, x: mx.array) -> mx.array:
        return self.output_dense(_gelu(self.intermediate_dense(x)))


class EncoderLayer(nn.Module):
    """Post-LN (MERT-v1-95M) or pre-LN ("stable layer norm", e.g. MERT-v1-330M) layer."""

    def __init__(self, config: MertConfig) -> None:
        super().__init__()
        self.pre_ln = config.do_stable_layer_norm
        self.attention = Attention(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.feed_forward = FeedForward(config)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def __call__(self, x: mx.array) -> mx.array:
        if self.pre_ln:
            x = x + self.attention(self.layer_norm(x))
            return x + self.feed_forward(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x))
        return self.final_layer_norm(x + self.feed_forward(x))


class Encoder(nn.Module):
    def __init__(self, config: MertConfig) -> None:
        super().__init__()
        self.pre_ln = config.do_stable_layer_norm
        self.pos_conv_embed = PositionalConvEmbedding(config)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layers = [EncoderLayer(config) for _ in range(config.num_hidden_layers)]

    def __call__(self, x: mx.array, keep: list[mx.array] | None = None) -> mx.array:
        x = x + self.pos_conv_embed(x)
        if not self.pre_ln:
            x = self.layer_norm(x)
        for layer in self.layers:
            if keep is not None:
                keep.append(x)
            x = layer(x)
        if keep is not None:
            keep.append(x)
        if self.pre_ln:
            x = self.layer_norm(x)
        return x


class MertModel(nn.Module):
    """MERT / HuBERT encoder: raw waveform ``(batch, samples)`` → ``(batch, frames, hidden)``."""

    def __init__(self, config: MertConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.feature_extractor = FeatureEncoder(config)
        self.feature_projection = FeatureProjection(config)
        self.encoder = Encoder(config)

    def _check(self, audio: mx.array) -> mx.array:
        if not isinstance(audio, mx.array):
            raise InvalidInputError(f"MERT input must be an mx.array, got {type(audio).__name__}")
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2:
            raise InvalidInputError(
                f"MERT input must be (samples,) or (batch, samples) mono audio, got shape "
                f"{tuple(audio.shape)}"
            )
        if not mx.issubdtype(audio.dtype, mx.floating):
            raise InvalidInputError(f"MERT input must be floating-point audio, got {audio.dtype}")
        if audio.shape[0] == 0 or audio.shape[1] < self.config.min_samples:
            raise InvalidInputError(
                f"MERT needs at least {self.config.min_samples} samples "
                f"({self.config.min_samples / self.config.sample_rate * 1000:.1f} ms at "
                f"{self.config.sample_rate} Hz) per row, got shape {tuple(audio.shape)}"
            )
        if not mx.all(mx.isfinite(audio)).item():
            raise InvalidInputError("MERT input contains NaN or infinite samples")
        return audio.astype(self.feature_projection.projection.weight.dtype)

    def __call__(self, audio: mx.array) -> mx.array:
        """``last_hidden_state``: what audiocraft's style conditioner takes. ``audio`` is raw
        mono at ``config.sample_rate`` (no normalisation), ``(samples,)`` or ``(batch, samples)``."""
        x = self.feature_projection(self.feature_extractor(self._check(audio)))
        return self.encoder(x)

    def hidden_states(self, audio: mx.array) -> list[mx.array]:
        """transformers 5's ``output_hidden_states``: the input of each layer (after the pos
        conv and, for post-LN, the encoder LayerNorm), then the last layer's output:
        ``num_hidden_layers + 1`` arrays. For post-LN (MERT-v1-95M) the last one is
        ``last_hidden_state``; pre-LN models apply the final LayerNorm after it."""
        keep: list[mx.array] = []
        x = self.feature_projection(self.feature_extractor(self._check(audio)))
        self.encoder(x, keep)
        return keep


_PREFIXES = ("mert_model.", "hubert.", "model.")
# Training-only parameters in MERT / Hubert checkpoints: the SpecAugment mask vector and the
# pre-training heads of fairseq conversions. None takes part in the encoder's forward pass.
_DROP = ("masked_spec_embed", "label_embs_concat")
_DROP_PREFIXES = ("final_proj.",)
_POS = "encoder.pos_conv_embed.conv."
_WN = (
    ("weight_g", "weight_v"),
    ("parametrizations.weight.original0", "parametrizations.weight.original1"),
)


def _fuse_pos_conv(g: mx.array, v: mx.array, source: str) -> mx.array:
    """The positional conv's weight norm is over dim 2 (``g`` is ``(1, 1, k)``), not torch's
    default dim 0 that ``fuse_weight_norms`` assumes."""
    kept = [i for i in range(v.ndim) if g.shape[i] != 1]
    if g.ndim != v.ndim or len(kept) > 1 or any(g.shape[i] != v.shape[i] for i in kept):
        raise MissingWeightsError(
            f"{source}: positional conv weight norm: g {tuple(g.shape)} does not fit "
            f"v {tuple(v.shape)}"
        )
    return fuse_weight_norm(g, v, dim=kept[0] if kept else 2)


def sanitize(weights: Mapping[str, mx.array], source: str = "MERT weights") -> dict[str, mx.array]:
    """Upstream MERT / ``HubertModel`` keys → ours: strip a model prefix, drop training-only
    tensors, fuse the positional conv's weight norm (``weight_g/_v`` as MERT's pytorch_model.bin
    stores it, or torch's newer ``parametrizations``) and move conv weights to MLX layout."""
    out: dict[str, mx.array] = {}
    for key, value in weights.items():
        for p in _PREFIXES:
            if key.startswith(p):
                key = key[len(p) :]
                break
        if key in _DROP or key.startswith(_DROP_PREFIXES):
            continue
        out[key] = value
    for g_name, v_name in _WN:
        g_key, v_key = _POS + g_name, _POS + v_name
        if g_key in out or v_key in out:
            if g_key not in out or v_key not in out:
                raise MissingWeightsError(
                    f"{source}: positional conv weight-norm pair incomplete "
                    f"(need {g_key} and {v_key})"
                )
            out[_POS + "weight"] = _fuse_pos_conv(out.pop(g_key), out.pop(v_key), source)
    for key, value in out.items():
        if key.endswith("conv.weight") and value.ndim == 3:
            out[key] = conv1d_to_mlx(value)
    return out


def load_mert(
    path: str | os.PathLike[str],
    weights: Mapping[str, mx.array] | None = None,
    dtype: mx.Dtype = mx.float32,
) -> MertModel:
    """A MERT checkpoint directory (``config.json`` + ``model.safetensors``, upstream key
    layout) as a ready ``MertModel``. ``weights`` replaces the safetensors file: pass the
    tensors of MERT's ``pytorch_model.bin`` read by ``audiogen_convert.formats.read_bin``
    (reading pickles needs torch, which this package does not depend on)."""
    root = Path(path)
    config_path = root / "config.json"
    config = MertConfig.from_dict(read_json(config_path), source=str(config_path))
    source = str(root)
    if weights is None:
        file = root / "model.safetensors"
        if not file.is_file():
            hint = (
                " (only pytorch_model.bin: read it with audiogen_convert.formats.read_bin and "
                "pass weights=)"
                if (root / "pytorch_model.bin").is_file()
                else ""
            )
            raise WeightsError(f"{file}: weights file not found{hint}")
        weights = load_safetensors(file)
        source = str(file)
    model = MertModel(config)
    load_into(model, cast_floats(sanitize(weights, source), dtype), source=source)
    return model


__all__ = ["MertConfig", "MertModel", "load_mert", "sanitize"]
