"""Upstream Stable Audio DiT / conditioner weights → our parameter names.

Two upstream layouts:

- ``diffusers``: ``transformer/diffusion_pytorch_model.safetensors`` (``StableAudioDiTModel``)
  and ``projection_model/diffusion_pytorch_model.safetensors`` (``StableAudioProjectionModel``);
- ``sat`` (stable-audio-tools): one ``model.safetensors`` / ``model.ckpt`` holding the DiT under
  ``model.model.``, the conditioners under ``conditioner.conditioners.`` and the VAE under
  ``pretransform.`` (ignored here). T5's weights are not in it (loaded from ``t5-base``).

DiT (ours = diffusers' names, with fused attention projections; ``N`` = block index):

=====================================================  =================================  ======================================
ours                                                   diffusers                          stable-audio-tools (after model.model.)
=====================================================  =================================  ======================================
``time_proj.weight`` (F/2,)                            same                               ``timestep_features.weight`` (F/2, 1)
``timestep_proj.{0,2}.*``                              same                               ``to_timestep_embed.{0,2}.*``
``global_proj.{0,2}.weight``                           same                               ``to_global_embed.{0,2}.weight``
``cross_attention_proj.{0,2}.weight``                  same                               ``to_cond_embed.{0,2}.weight``
``preprocess_conv.weight`` (C, C)                      same (C, C, 1)                     same (C, C, 1)
``postprocess_conv.weight`` (C, C)                     same (C, C, 1)                     same (C, C, 1)
``proj_in.weight`` / ``proj_out.weight``               same                               ``transformer.project_{in,out}.weight``
``transformer_blocks.N.norm{1,2,3}.{weight,bias}``     same                               ``transformer.layers.N.{pre_norm,
                                                                                          cross_attend_norm,ff_norm}.{gamma,beta}``
``….attn1.to_qkv.weight``                              ``attn1.to_{q,k,v}.weight``        ``….self_attn.to_qkv.weight``
``….attn1.to_out.0.weight``                            same                               ``….self_attn.to_out.weight``
``….attn2.to_q.weight``                                same                               ``….cross_attn.to_q.weight``
``….attn2.to_kv.weight``                               ``attn2.to_{k,v}.weight``          ``….cross_attn.to_kv.weight``
``….attn2.to_out.0.weight``                            same                               ``….cross_attn.to_out.weight``
``….attn{1,2}.norm_{q,k}.*`` (qk_norm "ln")            (not expressible)                  ``….{self,cross}_attn.{q,k}_norm.*``
``….ff.net.{0.proj,2}.*``                              same                               ``….ff.ff.{0.proj,2}.*``
(recomputed)                                                                              ``transformer.rotary_pos_emb.inv_freq``
=====================================================  =================================  ======================================

Conditioners:

======================================================  ============================================  =====================================================
ours                                                    diffusers                                     stable-audio-tools
======================================================  ============================================  =====================================================
``text_projection.*`` (only when widths differ)         same                                          ``conditioner.conditioners.prompt.proj_out.*``
``numbers.seconds_start.time_positional_embedding.*``   ``start_number_conditioner.time_positional_…``  ``conditioner.conditioners.seconds_start.embedder.embedding.*``
``numbers.seconds_total.time_positional_embedding.*``   ``end_number_conditioner.time_positional_…``    ``conditioner.conditioners.seconds_total.embedder.embedding.*``
======================================================  ============================================  =====================================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Literal

from audiogen_core.errors import MissingWeightsError, WeightsError
from audiogen_core.weights import cast_floats, load_into

import mlx.core as mx

from audiogen_stableaudio.conditioners import StableAudioConditioners
from audiogen_stableaudio.config import ConditioningConfig, DiTConfig
from audiogen_stableaudio.dit import StableAudioDiT

Layout = Literal["diffusers", "sat"]

SAT_DIT_PREFIX = "model.model."
SAT_CONDITIONER_PREFIX = "conditioner.conditioners."

_SAT_DIT_RENAMES = (
    ("timestep_features.", "time_proj."),
    ("to_timestep_embed.", "timestep_proj."),
    ("to_global_embed.", "global_proj."),
    ("to_cond_embed.", "cross_attention_proj."),
    ("transformer.project_in.", "proj_in."),
    ("transformer.project_out.", "proj_out."),
)
_SAT_BLOCK_RENAMES = (
    ("pre_norm.gamma", "norm1.weight"),
    ("pre_norm.beta", "norm1.bias"),
    ("cross_attend_norm.gamma", "norm2.weight"),
    ("cross_attend_norm.beta", "norm2.bias"),
    ("ff_norm.gamma", "norm3.weight"),
    ("ff_norm.beta", "norm3.bias"),
    ("self_attn.to_qkv.", "attn1.to_qkv."),
    ("self_attn.to_out.", "attn1.to_out.0."),
    ("self_attn.q_norm.", "attn1.norm_q."),
    ("self_attn.k_norm.", "attn1.norm_k."),
    ("cross_attn.to_q.", "attn2.to_q."),
    ("cross_attn.to_kv.", "attn2.to_kv."),
    ("cross_attn.to_out.", "attn2.to_out.0."),
    ("cross_attn.q_norm.", "attn2.norm_q."),
    ("cross_attn.k_norm.", "attn2.norm_k."),
    ("ff.ff.", "ff.net."),
)
_CONVS = ("preprocess_conv.weight", "postprocess_conv.weight")
_SAT_LAYER = re.compile(r"transformer\.layers\.(\d+)\.(.*)")
_BLOCK = re.compile(r"transformer_blocks\.(\d+)\.")


def detect_layout(weights: Mapping[str, object]) -> Layout:
    """``sat`` when the keys look like stable-audio-tools' (``model.model.`` /
    ``transformer.layers.`` / ``conditioner.``), else ``diffusers``."""
    for key in weights:
        if key.startswith((SAT_DIT_PREFIX, SAT_CONDITIONER_PREFIX, "transformer.layers.")):
            return "sat"
    return "diffusers"


def _take(weights: dict[str, mx.array], key: str, source: str) -> mx.array:
    try:
        return weights.pop(key)
    except KeyError:
        raise MissingWeightsError(f"{source}: missing weight {key}") from None


def _sat_dit_key(key: str) -> str:
    if m := _SAT_LAYER.match(key):
        n, rest = m.groups()
        for old, new in _SAT_BLOCK_RENAMES:
            if rest.startswith(old):
                rest = new + rest[len(old) :]
                break
        return f"transformer_blocks.{n}.{rest}"
    for old, new in _SAT_DIT_RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key  # unknown keys surface in load_into(strict)


def sanitize_dit(
    weights: Mapping[str, mx.array],
    layout: Layout | None = None,
    *,
    config: DiTConfig | None = None,
    source: str = "weights",
) -> dict[str, mx.array]:
    """Map a diffusers ``StableAudioDiTModel`` state dict or a stable-audio-tools checkpoint
    (whole, or its DiT part with ``model.model.`` stripped) onto ``StableAudioDiT`` names.
    ``layout`` defaults to ``detect_layout``. With ``config``, stable-audio-tools' saved rotary
    frequencies are checked against ``config.rotary_dim``. ``source`` names the file in errors."""
    layout = layout or detect_layout(weights)
    rest: dict[str, mx.array] = {}
    if layout == "sat":
        has_prefix = any(k.startswith(SAT_DIT_PREFIX) for k in weights)
        for key, value in weights.items():
            if has_prefix:
                if not key.startswith(SAT_DIT_PREFIX):
                    continue  # conditioner.*, pretransform.*: other components
                key = key[len(SAT_DIT_PREFIX) :]
            rest[_sat_dit_key(key)] = value
        inv_freq = rest.pop("transformer.rotary_pos_emb.inv_freq", None)
        if inv_freq is not None and config is not None and inv_freq.size * 2 != config.rotary_dim:
            raise WeightsError(
                f"{source}: rotary embedding over {inv_freq.size * 2} dims, config implies "
                f"{config.rotary_dim}"
            )
        if "time_proj.weight" in rest:
            rest["time_proj.weight"] = rest["time_proj.weight"].reshape(-1)
    elif layout == "diffusers":
        rest = dict(weights)
        for n in sorted({int(m.group(1)) for k in rest if (m := _BLOCK.match(k))}):
            p = f"transformer_blocks.{n}."
            rest[p + "attn1.to_qkv.weight"] = mx.concatenate(
                [_take(rest, f"{p}attn1.to_{x}.weight", source) for x in "qkv"]
            )
            rest[p + "attn2.to_kv.weight"] = mx.concatenate(
                [_take(rest, f"{p}attn2.to_{x}.weight", source) for x in "kv"]
            )
    else:
        raise WeightsError(f"{source}: unknown weights layout {layout!r}")
    if not rest:
        raise MissingWeightsError(f"{source}: no Stable Audio DiT weights")
    for key in _CONVS:
        if key in rest and rest[key].ndim == 3:
            rest[key] = rest[key][:, :, 0]  # Conv1d (out, in, 1) → Linear (out, in)
    return rest


def sanitize_conditioners(
    weights: Mapping[str, mx.array],
    layout: Layout | None = None,
    *,
    config: ConditioningConfig | None = None,
    source: str = "weights",
) -> dict[str, mx.array]:
    """Map diffusers' ``StableAudioProjectionModel`` state dict or a stable-audio-tools
    checkpoint's ``conditioner.conditioners.*`` onto ``StableAudioConditioners`` names. For
    diffusers, the start/end conditioners become the ids of ``config``'s first two number
    conditioners (default ``seconds_start`` / ``seconds_total``)."""
    layout = layout or detect_layout(weights)
    out: dict[str, mx.array] = {}
    if layout == "sat":
        for key, value in weights.items():
            if not key.startswith(SAT_CONDITIONER_PREFIX):
                continue
            name, _, rest = key[len(SAT_CONDITIONER_PREFIX) :].partition(".")
            if rest.startswith("proj_out."):
                out["text_projection." + rest[len("proj_out.") :]] = value
            elif rest.startswith("embedder.embedding."):
                tail = rest[len("embedder.embedding.") :]
                out[f"numbers.{name}.time_positional_embedding.{tail}"] = value
            else:
                out[f"{name}.{rest}"] = value  # unknown: surfaces in load_into(strict)
    elif layout == "diffusers":
        ids = config.number_ids if config is not None else ("seconds_start", "seconds_total")
        if len(ids) != 2:
            raise WeightsError(
                f"{source}: diffusers' projection model has two number conditioners, the config "
                f"lists {ids}"
            )
        starts = {"start_number_conditioner.": ids[0], "end_number_conditioner.": ids[1]}
        for key, value in weights.items():
            for prefix, name in starts.items():
                if key.startswith(prefix):
                    out[f"numbers.{name}.{key[len(prefix) :]}"] = value
                    break
            else:
                out[key] = value
    else:
        raise WeightsError(f"{source}: unknown weights layout {layout!r}")
    if not out:
        raise MissingWeightsError(f"{source}: no Stable Audio conditioner weights")
    return out


def load_dit(
    config: DiTConfig,
    weights: Mapping[str, mx.array],
    layout: Layout | None = None,
    *,
    dtype: mx.Dtype | None = None,
    source: str = "weights",
) -> StableAudioDiT:
    """A ``StableAudioDiT`` holding ``weights`` (either upstream layout), loaded strictly; float
    tensors cast to ``dtype`` when given (the model computes in its weights' dtype)."""
    model = StableAudioDiT(config)
    sanitized = sanitize_dit(weights, layout, config=config, source=source)
    if dtype is not None:
        sanitized = cast_floats(sanitized, dtype)
    load_into(model, sanitized, source=source, strict=True)
    return model


def load_conditioners(
    config: ConditioningConfig,
    weights: Mapping[str, mx.array],
    layout: Layout | None = None,
    *,
    dtype: mx.Dtype | None = None,
    source: str = "weights",
) -> StableAudioConditioners:
    model = StableAudioConditioners(config)
    sanitized = sanitize_conditioners(weights, layout, config=config, source=source)
    if dtype is not None:
        sanitized = cast_floats(sanitized, dtype)
    load_into(model, sanitized, source=source, strict=True)
    return model


__all__ = [
    "detect_layout",
    "load_conditioners",
    "load_dit",
    "sanitize_conditioners",
    "sanitize_dit",
]
