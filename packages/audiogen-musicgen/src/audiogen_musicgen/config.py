"""MusicGen decoder configuration, read from transformers' ``MusicgenDecoderConfig`` (the
``decoder`` part of a ``MusicgenConfig``; transformers ``models/musicgen/configuration_musicgen.py``)
or ``MusicgenMelodyDecoderConfig`` (``models/musicgen_melody``), whose composite adds
``num_chroma`` and ``chroma_length``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from audiogen_core.errors import InvalidInputError

# transformers ACT2FN names a MusicGen decoder config can select.
ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish")


@dataclass(frozen=True)
class DecoderConfig:
    vocab_size: int = 2048
    max_position_embeddings: int = 2048
    num_hidden_layers: int = 24
    ffn_dim: int = 4096
    num_attention_heads: int = 16
    hidden_size: int = 1024
    num_codebooks: int = 4
    audio_channels: int = 1
    activation_function: str = "gelu"
    scale_embedding: bool = False
    pad_token_id: int = 2048
    bos_token_id: int = 2048
    tie_word_embeddings: bool = False
    cross_attention_hidden_size: int | None = None
    # Width of the text encoder's states. Not part of the upstream decoder config: it comes from
    # the composite config's ``text_encoder`` (see ``from_composite``) and decides, as in
    # transformers' MusicgenForConditionalGeneration.__init__, whether ``enc_to_dec_proj`` exists.
    text_encoder_hidden_size: int | None = None
    layer_norm_eps: float = 1e-5  # torch nn.LayerNorm default; upstream does not configure it
    # Text models attend to the text through cross-attention. Melody (and style) models have none:
    # their conditioning is *prepended* to the decoder input and lives in the self-attention cache.
    cross_attention: bool = True
    # Melody only (from the composite config): chroma bins and the chroma prefix length.
    num_chroma: int | None = None
    chroma_length: int = 235

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise InvalidInputError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.audio_channels not in (1, 2):
            raise InvalidInputError(f"audio_channels must be 1 or 2, got {self.audio_channels}")
        if self.audio_channels == 2 and self.num_codebooks % 2:
            raise InvalidInputError(
                f"stereo needs an even number of codebooks, got {self.num_codebooks}"
            )
        if self.activation_function not in ACTIVATIONS:
            raise InvalidInputError(
                f"activation_function {self.activation_function!r} is not supported "
                f"(known: {', '.join(ACTIVATIONS)})"
            )
        if self.num_chroma is not None and (self.num_chroma < 1 or self.chroma_length < 1):
            raise InvalidInputError(
                f"num_chroma and chroma_length must be >= 1, got {self.num_chroma}, "
                f"{self.chroma_length}"
            )
        for name in ("pad_token_id", "bos_token_id"):
            token = getattr(self, name)
            if not isinstance(token, int) or not 0 <= token <= self.vocab_size:
                # The embedding tables have vocab_size + 1 rows (upstream: pad = bos = vocab_size);
                # a larger id would be gathered from outside the table, which no backend checks.
                raise InvalidInputError(
                    f"{name} {token} is outside 0..vocab_size ({self.vocab_size})"
                )
        if self.tie_word_embeddings:
            # Upstream cannot tie either: the tables have vocab_size + 1 rows, the heads vocab_size.
            raise InvalidInputError("tie_word_embeddings=True is not supported by MusicGen")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def codebooks_per_channel(self) -> int:
        return self.num_codebooks // self.audio_channels

    @property
    def codebook_delays(self) -> list[int]:
        """Delay (in steps) of each codebook: mono ``[0, 1, 2, 3]``; stereo interleaves left and
        right codebooks (index ``2k`` left, ``2k + 1`` right), so ``[0, 0, 1, 1, 2, 2, 3, 3]``."""
        return [k // self.audio_channels for k in range(self.num_codebooks)]

    @property
    def has_enc_to_dec_proj(self) -> bool:
        # transformers: the projection exists when the text width differs from the decoder width
        # and cross_attention_hidden_size is unset (melody has no such field: width only).
        return (
            self.text_encoder_hidden_size is not None
            and self.text_encoder_hidden_size != self.hidden_size
            and self.cross_attention_hidden_size is None
        )

    @property
    def is_melody(self) -> bool:
        return self.num_chroma is not None

    @property
    def has_audio_enc_to_dec_proj(self) -> bool:
        # MusicgenMelodyForConditionalGeneration.__init__: only when the widths differ.
        return self.num_chroma is not None and self.num_chroma != self.hidden_size

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DecoderConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})  # upstream configs carry extras

    @classmethod
    def from_audiocraft(cls, cfg: Mapping[str, Any], text_width: int | None) -> DecoderConfig:
        """From an audiocraft checkpoint's ``xp.cfg`` (its ``transformer_lm`` section and
        ``channels``; facebook/musicgen-style). Only prepend-conditioned LMs (no
        cross-attention) with MusicGen's layer layout are accepted; anything else is refused
        by name rather than loaded wrong."""
        lm = cfg.get("transformer_lm")
        if not isinstance(lm, Mapping):
            raise InvalidInputError("audiocraft config has no 'transformer_lm' section")
        expected = {
            "norm_first": True,
            "norm": "layer_norm",
            "positional_embedding": "sin",
            "positional_scale": 1.0,
            "max_period": 10000,
            "bias_attn": False,
            "bias_ff": False,
            "layer_scale": None,
            "cross_attention": False,
            "qk_layer_norm": False,
            "kv_repeat": 1,
            "activation": "gelu",
            "causal": True,
            "past_context": None,  # a causal window (masks and trims the streaming cache)
        }
        for key, value in expected.items():
            if key in lm and lm[key] != value:
                raise InvalidInputError(
                    f"audiocraft transformer_lm.{key} = {lm[key]!r} is not supported "
                    f"(MusicGen uses {value!r})"
                )
        dim = int(lm.get("dim", 1536))
        card = int(lm.get("card", 2048))
        channels = int(cfg.get("channels", 1))
        n_q = int(lm.get("n_q", 4))
        if channels != 1:
            raise InvalidInputError(f"audiocraft LM with {channels} channels is not supported")
        pattern = cfg.get("codebooks_pattern") or {}
        delay = pattern.get("delay") or {}
        delays = delay.get("delays", list(range(n_q)))
        if (
            pattern.get("modeling", "delay") != "delay"
            or list(delays) != list(range(n_q))
            or delay.get("empty_initial", 0)
            or delay.get("flatten_first", 0)
        ):
            raise InvalidInputError(
                f"audiocraft codebooks_pattern {pattern.get('modeling')!r} with delays "
                f"{list(delays)!r} (empty_initial {delay.get('empty_initial', 0)}, flatten_first "
                f"{delay.get('flatten_first', 0)}) is not supported (MusicGen: delay, "
                f"{list(range(n_q))}, 0, 0)"
            )
        fuser = cfg.get("fuser") or {}
        for mode in ("cross", "sum", "input_interpolate"):
            if fuser.get(mode):
                # builders.get_lm_model switches cross-attention on for a cross fuser; sum and
                # interpolate change the input. Only prepended conditions are implemented.
                raise InvalidInputError(
                    f"audiocraft fuser.{mode} = {fuser[mode]!r} is not supported (only prepend)"
                )
        return cls(
            vocab_size=card,
            num_hidden_layers=int(lm.get("num_layers", 48)),
            ffn_dim=int(float(lm.get("hidden_scale", 4)) * dim),
            num_attention_heads=int(lm.get("num_heads", 24)),
            hidden_size=dim,
            num_codebooks=n_q,
            audio_channels=channels,
            pad_token_id=card,
            bos_token_id=card,
            text_encoder_hidden_size=text_width,
            cross_attention=False,
        )

    @classmethod
    def from_composite(cls, d: Mapping[str, Any]) -> DecoderConfig:
        """From a full ``MusicgenConfig`` dict (``config.json`` of a hub MusicGen repo): the
        ``decoder`` section plus the text encoder's width."""
        if "decoder" not in d:
            raise InvalidInputError("MusicGen config has no 'decoder' section")
        text = d.get("text_encoder") or {}
        width = text.get("hidden_size", text.get("d_model"))
        extra: dict[str, Any] = {"text_encoder_hidden_size": width}
        if d.get("model_type") == "musicgen_melody":
            # MusicgenMelodyConfig defaults (configuration_musicgen_melody.py).
            extra.update(
                cross_attention=False,
                num_chroma=int(d.get("num_chroma", 12)),
                chroma_length=int(d.get("chroma_length", 235)),
            )
        return cls.from_dict({**d["decoder"], **extra})
