"""The MusicGen decoder: a pre-LayerNorm transformer LM over K parallel EnCodec codebooks.

Ported from transformers ``models/musicgen/modeling_musicgen.py`` (``MusicgenForCausalLM`` and the
``enc_to_dec_proj`` of ``MusicgenForConditionalGeneration``) and ``models/musicgen_melody`` (the
same decoder without cross-attention: the conditioning is a *prefix* of the decoder input,
``[projected chroma | projected text | audio tokens]``, one causal sequence whose prefix logits
are dropped and whose K/V stay in the self-attention cache). Attribute names mirror the upstream
keys after stripping ``decoder.model.decoder.``, except where ``weights.sanitize`` fuses upstream
tensors into one (fewer primitives per decoding step; on a GPU the host cost of each primitive,
not the arithmetic, bounds the speed of a batch-2 decoder step):

- ``embed_tokens``: the K tables ``embed_tokens.{k}`` stacked into one ``(K·(V+1), D)`` table,
  looked up with per-codebook offsets, so the summed embedding is one gather and one sum;
- ``self_attn.qkv_proj``: ``q_proj``, ``k_proj``, ``v_proj`` concatenated;
- ``encoder_attn.kv_proj``: ``k_proj``, ``v_proj`` concatenated (run once per generation);
- ``lm_heads``: the K heads ``lm_heads.{k}`` as one ``Linear(D, K·V)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

from audiogen_core.fastmath import attention_cpu, gelu_fast

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from audiogen_musicgen import cuda_step
from audiogen_musicgen.config import DecoderConfig

_ACTIVATIONS: dict[str, Callable[[mx.array], mx.array]] = {
    # exact (erf) GELU, torch's nn.GELU() / ACT2FN["gelu"]; a fused rational erf on the CPU,
    # where MLX's erf is scalar libm
    "gelu": gelu_fast,
    "gelu_new": nn.gelu_approx,
    "gelu_pytorch_tanh": nn.gelu_approx,
    "relu": nn.relu,
    "silu": nn.silu,
    "swish": nn.silu,
}


@lru_cache(maxsize=8)
def _sinusoids(num_positions: int, dim: int) -> np.ndarray:
    """transformers' ``MusicgenSinusoidalPositionalEmbedding.get_embedding`` (tensor2tensor
    style): **cos first, then sin**, frequencies ``exp(-i·log(10000)/(half - 1))``, computed in
    float32 like torch."""
    half = dim // 2
    scale = np.float32(math.log(10000) / (half - 1))
    freqs = np.exp(np.arange(half, dtype=np.float32) * -scale)
    angles = np.arange(num_positions, dtype=np.float32)[:, None] * freqs[None, :]
    emb = np.concatenate([np.cos(angles), np.sin(angles)], axis=1)
    if dim % 2:
        emb = np.concatenate([emb, np.zeros((num_positions, 1), np.float32)], axis=1)
    return emb.astype(np.float32)


def project(linear: nn.Module, x: mx.array, matvec: bool = False) -> mx.array:
    """``linear(x)`` for ``x (B, T, D_in)``; with ``matvec`` and one position (a decode step),
    computed as ``W @ x_b`` for each row b, a batch of matrix-vector products sharing one
    (broadcast) matrix.

    Why: MLX's CUDA matmul hands an ``(M >= 2) x K`` block to cuBLASLt, which is stream-captured
    into MLX's CUDA graph per call, while an ``N == 1`` product with a stride-0 batch of
    matrices goes to MLX's own gemv kernel, added as one kernel node: 31-34 vs 11-12 µs of host
    time per decoder-shaped linear on an H100 (tools/bench/decode_step.py). The
    matrix is streamed once per row; rows after the first mostly hit L2. Dense float weights
    without bias only (quantized layers keep ``quantized_matmul``)."""
    if matvec and x.shape[1] == 1 and type(linear) is nn.Linear and "bias" not in linear:
        b, _, k = x.shape
        return (linear.weight @ x.reshape(b, k, 1)).reshape(b, 1, -1)
    return linear(x)


def _norm(ln: nn.LayerNorm) -> tuple[mx.array, mx.array, float]:
    return ln.weight, ln.bias, ln.eps


def _has_padding(mask: mx.array) -> bool:
    """Whether some row mixes real (1) and padded (0) tokens (one host read per generation)."""
    rows = np.asarray(mask) != 0
    return bool((rows.any(axis=1) & ~rows.all(axis=1)).any())


class KVCache:
    """Attention state for one generation, passed explicitly to ``MusicGenDecoder.step``.

    Self-attention K/V are preallocated for the whole generation, one ``(2, B, heads, max_len,
    head_dim)`` array per layer (keys, then values: one slice update writes both, and each half
    is a plain ``(B, heads, ·, head_dim)`` view for attention), written at the step offset with
    a slice update (which reuses the buffer once the previous array is no longer referenced)
    instead of growing by concatenation.
    Cross-attention K/V and the additive key mask are computed once from the encoder states.
    """

    def __init__(
        self,
        config: DecoderConfig,
        batch: int,
        max_len: int,
        cross_kv: list[tuple[mx.array, mx.array]] | None,
        cross_mask: mx.array | None,
        dtype: mx.Dtype = mx.float32,
        matvec: bool = False,
    ) -> None:
        shape = (2, batch, config.num_attention_heads, max_len, config.head_dim)
        self.matvec = matvec  # one-position projections as batched matvecs (see ``project``)
        self.kv = [mx.zeros(shape, dtype) for _ in range(config.num_hidden_layers)]
        self.cross_kv = cross_kv  # None for prefix-conditioned (melody) decoders
        self.cross_mask = cross_mask
        self.max_len = max_len
        self.offset = 0

    def update(self, layer: int, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        """Write ``k``, ``v`` (B, heads, T, head_dim) at the current offset and return the
        valid prefix of the layer's cache (the offset advances in ``MusicGenDecoder.step``)."""
        start, end = self.offset, self.offset + k.shape[2]
        self.kv[layer][:, :, :, start:end, :] = mx.stack([k, v])
        kv = self.kv[layer]
        return kv[0, :, :, :end, :], kv[1, :, :, :end, :]


class SelfAttention(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.scale = config.head_dim**-0.5
        self.qkv_proj = nn.Linear(d, 3 * d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)

    def __call__(self, x: mx.array, cache: KVCache, layer: int) -> mx.array:
        b, t, _ = x.shape
        # reshape -> transpose -> one Split: 3 primitives (indexing qkv[i] costs a Gather each).
        qkv = (
            project(self.qkv_proj, x, cache.matvec)
            .reshape(b, t, 3 * self.num_heads, -1)
            .transpose(0, 2, 1, 3)
        )
        q, k, v = mx.split(qkv, 3, axis=1)
        k, v = cache.update(layer, k, v)
        # Keys end at the query block's end, so the bottom-right aligned "causal" mask is exact;
        # one query needs no mask at all.
        if t == 1 and mx.default_device().type == mx.DeviceType.cpu:
            # MLX's CPU SDPA is bound by its scalar exp (2 × heads × up to 1500 keys per layer
            # and step): matmuls and a polynomial-exp softmax instead.
            out = attention_cpu(q, k, v, self.scale)
        else:
            mask = "causal" if t > 1 else None
            out = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.scale, mask=mask)
        return project(self.out_proj, out.transpose(0, 2, 1, 3).reshape(b, t, -1), cache.matvec)

    def static(
        self, x: mx.array, kv: mx.array, offset: mx.array, mask: mx.array, matvec: bool = False
    ) -> tuple[mx.array, mx.array]:
        """One query against the whole preallocated cache: the write position is an array and
        ``mask`` hides the unwritten tail, so shapes never change and the step compiles once."""
        b, t, _ = x.shape
        qkv = project(self.qkv_proj, x, matvec)
        qkv = qkv.reshape(b, t, 3 * self.num_heads, -1).transpose(0, 2, 1, 3)
        q, k, v = mx.split(qkv, 3, axis=1)
        kv = mx.slice_update(kv, mx.stack([k, v]), offset, axes=(3,))
        out = mx.fast.scaled_dot_product_attention(q, kv[0], kv[1], scale=self.scale, mask=mask)
        out = project(self.out_proj, out.transpose(0, 2, 1, 3).reshape(b, t, -1), matvec)
        return out, kv


def _dense_weight(linear: nn.Module) -> mx.array:
    """A linear's weight ``(out, in)`` as a dense array, dequantized if it was quantized."""
    if isinstance(linear, nn.QuantizedLinear):
        return mx.dequantize(
            linear.weight,
            linear.scales,
            linear.get("biases"),
            group_size=linear.group_size,
            bits=linear.bits,
        )
    weight: mx.array = linear.weight
    return weight


class CrossAttention(nn.Module):
    """Cross-attention to the (fixed) text states.

    The keys and values never change during a generation, so the per-head projections fold into
    them once (``fold``): with ``K_h``, ``V_h`` the S text keys / values of head h,
    ``scores_h = scale · (x W_q,h^T) K_h^T = x M_h`` with ``M_h = scale · W_q,h^T K_h^T``
    (D × S), and the output ``Σ_h softmax(scores_h) V_h W_o,h^T = P · VW`` with
    ``VW_h = V_h W_o,h^T`` (S × D), kept transposed (``VW^T``, D × H·S) so that both products
    are matrix-vector products with a row-major matrix (MLX's gemv kernel on a GPU). A step then costs one (D × H·S) and one (H·S × D) product and
    a softmax instead of q_proj, attention and out_proj (D × D each): fewer kernels and, while
    H·S <= D (prompts up to head_dim tokens), fewer bytes. On a GPU a decoder step is bound by
    kernel count, and this was measured in tools/bench/musicgen.py.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.scale = config.head_dim**-0.5
        self.q_proj = nn.Linear(d, d, bias=False)
        self.kv_proj = nn.Linear(d, 2 * d, bias=False)
        self.out_proj = nn.Linear(d, d, bias=False)

    def keys_values(self, states: mx.array) -> tuple[mx.array, mx.array]:
        b, s, _ = states.shape
        kv = self.kv_proj(states).reshape(b, s, 2 * self.num_heads, -1).transpose(0, 2, 1, 3)
        k, v = mx.split(kv, 2, axis=1)
        return k, v

    def fold(self, k: mx.array, v: mx.array) -> tuple[mx.array, mx.array]:
        """``(MT, VWT)``, ``(B, H·S, D)`` and ``(B, D, H·S)``, from keys / values
        ``(B, H, S, d)``: ``MT`` is ``M`` transposed (row ``h·S + s`` = ``scale · K_h[s] W_q,h``)
        and ``VWT`` is ``VW`` transposed. Both are products of the small keys / values with a
        contiguous view of the weights, broadcast over the batch (no transposing copy of a
        weight). Computed in float32, stored in the keys' dtype."""
        b, h, s, d = k.shape
        wq = _dense_weight(self.q_proj).astype(mx.float32)  # (D, D): rows h·d .. (h+1)·d
        wo = _dense_weight(self.out_proj).astype(mx.float32)  # (D, D): columns likewise
        width = wq.shape[1]
        mt = (k.astype(mx.float32) @ wq.reshape(h, d, width)) * self.scale  # (B, H, S, D)
        # VW_h^T = W_o,h V_h^T with W_o,h a column block of wo, read in place (strided rows):
        # as (H, d, D) the weight would need a transposing copy, 5x slower on the CPU.
        wo_h = wo.reshape(width, h, d).transpose(1, 0, 2)  # (H, D, d), no copy
        vwt = wo_h @ v.astype(mx.float32).swapaxes(-1, -2)  # (B, H, D, S)
        vwt = vwt.transpose(0, 2, 1, 3).reshape(b, width, h * s)  # (B, D, H·S), column h·S + s
        return mt.reshape(b, h * s, width).astype(k.dtype), vwt.astype(k.dtype)

    def __call__(
        self,
        x: mx.array,
        kv: tuple[mx.array, mx.array],
        mask: mx.array | None,
        matvec: bool = False,
    ) -> mx.array:
        b, t, _ = x.shape
        if kv[0].ndim == 3:  # folded (MT, VWT); keys / values are 4-D
            mt, vwt = kv
            # x (B,1,D) against MT^T, a transposed view: already MLX's gemv on a GPU.
            scores = (x @ mt.swapaxes(-1, -2)).reshape(b, t, self.num_heads, -1)  # (B,t,H,S)
            if mask is not None:
                scores = scores + mask  # (B, 1, 1, S)
            p = mx.softmax(scores, axis=-1, precise=True).reshape(b, t, -1)
            if matvec and t == 1:
                return (vwt @ p.reshape(b, -1, 1)).reshape(b, 1, -1)
            return p @ vwt.swapaxes(-1, -2)
        q = project(self.q_proj, x, matvec).reshape(b, t, self.num_heads, -1).transpose(0, 2, 1, 3)
        out = mx.fast.scaled_dot_product_attention(q, kv[0], kv[1], scale=self.scale, mask=mask)
        return project(self.out_proj, out.transpose(0, 2, 1, 3).reshape(b, t, -1), matvec)


class DecoderLayer(nn.Module):
    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.hidden_size
        eps = config.layer_norm_eps
        self.self_attn = SelfAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.cross_attention = config.cross_attention
        if config.cross_attention:
            self.encoder_attn = CrossAttention(config)
            self.encoder_attn_layer_norm = nn.LayerNorm(d, eps=eps)
        self.fc1 = nn.Linear(d, config.ffn_dim, bias=False)
        self.fc2 = nn.Linear(config.ffn_dim, d, bias=False)
        self.final_layer_norm = nn.LayerNorm(d, eps=eps)
        self.activation = _ACTIVATIONS[config.activation_function]
        self.act_name = config.activation_function

    def __call__(self, x: mx.array, cache: KVCache, layer: int) -> mx.array:
        x = x + self.self_attn(self.self_attn_layer_norm(x), cache, layer)
        if self.cross_attention:
            if cache.cross_kv is None:
                raise ValueError("this decoder cross-attends: build its cache with text states")
            x = x + self.encoder_attn(
                self.encoder_attn_layer_norm(x),
                cache.cross_kv[layer],
                cache.cross_mask,
                cache.matvec,
            )
        return x + self.feed_forward(x, cache.matvec)

    def feed_forward(self, x: mx.array, matvec: bool) -> mx.array:
        h = self.activation(project(self.fc1, self.final_layer_norm(x), matvec))
        return project(self.fc2, h, matvec)

    def static(
        self,
        x: mx.array,
        kv: mx.array,
        offset: mx.array,
        mask: mx.array,
        cross_kv: tuple[mx.array, mx.array] | None,
        cross_mask: mx.array | None,
        matvec: bool = False,
    ) -> tuple[mx.array, mx.array]:
        h, kv = self.self_attn.static(self.self_attn_layer_norm(x), kv, offset, mask, matvec)
        x = x + h
        if cross_kv is not None:
            x = x + self.encoder_attn(self.encoder_attn_layer_norm(x), cross_kv, cross_mask, matvec)
        return x + self.feed_forward(x, matvec), kv

    def fused(
        self,
        x: mx.array,
        kv: mx.array,
        offset: mx.array,
        cross_kv: tuple[mx.array, mx.array] | None,
        cross_mask: mx.array | None,
    ) -> mx.array:
        """``static`` for ``x (B, D)`` as 7 primitives with the kernels of ``cuda_step`` (MLX's
        CUDA backend; see ``MusicGenDecoder.can_fuse``). The attention kernel writes this
        position's keys / values into ``kv`` in place; ``cross_mask`` is ``(B, S)`` here."""
        attn = self.self_attn
        b, d = x.shape
        heads = attn.num_heads
        qkv = cuda_step.gemv(x, attn.qkv_proj.weight, norm=_norm(self.self_attn_layer_norm))
        att = cuda_step.attention(qkv, kv, offset)
        x = cuda_step.gemv(att, attn.out_proj.weight, residual=x)
        if cross_kv is not None:
            cross = self.encoder_attn
            norm = _norm(self.encoder_attn_layer_norm)
            if cross_kv[0].ndim == 3:  # folded: (MT, VWT)
                mt, vwt = cross_kv
                scores = cuda_step.gemv(x, mt, norm=norm, per_row=True)
                x = cuda_step.folded_cross(scores, vwt, x, heads, cross_mask)
            else:
                q = cuda_step.gemv(x, cross.q_proj.weight, norm=norm)
                q = q.reshape(b, 1, heads, -1).transpose(0, 2, 1, 3)
                mask = None if cross_mask is None else cross_mask[:, None, None, :]
                out = mx.fast.scaled_dot_product_attention(
                    q, cross_kv[0], cross_kv[1], scale=cross.scale, mask=mask
                )
                x = cuda_step.gemv(out.reshape(b, d), cross.out_proj.weight, residual=x)
        h = cuda_step.gemv(
            x, self.fc1.weight, norm=_norm(self.final_layer_norm), activation=self.act_name
        )
        return cuda_step.gemv(h, self.fc2.weight, residual=x)


class MusicGenDecoder(nn.Module):
    """Delay-patterned codebook LM; attribute names mirror upstream keys so loading is a rename
    (plus the fusions listed in the module docstring)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        d, k, v = config.hidden_size, config.num_codebooks, config.vocab_size
        self.embed_tokens = nn.Embedding(k * (v + 1), d)
        self.layers = [DecoderLayer(config) for _ in range(config.num_hidden_layers)]
        self.layer_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.lm_heads = nn.Linear(d, k * v, bias=False)
        if config.has_enc_to_dec_proj and config.text_encoder_hidden_size is not None:
            # nn.Linear default in transformers: this one has a bias.
            self.enc_to_dec_proj = nn.Linear(config.text_encoder_hidden_size, d)
        if config.has_audio_enc_to_dec_proj and config.num_chroma is not None:
            self.audio_enc_to_dec_proj = nn.Linear(config.num_chroma, d)  # melody: chroma -> D
        # Upstream computes embed_scale from scale_embedding but never applies it: neither do we.
        self._codebook_offsets = mx.arange(k, dtype=mx.int32)[:, None] * (v + 1)
        self._positions: mx.array | None = None
        # CrossAttention.fold: None = for prompts with H·S <= D, True = always, False = never.
        self.fold_cross_attention: bool | None = None
        # ``project``'s batched matvecs for decode steps: None = on MLX's CUDA backend for up
        # to MATVEC_MAX_ROWS rows (where it was measured; beyond that cuBLAS's one pass over the
        # weights should win), True / False = always / never.
        self.matvec: bool | None = None

    MATVEC_MAX_ROWS = 8

    def use_matvec(self, batch: int) -> bool:
        if self.matvec is not None:
            return self.matvec
        return cuda_step.available() and batch <= self.MATVEC_MAX_ROWS

    def positions(self, length: int) -> mx.array:
        """The sinusoid table, at least ``length`` rows (upstream also grows it past
        ``max_position_embeddings`` on demand); built once, not per step."""
        if self._positions is None or self._positions.shape[0] < length:
            n = max(self.config.max_position_embeddings, length)
            self._positions = mx.array(_sinusoids(n, self.config.hidden_size))
        return self._positions

    def encoder_states(
        self, encoder_hidden_states: mx.array, encoder_attention_mask: mx.array | None
    ) -> mx.array:
        """The cross-attention input: ``enc_to_dec_proj`` (when configured), then pads zeroed by
        the mask, exactly as ``MusicgenForConditionalGeneration.forward``."""
        states = encoder_hidden_states
        if self.config.has_enc_to_dec_proj:
            states = self.enc_to_dec_proj(states)
        if encoder_attention_mask is not None:
            states = states * encoder_attention_mask[..., None].astype(states.dtype)
        return states

    def melody_prefix(
        self, text_states: mx.array | None, text_mask: mx.array | None, chroma: mx.array
    ) -> mx.array:
        """The melody decoder's input prefix ``(B, chroma_length + S, D)``, as
        ``MusicgenMelodyForConditionalGeneration._prepare_encoder_hidden_states_kwargs_for_generation``
        builds it: the one-hot ``chroma`` (B, frames, num_chroma) through
        ``audio_enc_to_dec_proj``, tiled (the whole sequence repeated) up to ``chroma_length``
        frames and cut there; then the text states (B, S, D_text) through ``enc_to_dec_proj``
        with pads zeroed by the mask (after the projection, so a pad is a zero vector, not the
        bias). ``text_states`` None: the chroma alone."""
        config = self.config
        if not config.is_melody:
            raise ValueError("melody_prefix needs a melody decoder (num_chroma in its config)")
        audio = chroma.astype(self.lm_heads.weight.dtype)
        if config.has_audio_enc_to_dec_proj:
            audio = self.audio_enc_to_dec_proj(audio)
        frames = audio.shape[1]
        if frames < config.chroma_length:
            audio = mx.tile(audio, (1, math.ceil(config.chroma_length / frames), 1))
        audio = audio[:, : config.chroma_length]
        if text_states is None:
            return audio
        return mx.concatenate([audio, self.encoder_states(text_states, text_mask)], axis=1)

    def make_cache(
        self,
        encoder_hidden_states: mx.array | None,
        encoder_attention_mask: mx.array | None,
        max_len: int,
        *,
        batch: int | None = None,
        dtype: mx.Dtype | None = None,
    ) -> KVCache:
        """A cache for ``max_len`` decoder positions with the cross-attention K/V precomputed.

        ``encoder_hidden_states`` are the text encoder's outputs (B, S, D_text) before
        ``enc_to_dec_proj``; ``encoder_attention_mask`` (B, S) marks real tokens with 1. A row of
        all zeros (CFG's unconditional branch) attends uniformly to zero values, giving zero, as
        transformers does. Decoders without cross-attention (melody) take None and ``batch``;
        their ``max_len`` must include the prefix."""
        if not self.config.cross_attention:
            if batch is None:
                raise ValueError("a decoder without cross-attention needs make_cache(batch=...)")
            dtype = dtype or self.lm_heads.weight.dtype
            return KVCache(self.config, batch, max_len, None, None, dtype, self.use_matvec(batch))
        if encoder_hidden_states is None:
            raise ValueError("this decoder cross-attends to text: pass encoder_hidden_states")
        states = self.encoder_states(encoder_hidden_states, encoder_attention_mask)
        dtype = states.dtype
        mask = None
        # A key mask only changes rows that mix real and padded tokens. A row of all pads (CFG's
        # unconditional branch) has zero states, so zero keys and values (the projections have
        # no bias): its output is zero with or without the mask. Without padding in the batch
        # (one prompt, or equal lengths) the mask is dropped: SDPA without an array mask is
        # markedly faster on a GPU (measured below in tools/bench/musicgen.py).
        if encoder_attention_mask is not None and _has_padding(encoder_attention_mask):
            keep = encoder_attention_mask.astype(mx.bool_)[:, None, None, :]
            # Finite, like transformers' finfo.min: a fully masked row stays NaN-free.
            mask = mx.where(keep, mx.array(0.0, dtype), mx.array(mx.finfo(dtype).min, dtype))
        cross_kv = [layer.encoder_attn.keys_values(states) for layer in self.layers]
        fold = self.fold_cross_attention
        if fold is None:  # auto: when it also reads fewer bytes than q_proj + out_proj
            fold = self.config.num_attention_heads * states.shape[1] <= self.config.hidden_size
        if fold:
            folded = []
            for layer, (k, v) in zip(self.layers, cross_kv, strict=True):
                folded.append(layer.encoder_attn.fold(k, v))
                # One layer at a time: fold's float32 copies of W_q / W_o are transient, and a
                # lazy graph over every layer would hold all of them at once (~1.5 GB for
                # musicgen-large in fp16) before the first step.
                mx.eval(folded[-1])
            cross_kv = folded
        batch = states.shape[0]
        return KVCache(self.config, batch, max_len, cross_kv, mask, dtype, self.use_matvec(batch))

    def embed(self, input_ids: mx.array, offset: int, prefix: mx.array | None = None) -> mx.array:
        """Summed codebook embeddings plus positions: ``(B, K, T)`` ids -> ``(B, T, D)``; with a
        ``prefix`` (B, P, D) it goes first and the positions cover both: ``(B, P + T, D)``."""
        x = self.embed_tokens(input_ids + self._codebook_offsets).sum(axis=1)
        if prefix is not None:
            x = mx.concatenate([prefix.astype(x.dtype), x], axis=1)
        t = x.shape[1]
        return x + self.positions(offset + t)[offset : offset + t].astype(x.dtype)

    def step(self, input_ids: mx.array, cache: KVCache, prefix: mx.array | None = None) -> mx.array:
        """Run ``(B, K, T)`` ids at the cache's offset; returns logits ``(B, K, T, V)`` and
        advances the offset by T. A ``prefix`` (B, P, D) of conditioning states (melody) runs
        first, in the same causal pass; its logits are not computed and the offset advances by
        P + T."""
        b, k, t = input_ids.shape
        p = 0 if prefix is None else prefix.shape[1]
        if cache.offset + p + t > cache.max_len:
            raise ValueError(
                f"KV cache holds {cache.max_len} positions, need {cache.offset + p + t}"
            )
        x = self.embed(input_ids, cache.offset, prefix)
        for i, layer in enumerate(self.layers):
            x = layer(x, cache, i)
        cache.offset += p + t
        if p:
            x = x[:, p:]
        logits = project(self.lm_heads, self.layer_norm(x), cache.matvec)  # (B, T, K·V)
        return logits.reshape(b, t, k, -1).transpose(0, 2, 1, 3)

    def static_step(
        self,
        input_ids: mx.array,
        offset: mx.array,
        kv: list[mx.array],
        cross_kv: list[tuple[mx.array, mx.array]] | None,
        cross_mask: mx.array | None,
        matvec: bool = False,
    ) -> tuple[mx.array, list[mx.array]]:
        """``step`` for one position with fixed shapes, for ``mx.compile``: ``offset`` is an
        int32 array ``(1,)``, the caches are inputs and outputs (written with a slice update
        that reuses the buffer once the caller drops the old array). Returns logits
        ``(B, K, 1, V)`` and the new caches. ``matvec``: see ``project``."""
        b, k, _ = input_ids.shape
        max_len = kv[0].shape[3]
        x = self._embed_at(input_ids, offset, max_len)
        # Keys past the write position are hidden (additive mask, broadcast over batch/heads).
        visible = mx.arange(max_len, dtype=mx.int32) <= offset
        mask = mx.where(visible, mx.array(0.0, x.dtype), mx.array(-mx.inf, x.dtype))
        new_kv = []
        for i, layer in enumerate(self.layers):
            cross = None if cross_kv is None else cross_kv[i]
            x, layer_kv = layer.static(x, kv[i], offset, mask, cross, cross_mask, matvec)
            new_kv.append(layer_kv)
        logits = project(self.lm_heads, self.layer_norm(x), matvec)  # (B, 1, K·V)
        return logits.reshape(b, 1, k, -1).transpose(0, 2, 1, 3), new_kv

    def fused_step(
        self,
        input_ids: mx.array,
        offset: mx.array,
        kv: list[mx.array],
        cross_kv: list[tuple[mx.array, mx.array]] | None,
        cross_mask: mx.array | None,
    ) -> mx.array:
        """``static_step`` with each layer as 7 primitives on the fused CUDA kernels of
        ``cuda_step`` (a decode step on MLX's CUDA backend is bound by the host cost per
        primitive; see that module). Only where ``can_fuse`` says so. Returns the logits; the
        caches ``kv`` (``KVCache.kv``: evaluated, row-contiguous, referenced by nothing else
        that reads them) get this position's keys and values **in place**."""
        b, k, _ = input_ids.shape
        x = self._embed_at(input_ids, offset, kv[0].shape[3]).reshape(b, -1)
        if cross_mask is not None:  # (B, 1, 1, S) -> (B, S), once for all layers
            cross_mask = cross_mask.reshape(b, -1)
        for i, layer in enumerate(self.layers):
            cross = None if cross_kv is None else cross_kv[i]
            x = layer.fused(x, kv[i], offset, cross, cross_mask)
        logits = cuda_step.gemv(x, self.lm_heads.weight, norm=_norm(self.layer_norm))
        return logits.reshape(b, k, 1, -1)

    def can_fuse(self, cache: KVCache) -> bool:
        """Whether ``fused_step`` serves this cache: MLX's CUDA backend, float weights (not
        quantized) in a dtype whose rows are whole 16-byte vectors, a batch of at most
        ``cuda_step.MAX_ROWS`` rows and a folded cross-attention small enough for its kernel's
        shared memory (or an unfolded one)."""
        config = self.config
        dtype = self.lm_heads.weight.dtype
        batch = cache.kv[0].shape[1]
        linears = [
            m for _, m in self.named_modules() if isinstance(m, nn.Linear | nn.QuantizedLinear)
        ]
        if not (
            cuda_step.compiler_available()
            and batch <= cuda_step.MAX_ROWS
            and config.activation_function in cuda_step.ACTIVATIONS
            and all(type(m) is nn.Linear for m in linears)
            and cuda_step.supported(dtype, config.hidden_size, config.ffn_dim)
            and config.head_dim == 64  # the attention kernel keeps q and its sum in registers
        ):
            return False
        if cache.cross_kv is not None and cache.cross_kv[0][0].ndim == 3:
            hs = cache.cross_kv[0][0].shape[1]
            return hs <= cuda_step.MAX_FOLDED and cuda_step.supported(dtype, hs)
        return True

    def _embed_at(self, input_ids: mx.array, offset: mx.array, max_len: int) -> mx.array:
        """``embed`` of one position given as an int32 array ``(1,)``: ``(B, 1, D)``."""
        x = self.embed_tokens(input_ids + self._codebook_offsets).sum(axis=1)
        return x + mx.take(self.positions(max_len), offset, axis=0).astype(x.dtype)[None]

    def __call__(
        self,
        input_ids: mx.array,
        encoder_hidden_states: mx.array | None = None,
        encoder_attention_mask: mx.array | None = None,
        *,
        prefix: mx.array | None = None,
    ) -> mx.array:
        """Teacher forcing: ``(B, K, T)`` ids -> logits ``(B, K, T, V)`` (causal). Text models
        take the text states and mask; melody models the ``prefix`` (``melody_prefix``)."""
        b, _, t = input_ids.shape
        p = 0 if prefix is None else prefix.shape[1]
        cache = self.make_cache(encoder_hidden_states, encoder_attention_mask, p + t, batch=b)
        return self.step(input_ids, cache, prefix)
