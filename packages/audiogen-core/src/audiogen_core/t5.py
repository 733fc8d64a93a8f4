"""T5 text encoder (the encoder stack of T5 / T5 v1.1), as used by MusicGen and Stable Audio.

Ported from transformers ``models/t5/modeling_t5.py`` (``T5EncoderModel``). Attribute names mirror
its state-dict keys, so loading an upstream checkpoint is a prefix strip (see ``sanitize``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from audiogen_core.errors import InvalidInputError, WeightsError
from audiogen_core.weights import cast_floats, load_into, load_safetensors, read_json

import mlx.core as mx
import mlx.nn as nn
import numpy as np

# transformers ACT2FN names a T5 config can select through ``feed_forward_proj``.
_ACTIVATIONS: dict[str, Callable[[mx.array], mx.array]] = {
    "relu": nn.relu,
    "gelu": nn.gelu,  # exact (erf) GELU, as torch's nn.GELU()
    "gelu_new": nn.gelu_approx,  # tanh approximation
    "gelu_pytorch_tanh": nn.gelu_approx,
    "silu": nn.silu,
    "swish": nn.silu,
}


@dataclass(frozen=True)
class T5Config:
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"

    def __post_init__(self) -> None:
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise InvalidInputError(
                f"feed_forward_proj {self.feed_forward_proj!r}: expected 'ACT' or 'gated-ACT'"
            )
        if self.dense_act_fn not in _ACTIVATIONS:
            raise InvalidInputError(
                f"feed_forward_proj {self.feed_forward_proj!r}: unsupported activation "
                f"{self.dense_act_fn!r} (known: {', '.join(sorted(_ACTIVATIONS))})"
            )

    @property
    def is_gated_act(self) -> bool:
        return self.feed_forward_proj.split("-")[0] == "gated"

    @property
    def dense_act_fn(self) -> str:
        # Same derivation as transformers' T5Config: "gated-gelu" means the tanh GELU
        # ("gelu_new") for backwards compatibility, any other "[gated-]act" means ACT2FN[act].
        if self.feed_forward_proj == "gated-gelu":
            return "gelu_new"
        return self.feed_forward_proj.split("-")[-1]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> T5Config:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})  # upstream configs carry extras


@lru_cache(maxsize=64)
def _relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional bucket ids ``(length, length)`` for ``key - query`` offsets.

    ``T5Attention._relative_position_bucket``: half the buckets per direction, exact buckets
    for small offsets, log-spaced ones up to ``max_distance``. The log is taken in float32 like
    upstream so the truncation to int lands on the same bucket at the boundaries.
    """
    pos = np.arange(length, dtype=np.int64)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    with np.errstate(divide="ignore"):  # log(0) only where the exact branch is taken
        large = (
            np.log(rel.astype(np.float32) / np.float32(max_exact))
            / np.float32(math.log(max_distance / max_exact))
            * np.float32(half - max_exact)
        )
    large = max_exact + np.nan_to_num(large, neginf=0.0).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (buckets + np.where(rel < max_exact, rel, large)).astype(np.int32)


class T5LayerNorm(nn.Module):
    """RMS norm without mean or bias; the variance is taken in float32 (``mx.fast.rms_norm``)."""

    def __init__(self, dims: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = mx.ones((dims,))
        self.eps = eps

    def __call__(self, x: mx.array) -> mx.array:
        # Upstream returns the weight's dtype when that is half precision (the residual stream
        # may be fp32 because ``wo`` stays fp32, see T5Encoder.from_pretrained).
        y = mx.fast.rms_norm(x, self.weight, self.eps)
        return y if y.dtype == self.weight.dtype else y.astype(self.weight.dtype)


class T5Attention(nn.Module):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool = False) -> None:
        super().__init__()
        inner = config.num_heads * config.d_kv
        self.num_heads = config.num_heads
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.k = nn.Linear(config.d_model, inner, bias=False)
        self.v = nn.Linear(config.d_model, inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(
                config.relative_attention_num_buckets, config.num_heads
            )

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        B, L, _ = x.shape
        q = self.q(x).reshape(B, L, self.num_heads, -1).transpose(0, 2, 1, 3)
        k = self.k(x).reshape(B, L, self.num_heads, -1).transpose(0, 2, 1, 3)
        v = self.v(x).reshape(B, L, self.num_heads, -1).transpose(0, 2, 1, 3)
        # T5 folds the 1/sqrt(d) scaling into its initialisation: scale 1, position bias + key
        # padding as one additive mask.
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0, mask=mask)
        return self.o(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


class T5LayerSelfAttention(nn.Module):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool = False) -> None:
        super().__init__()
        self.SelfAttention = T5Attention(config, has_relative_attention_bias)
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        return x + self.SelfAttention(self.layer_norm(x), mask)


class T5DenseActDense(nn.Module):
    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.act = _ACTIVATIONS[config.dense_act_fn]

    def __call__(self, x: mx.array) -> mx.array:
        return self.wo(self.act(self.wi(x)).astype(self.wo.weight.dtype))


class T5DenseGatedActDense(nn.Module):
    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.act = _ACTIVATIONS[config.dense_act_fn]

    def __call__(self, x: mx.array) -> mx.array:
        h = self.act(self.wi_0(x)) * self.wi_1(x)
        return self.wo(h.astype(self.wo.weight.dtype))


class T5LayerFF(nn.Module):
    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.DenseReluDense: T5DenseActDense | T5DenseGatedActDense = (
            T5DenseGatedActDense(config) if config.is_gated_act else T5DenseActDense(config)
        )
        self.layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def __call__(self, x: mx.array) -> mx.array:
        return x + self.DenseReluDense(self.layer_norm(x))


class T5Block(nn.Module):
    def __init__(self, config: T5Config, has_relative_attention_bias: bool = False) -> None:
        super().__init__()
        self.layer = [T5LayerSelfAttention(config, has_relative_attention_bias), T5LayerFF(config)]

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        attention, feed_forward = self.layer
        return feed_forward(attention(x, mask))


class T5Stack(nn.Module):
    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = config
        self.block = [T5Block(config, i == 0) for i in range(config.num_layers)]
        self.final_layer_norm = T5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def attention_mask(self, length: int, key_mask: mx.array | None, dtype: mx.Dtype) -> mx.array:
        """Additive mask ``(B|1, heads, L, L)``: block 0's relative position bias (shared by all
        layers, so computed once per call) plus a large negative value at padded keys."""
        cfg = self.config
        buckets = _relative_position_buckets(
            length, cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance
        )
        table = self.block[0].layer[0].SelfAttention.relative_attention_bias
        bias = table(mx.array(buckets)).transpose(2, 0, 1)[None].astype(dtype)
        if key_mask is None:
            return bias
        # finfo.min as upstream's eager path; adding a bias of ordinary size cannot overflow it.
        neg = (1 - key_mask.astype(dtype)) * mx.finfo(dtype).min
        return bias + neg[:, None, None, :]

    def __call__(self, x: mx.array, key_mask: mx.array | None) -> mx.array:
        mask = self.attention_mask(x.shape[1], key_mask, x.dtype)
        for block in self.block:
            x = block(x, mask)
        return self.final_layer_norm(x)


class T5Encoder(nn.Module):
    """``T5EncoderModel``: token ids → ``last_hidden_state`` ``(B, L, d_model)``."""

    def __init__(self, config: T5Config) -> None:
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = T5Stack(config)

    def __call__(self, input_ids: Any, attention_mask: Any | None = None) -> mx.array:
        ids = mx.array(input_ids)
        if ids.ndim != 2:
            raise InvalidInputError(f"input_ids must be (batch, length), got shape {ids.shape}")
        if mx.issubdtype(ids.dtype, mx.floating):
            raise InvalidInputError(f"input_ids must be integers, got {ids.dtype}")
        mask = None
        if attention_mask is not None:
            mask = mx.array(attention_mask)
            if mask.shape != ids.shape:
                raise InvalidInputError(
                    f"attention_mask shape {mask.shape} != input_ids shape {ids.shape}"
                )
        return self.encoder(self.shared(ids), mask)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], dtype: mx.Dtype = mx.float32
    ) -> T5Encoder:
        """Load a local transformers directory: ``config.json`` + ``model.safetensors`` (or
        sharded with ``model.safetensors.index.json``). A composite config holding a
        ``text_encoder`` section (MusicGen) loads that section's ``text_encoder.*`` weights."""
        root = Path(path)
        if not root.is_dir():
            raise WeightsError(f"{root}: not a directory")
        raw = read_json(root / "config.json")
        prefix = ""
        if "d_model" not in raw and isinstance(raw.get("text_encoder"), dict):
            raw, prefix = raw["text_encoder"], "text_encoder."
        try:
            config = T5Config.from_dict(raw)
        except (InvalidInputError, TypeError) as e:
            raise WeightsError(f"{root / 'config.json'}: invalid T5 config: {e}") from e
        weights, source = _load_weights(root, prefix)
        weights = cast_floats(sanitize(weights, prefix), dtype)
        if dtype == mx.float16:
            # transformers keeps ``wo`` in fp32 (``_keep_in_fp32_modules``): T5's FF outputs
            # overflow fp16. Its fp32 output then keeps the residual stream in fp32.
            weights = {
                k: v.astype(mx.float32) if ".DenseReluDense.wo." in k else v
                for k, v in weights.items()
            }
        model = cls(config)
        load_into(model, weights, source=source, strict=True)
        return model


def sanitize(weights: Mapping[str, mx.array], prefix: str = "") -> dict[str, mx.array]:
    """Upstream state dict → ours: keep only ``prefix`` keys (stripped), drop the decoder and
    LM head of full ``T5ForConditionalGeneration`` checkpoints, and resolve the tied embedding
    (``shared.weight`` and ``encoder.embed_tokens.weight`` are one tensor; either may be saved)."""
    out: dict[str, mx.array] = {}
    embed_tokens = None
    for key, value in weights.items():
        if prefix:
            if not key.startswith(prefix):
                continue
            key = key[len(prefix) :]
        if key.startswith(("decoder.", "lm_head.")):
            continue
        if key == "encoder.embed_tokens.weight":
            embed_tokens = value
            continue
        out[key] = value
    if "shared.weight" not in out and embed_tokens is not None:
        out["shared.weight"] = embed_tokens
    return out


def _load_weights(root: Path, prefix: str) -> tuple[dict[str, mx.array], Path]:
    """Tensors of ``model.safetensors`` or of the shards that hold ``prefix`` keys."""
    single = root / "model.safetensors"
    if single.is_file():
        return load_safetensors(single), single
    index = root / "model.safetensors.index.json"
    if not index.is_file():
        raise WeightsError(f"{root}: no model.safetensors or model.safetensors.index.json")
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise WeightsError(f"{index}: no weight_map")
    shards = sorted({str(f) for k, f in weight_map.items() if k.startswith(prefix)})
    weights: dict[str, mx.array] = {}
    for shard in shards:
        if Path(shard).name != shard:  # a shard name must not point outside the directory
            raise WeightsError(f"{index}: bad shard name {shard!r}")
        weights.update(load_safetensors(root / shard))
    return weights, index


__all__ = ["T5Config", "T5Encoder", "sanitize"]
