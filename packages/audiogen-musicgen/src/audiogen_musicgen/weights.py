"""Upstream MusicGen decoder weights -> ``MusicGenDecoder`` parameters.

Source keys are those of transformers' ``MusicgenForConditionalGeneration`` state dict:
``decoder.model.decoder.*`` (embeddings, layers, final norm), ``decoder.lm_heads.{k}.weight`` and
``enc_to_dec_proj.{weight,bias}`` (melody: also ``audio_enc_to_dec_proj.{weight,bias}``, and no
``encoder_attn``). ``text_encoder.*`` and ``audio_encoder.*`` belong to other
modules and are ignored here. Besides the prefix strip, tensors are fused (see ``decoder``):

=======================================================  ============================================
upstream (after ``decoder.model.decoder.``)              ours
=======================================================  ============================================
``embed_tokens.{k}.weight`` (V+1, D) for k < K           ``embed_tokens.weight`` (K·(V+1), D)
``layers.N.self_attn.{q,k,v}_proj.weight``               ``layers.N.self_attn.qkv_proj.weight``
``layers.N.encoder_attn.{k,v}_proj.weight``              ``layers.N.encoder_attn.kv_proj.weight``
``decoder.lm_heads.{k}.weight`` (V, D)                   ``lm_heads.weight`` (K·V, D)
``embed_positions.weights`` (non-persistent buffer)      dropped (recomputed)
=======================================================  ============================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from audiogen_core.errors import MissingWeightsError
from audiogen_core.weights import load_into

import mlx.core as mx

from audiogen_musicgen.config import DecoderConfig
from audiogen_musicgen.decoder import MusicGenDecoder

DECODER_PREFIX = "decoder.model.decoder."
HEADS_PREFIX = "decoder.lm_heads."
PROJ_PREFIX = "enc_to_dec_proj."
AUDIO_PROJ_PREFIX = "audio_enc_to_dec_proj."  # melody: chroma -> decoder width


def _take(weights: dict[str, mx.array], key: str, source: str) -> mx.array:
    try:
        return weights.pop(key)
    except KeyError:
        raise MissingWeightsError(f"{source}: missing weight {key}") from None


def _numbered(keys: set[str], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := regex.fullmatch(k))})


def sanitize(upstream: Mapping[str, mx.array], *, source: str = "weights") -> dict[str, mx.array]:
    """Map a MusicgenForConditionalGeneration state dict's decoder part onto our parameter names,
    fusing the tensors listed in the module docstring. ``source`` names the file in errors."""
    rest: dict[str, mx.array] = {}
    for key, value in upstream.items():
        if key.startswith(DECODER_PREFIX):
            rest[key[len(DECODER_PREFIX) :]] = value
        elif key.startswith(HEADS_PREFIX):
            rest["lm_heads." + key[len(HEADS_PREFIX) :]] = value
        elif key.startswith((PROJ_PREFIX, AUDIO_PROJ_PREFIX)):
            rest[key] = value
    if not rest:
        raise MissingWeightsError(f"{source}: no MusicGen decoder weights ({DECODER_PREFIX}*)")
    rest.pop("embed_positions.weights", None)

    out: dict[str, mx.array] = {}
    codebooks = _numbered(set(rest), r"embed_tokens\.(\d+)\.weight")
    if not codebooks:
        raise MissingWeightsError(f"{source}: missing weight {DECODER_PREFIX}embed_tokens.0.weight")
    out["embed_tokens.weight"] = mx.concatenate(
        [_take(rest, f"embed_tokens.{k}.weight", source) for k in range(len(codebooks))]
    )
    out["lm_heads.weight"] = mx.concatenate(
        [_take(rest, f"lm_heads.{k}.weight", source) for k in range(len(codebooks))]
    )
    for n in _numbered(set(rest), r"layers\.(\d+)\..*"):
        p = f"layers.{n}."
        out[p + "self_attn.qkv_proj.weight"] = mx.concatenate(
            [_take(rest, f"{p}self_attn.{x}_proj.weight", source) for x in "qkv"]
        )
        if f"{p}encoder_attn.k_proj.weight" in rest or f"{p}encoder_attn.v_proj.weight" in rest:
            out[p + "encoder_attn.kv_proj.weight"] = mx.concatenate(
                [_take(rest, f"{p}encoder_attn.{x}_proj.weight", source) for x in "kv"]
            )
    # Everything else keeps its (stripped) name; unknown leftovers surface in load_into(strict).
    out.update(rest)
    return out


# audiocraft LMModel (``state_dict.bin``'s ``best_state``; facebook/musicgen-style) -> ours. The
# names are those transformers' convert_musicgen_melody_transformers.py renames; the packed
# ``in_proj_weight`` is already q;k;v stacked like our ``qkv_proj``.
AUDIOCRAFT_TEXT_PROJ = "condition_provider.conditioners.description.output_proj."
_AUDIOCRAFT_LAYER = {
    "self_attn.in_proj_weight": "self_attn.qkv_proj.weight",
    "self_attn.out_proj.weight": "self_attn.out_proj.weight",
    "linear1.weight": "fc1.weight",
    "linear2.weight": "fc2.weight",
    "norm1.weight": "self_attn_layer_norm.weight",
    "norm1.bias": "self_attn_layer_norm.bias",
    "norm2.weight": "final_layer_norm.weight",
    "norm2.bias": "final_layer_norm.bias",
}


def sanitize_audiocraft(
    best_state: Mapping[str, mx.array], *, source: str = "weights"
) -> dict[str, mx.array]:
    """An audiocraft ``LMModel`` state dict (prepend-conditioned, no cross-attention, as in
    facebook/musicgen-style) -> our decoder parameters. The text conditioner's ``output_proj``
    becomes ``enc_to_dec_proj``; the other conditioners' keys (``condition_provider.*``, e.g.
    the style conditioner) are left to their own sanitizers. Keys this mapping does not know
    (cross-attention, layer scale, biases) are kept under their own names, so a strict load
    names them."""
    rest: dict[str, mx.array] = {}
    out: dict[str, mx.array] = {}
    for key, value in best_state.items():
        if key.startswith(AUDIOCRAFT_TEXT_PROJ):
            out["enc_to_dec_proj." + key[len(AUDIOCRAFT_TEXT_PROJ) :]] = value
        elif not key.startswith("condition_provider."):
            rest[key] = value
    codebooks = _numbered(set(rest), r"emb\.(\d+)\.weight")
    if not codebooks:
        raise MissingWeightsError(f"{source}: no audiocraft LM weights (emb.0.weight)")
    out["embed_tokens.weight"] = mx.concatenate(
        [_take(rest, f"emb.{k}.weight", source) for k in range(len(codebooks))]
    )
    out["lm_heads.weight"] = mx.concatenate(
        [_take(rest, f"linears.{k}.weight", source) for k in range(len(codebooks))]
    )
    for n in _numbered(set(rest), r"transformer\.layers\.(\d+)\..*"):
        for theirs, ours in _AUDIOCRAFT_LAYER.items():
            out[f"layers.{n}.{ours}"] = _take(rest, f"transformer.layers.{n}.{theirs}", source)
    for x in ("weight", "bias"):
        out[f"layer_norm.{x}"] = _take(rest, f"out_norm.{x}", source)
    out.update(rest)
    return out


def load_decoder(
    config: DecoderConfig, upstream: Mapping[str, mx.array], *, source: str = "weights"
) -> MusicGenDecoder:
    """A ``MusicGenDecoder`` holding ``upstream`` (transformers keys), loaded strictly."""
    model = MusicGenDecoder(config)
    load_into(model, sanitize(upstream, source=source), source=source, strict=True)
    return model
