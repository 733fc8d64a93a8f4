"""Stable Audio's diffusion transformer, computed as diffusers' ``StableAudioDiTModel``
(``models/transformers/stable_audio_transformer.py``) and stable-audio-tools'
``DiffusionTransformer`` with ``ContinuousTransformer`` (``models/dit.py``, ``transformer.py``).

Attribute names mirror diffusers' state-dict keys, except where tensors are fused: self-attention
``to_q/to_k/to_v`` → ``attn1.to_qkv`` and cross-attention ``to_k/to_v`` → ``attn2.to_kv`` (the
layout stable-audio-tools saves), and the two 1×1 convolutions, stored as ``Linear`` weights
``(out, in)``. ``weights.sanitize_dit`` maps both upstream layouts onto these names.

Layout: the model takes and returns latents channels-first ``(B, C, T)`` like upstream; inside,
tokens are ``(B, 1 + T, D)`` with the timestep + global condition token first.
"""

from __future__ import annotations

import math

from audiogen_core.errors import InvalidInputError
from audiogen_core.fastmath import attention_cpu, swiglu_fast

import mlx.core as mx
import mlx.nn as nn

from audiogen_stableaudio.config import DiTConfig


def _attend(
    q: mx.array, k: mx.array, v: mx.array, scale: float, mask: mx.array | None = None
) -> mx.array:
    """SDPA; on the CPU as matmuls and a polynomial-exp softmax (``fastmath.attention_cpu``:
    MLX's CPU SDPA is bound by its scalar ``exp``)."""
    if mx.default_device().type == mx.DeviceType.cpu:
        return attention_cpu(q, k, v, scale, mask)
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)


def _mlp(dims_in: int, dims: int, bias: bool) -> list[nn.Module]:
    # Upstream nn.Sequential(Linear, SiLU, Linear): a list keeps its indices 0 and 2 as keys.
    return [nn.Linear(dims_in, dims, bias=bias), nn.SiLU(), nn.Linear(dims, dims, bias=bias)]


def _run(layers: list[nn.Module], x: mx.array) -> mx.array:
    for layer in layers:
        x = layer(x)
    return x


class TimestepFeatures(nn.Module):
    """Gaussian Fourier features of the timestep: ``[cos(2π t w), sin(2π t w)]`` (diffusers
    ``StableAudioGaussianFourierProjection`` with flip_sin_to_cos, stable-audio-tools
    ``FourierFeatures``)."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.weight = mx.zeros((dims // 2,))

    def __call__(self, t: mx.array) -> mx.array:
        f = 2 * math.pi * t[:, None].astype(mx.float32) * self.weight[None, :].astype(mx.float32)
        return mx.concatenate([mx.cos(f), mx.sin(f)], axis=-1)


class SelfAttention(nn.Module):
    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.num_heads = config.num_heads
        self.rotary_dim = config.rotary_dim
        self.scale = config.head_dim**-0.5
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = [nn.Linear(dim, dim, bias=False)]  # upstream ModuleList [Linear, Dropout]
        if config.qk_norm == "ln":
            self.norm_q = nn.LayerNorm(config.head_dim, eps=1e-6)
            self.norm_k = nn.LayerNorm(config.head_dim, eps=1e-6)

    def __call__(self, x: mx.array) -> mx.array:
        B, L, _ = x.shape
        qkv = self.to_qkv(x).reshape(B, L, 3, self.num_heads, -1).transpose(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if "norm_q" in self:
            q, k = self.norm_q(q), self.norm_k(k)
        # Rotary on the first rotary_dim dims of each head, halves rotated against each other
        # (GPT-NeoX style; diffusers use_real_unbind_dim=-2, stable-audio-tools rotate_half),
        # positions 0.. over the whole sequence, the prepended token included.
        q = mx.fast.rope(q, self.rotary_dim, traditional=False, base=10000.0, scale=1.0, offset=0)
        k = mx.fast.rope(k, self.rotary_dim, traditional=False, base=10000.0, scale=1.0, offset=0)
        out = _attend(q, k, v, self.scale)
        return self.to_out[0](out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class CrossAttention(nn.Module):
    """Queries from the sequence; keys/values from the condition tokens with fewer heads
    (``cross_attention_dim / head_dim``), each shared by consecutive query heads (upstream's
    ``repeat_interleave``; MLX's grouped SDPA maps heads the same way)."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.num_heads = config.num_heads
        self.kv_heads = config.num_key_value_heads
        self.scale = config.head_dim**-0.5
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(
            config.cross_attention_dim, 2 * self.kv_heads * config.head_dim, bias=False
        )
        self.to_out = [nn.Linear(dim, dim, bias=False)]
        if config.qk_norm == "ln":
            self.norm_q = nn.LayerNorm(config.head_dim, eps=1e-6)
            self.norm_k = nn.LayerNorm(config.head_dim, eps=1e-6)

    def __call__(self, x: mx.array, context: mx.array, mask: mx.array | None) -> mx.array:
        B, L, _ = x.shape
        S = context.shape[1]
        q = self.to_q(x).reshape(B, L, self.num_heads, -1).transpose(0, 2, 1, 3)
        kv = self.to_kv(context).reshape(B, S, 2, self.kv_heads, -1).transpose(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        if "norm_q" in self:
            q, k = self.norm_q(q), self.norm_k(k)
        out = _attend(q, k, v, self.scale, mask)
        return self.to_out[0](out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class SwiGLU(nn.Module):
    def __init__(self, dims: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dims, 2 * hidden)

    def __call__(self, x: mx.array) -> mx.array:
        h, gate = mx.split(self.proj(x), 2, axis=-1)
        # One fused multiply-add kernel on the CPU, where MLX's sigmoid is scalar libm (a
        # full-size small DiT spent ~35 ms of its ~145 ms per block in it); MLX's on a GPU.
        return swiglu_fast(h, gate)


class FeedForward(nn.Module):
    def __init__(self, dims: int, mult: int = 4) -> None:
        super().__init__()
        # diffusers' FeedForward.net = [SwiGLU, Dropout, Linear]: the identity keeps index 2.
        self.net = [SwiGLU(dims, mult * dims), nn.Identity(), nn.Linear(mult * dims, dims)]

    def __call__(self, x: mx.array) -> mx.array:
        return _run(self.net, x)


class DiTBlock(nn.Module):
    """Pre-norm block: self-attention (rotary), cross-attention, SwiGLU feed-forward. The
    LayerNorms have a bias in diffusers; stable-audio-tools saves its (zero) ``beta`` buffer."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        dim, eps = config.embed_dim, config.layer_norm_eps
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn1 = SelfAttention(config)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.attn2 = CrossAttention(config)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.ff = FeedForward(dim)

    def __call__(self, x: mx.array, context: mx.array, context_mask: mx.array | None) -> mx.array:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context, context_mask)
        return x + self.ff(self.norm3(x))


class StableAudioDiT(nn.Module):
    """Predicts the diffusion target (v for 1.0, the rectified-flow velocity for small) for
    latents ``x`` ``(B, C, T)`` at times ``t`` ``(B,)``."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        dim, channels = config.embed_dim, config.io_channels
        self.time_proj = TimestepFeatures(config.timestep_features_dim)
        self.timestep_proj = _mlp(config.timestep_features_dim, dim, bias=True)
        if config.has_global_cond:
            self.global_proj = _mlp(config.global_cond_dim, dim, bias=False)
        self.cross_attention_proj = [
            nn.Linear(config.cond_token_dim, config.cross_attention_dim, bias=False),
            nn.SiLU(),
            nn.Linear(config.cross_attention_dim, config.cross_attention_dim, bias=False),
        ]
        # 1×1 Conv1d without bias, applied as a residual: a matrix over channels.
        self.preprocess_conv = nn.Linear(channels, channels, bias=False)
        self.proj_in = nn.Linear(channels, dim, bias=False)
        self.transformer_blocks = [DiTBlock(config) for _ in range(config.depth)]
        self.proj_out = nn.Linear(dim, channels, bias=False)
        self.postprocess_conv = nn.Linear(channels, channels, bias=False)

    def _check(
        self,
        x: mx.array,
        t: mx.array,
        cond: mx.array,
        mask: mx.array | None,
        global_cond: mx.array | None,
    ) -> None:
        cfg = self.config
        if x.ndim != 3 or x.shape[1] != cfg.io_channels:
            raise InvalidInputError(f"x must be (batch, {cfg.io_channels}, T), got {x.shape}")
        B = x.shape[0]
        if t.shape != (B,):
            raise InvalidInputError(f"t must be ({B},), got {t.shape}")
        if cond.ndim != 3 or cond.shape[0] != B or cond.shape[2] != cfg.cond_token_dim:
            raise InvalidInputError(
                f"cross_attn_cond must be ({B}, S, {cfg.cond_token_dim}), got {cond.shape}"
            )
        if mask is not None and mask.shape != cond.shape[:2]:
            raise InvalidInputError(f"cross_attn_mask must be {cond.shape[:2]}, got {mask.shape}")
        if cfg.has_global_cond:
            if global_cond is None or global_cond.shape != (B, cfg.global_cond_dim):
                shape = None if global_cond is None else global_cond.shape
                raise InvalidInputError(
                    f"global_cond must be ({B}, {cfg.global_cond_dim}), got {shape}"
                )
        elif global_cond is not None:
            raise InvalidInputError("this DiT has no global condition")

    def __call__(
        self,
        x: mx.array,
        t: mx.array,
        cross_attn_cond: mx.array,
        cross_attn_mask: mx.array | None = None,
        global_cond: mx.array | None = None,
    ) -> mx.array:
        """``x`` (B, C, T), ``t`` (B,), ``cross_attn_cond`` (B, S, cond_token_dim),
        ``global_cond`` (B, global_cond_dim) → (B, C, T).

        ``cross_attn_mask`` (B, S), 1 = attend, is optional and **not** what upstream does:
        stable-audio-tools switches its masks off and diffusers' pipeline passes none, so padded
        prompt positions (zero vectors after the conditioner) are attended to. Pass it only to
        reproduce diffusers' ``encoder_attention_mask``.
        """
        self._check(x, t, cross_attn_cond, cross_attn_mask, global_cond)
        dtype = self.proj_in.weight.dtype
        context = _run(self.cross_attention_proj, cross_attn_cond.astype(dtype))
        token = _run(self.timestep_proj, self.time_proj(t).astype(dtype))
        if global_cond is not None:
            token = token + _run(self.global_proj, global_cond.astype(dtype))

        h = x.astype(dtype).transpose(0, 2, 1)  # (B, T, C)
        h = h + self.preprocess_conv(h)
        # The timestep + global token is prepended to the sequence (not adaLN) and dropped at
        # the end; rotary positions count it as position 0.
        h = mx.concatenate([token[:, None, :], self.proj_in(h)], axis=1)

        mask = None
        if cross_attn_mask is not None:
            keep = cross_attn_mask.astype(mx.bool_)[:, None, None, :]
            mask = mx.where(keep, mx.array(0.0, dtype), mx.array(-mx.inf, dtype))
        for block in self.transformer_blocks:
            h = block(h, context, mask)

        out = self.proj_out(h[:, 1:])
        out = out + self.postprocess_conv(out)
        return out.transpose(0, 2, 1)


__all__ = ["StableAudioDiT"]
