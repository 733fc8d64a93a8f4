"""Stable Audio conditioners: T5 prompt tokens and number (seconds) embeddings, assembled into
the DiT's cross-attention and global conditions.

Ported from diffusers' ``StableAudioProjectionModel`` / ``StableAudioNumberConditioner``
(``pipelines/stable_audio/modeling_stable_audio.py``) and its pipeline's ``encode_prompt`` /
``encode_duration``, which match stable-audio-tools' ``T5Conditioner`` / ``NumberConditioner``
and ``ConditionedDiffusionModelWrapper.get_conditioning_inputs``. Attribute names follow
diffusers (``text_projection``, ``time_positional_embedding.{0,1}``); the number conditioners
are keyed by their stable-audio-tools id (``numbers.seconds_start``, ``numbers.seconds_total``).
The T5 encoder itself is ``audiogen_core.t5.T5Encoder``, loaded separately.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from audiogen_core.errors import InvalidInputError
from audiogen_core.t5 import T5Encoder

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from audiogen_stableaudio.config import ConditioningConfig, NumberConditionerConfig

Seconds = float | Sequence[float] | np.ndarray | mx.array


class PositionalEmbedding(nn.Module):
    """``[x, sin(2π x w), cos(2π x w)]`` with learned ``w`` (diffusers
    ``StableAudioPositionalEmbedding``, stable-audio-tools ``LearnedPositionalEmbedding``)."""

    def __init__(self, dims: int) -> None:
        super().__init__()
        self.weights = mx.zeros((dims // 2,))

    def __call__(self, x: mx.array) -> mx.array:
        x = x[:, None]
        f = x * self.weights[None, :] * 2 * math.pi
        return mx.concatenate([x, mx.sin(f), mx.cos(f)], axis=-1)


class NumberConditioner(nn.Module):
    """Seconds → one ``(B, 1, D)`` token: clamp to ``[min, max]``, normalise to [0, 1], learned
    Fourier features, Linear(internal + 1 → D)."""

    def __init__(self, config: NumberConditionerConfig, dims: int) -> None:
        super().__init__()
        self.min_val, self.max_val = config.min_val, config.max_val
        self.time_positional_embedding = [
            PositionalEmbedding(config.internal_dim),
            nn.Linear(config.internal_dim + 1, dims),
        ]

    def __call__(self, seconds: mx.array) -> mx.array:
        embed, linear = self.time_positional_embedding
        x = mx.clip(seconds.astype(mx.float32), self.min_val, self.max_val)
        x = (x - self.min_val) / (self.max_val - self.min_val)
        return linear(embed(x.astype(linear.weight.dtype)))[:, None, :]


@dataclass(frozen=True)
class Conditioning:
    """What the DiT takes: ``cross_attn_cond`` (B, S, D) with its mask (B, S) and
    ``global_cond`` (B, G) (``None`` when the model has no global condition)."""

    cross_attn_cond: mx.array
    cross_attn_mask: mx.array
    global_cond: mx.array | None

    @property
    def batch_size(self) -> int:
        return int(self.cross_attn_cond.shape[0])


class StableAudioConditioners(nn.Module):
    def __init__(self, config: ConditioningConfig) -> None:
        super().__init__()
        self.config = config
        if config.has_text_projection:
            self.text_projection = nn.Linear(config.text_dim, config.cond_dim)
        self.numbers = {n.id: NumberConditioner(n, config.cond_dim) for n in config.numbers}

    def pad(self, input_ids: mx.array, attention_mask: mx.array) -> tuple[mx.array, mx.array]:
        """Right-pad tokenizer output (id 0, mask 0) to ``max_length``, as upstream tokenizes
        with ``padding="max_length"``: the padded positions are part of the DiT's
        cross-attention sequence (as zero vectors), so the length matters."""
        ids, mask = mx.array(input_ids), mx.array(attention_mask)
        if ids.ndim != 2 or mask.shape != ids.shape:
            raise InvalidInputError(
                f"input_ids / attention_mask must be (batch, length), got {ids.shape} and "
                f"{mask.shape}"
            )
        n = self.config.max_length
        if ids.shape[1] > n:
            raise InvalidInputError(
                f"prompt has {ids.shape[1]} tokens, more than max_length {n}: tokenize with "
                f"max_length={n} (upstream truncates)"
            )
        extra = [(0, 0), (0, n - ids.shape[1])]
        return mx.pad(ids, extra), mx.pad(mask, extra)

    def encode_text(
        self, t5: T5Encoder, input_ids: mx.array, attention_mask: mx.array
    ) -> tuple[mx.array, mx.array]:
        """T5 states, projected and multiplied by the mask (pads become zero vectors), padded
        to ``max_length``: ``(B, max_length, cond_dim)`` and the mask."""
        ids, mask = self.pad(input_ids, attention_mask)
        states = t5(ids, mask)
        if "text_projection" in self:
            states = self.text_projection(states.astype(self.text_projection.weight.dtype))
        return states * mask[:, :, None].astype(states.dtype), mask

    def encode_numbers(self, seconds: Mapping[str, Seconds], batch: int) -> dict[str, mx.array]:
        """``(B, 1, cond_dim)`` per number conditioner; a scalar is broadcast to the batch."""
        missing = set(self.config.number_ids) - set(seconds)
        unknown = set(seconds) - set(self.config.number_ids)
        if missing or unknown:
            raise InvalidInputError(
                f"seconds for {sorted(self.config.number_ids)} expected; missing "
                f"{sorted(missing)}, unknown {sorted(unknown)}"
            )
        out = {}
        for name, value in seconds.items():
            x = mx.array(np.asarray(value, dtype=np.float32)).reshape(-1)
            if x.size == 1:
                x = mx.broadcast_to(x, (batch,))
            if x.shape != (batch,):
                raise InvalidInputError(f"{name}: {x.size} values for a batch of {batch}")
            if not bool(mx.all(mx.isfinite(x)).item()):
                raise InvalidInputError(f"{name}: seconds must be finite")
            out[name] = self.numbers[name](x)
        return out

    def assemble(
        self, text: mx.array, text_mask: mx.array, numbers: Mapping[str, mx.array]
    ) -> Conditioning:
        """Cross-attention condition = the ``cross_attn_cond_ids`` along the sequence (numbers
        are one always-valid token each); global condition = the ``global_cond_ids`` along the
        channels."""
        parts = {"prompt": (text, text_mask)}
        ones = mx.ones((text.shape[0], 1), dtype=text_mask.dtype)
        parts.update({k: (v, ones) for k, v in numbers.items()})
        ids = self.config.cross_attn_cond_ids
        cross = mx.concatenate([parts[k][0].astype(text.dtype) for k in ids], axis=1)
        mask = mx.concatenate([parts[k][1] for k in ids], axis=1)
        global_cond = None
        if self.config.global_cond_ids:
            global_cond = mx.concatenate(
                [numbers[k][:, 0] for k in self.config.global_cond_ids], axis=-1
            )
        return Conditioning(cross, mask, global_cond)

    def __call__(
        self,
        t5: T5Encoder,
        input_ids: mx.array,
        attention_mask: mx.array,
        seconds: Mapping[str, Seconds],
    ) -> Conditioning:
        text, mask = self.encode_text(t5, input_ids, attention_mask)
        return self.assemble(text, mask, self.encode_numbers(seconds, text.shape[0]))


def classifier_free(cond: Conditioning, negative: Conditioning | None = None) -> Conditioning:
    """The doubled batch ``[uncond; cond]`` (diffusers' order) for classifier-free guidance.

    Without a negative prompt the unconditional branch zeroes the **whole** cross-attention
    condition, seconds tokens included, and keeps the global condition (diffusers
    ``StableAudioPipeline.__call__``; stable-audio-tools ``DiffusionTransformer.forward`` does
    the same with ``null_embed``). With a negative prompt, ``negative`` is its full conditioning
    (the same seconds): diffusers then keeps the seconds tokens in the unconditional branch.
    """
    if negative is None:
        uncond = Conditioning(
            mx.zeros_like(cond.cross_attn_cond), cond.cross_attn_mask, cond.global_cond
        )
    else:
        if negative.cross_attn_cond.shape != cond.cross_attn_cond.shape:
            raise InvalidInputError(
                f"negative conditioning shape {negative.cross_attn_cond.shape} != "
                f"{cond.cross_attn_cond.shape}"
            )
        uncond = negative
    global_cond = None
    if cond.global_cond is not None:
        other = uncond.global_cond if uncond.global_cond is not None else cond.global_cond
        global_cond = mx.concatenate([other, cond.global_cond])
    return Conditioning(
        mx.concatenate([uncond.cross_attn_cond, cond.cross_attn_cond]),
        mx.concatenate([uncond.cross_attn_mask, cond.cross_attn_mask]),
        global_cond,
    )


__all__ = [
    "Conditioning",
    "NumberConditioner",
    "StableAudioConditioners",
    "classifier_free",
]
