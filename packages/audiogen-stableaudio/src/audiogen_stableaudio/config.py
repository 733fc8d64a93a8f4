"""Stable Audio DiT and conditioning configuration, read from either upstream format.

- diffusers: ``transformer/config.json`` (``StableAudioDiTModel``) and
  ``projection_model/config.json`` (``StableAudioProjectionModel``);
- stable-audio-tools: ``model_config.json`` (``model.diffusion.config`` for the DiT,
  ``model.conditioning.configs`` plus ``model.diffusion.{cross_attention,global}_cond_ids`` for the
  conditioners).

Which number conditioners exist (1.0: ``seconds_start`` and ``seconds_total``; small only
``seconds_total``) is read from the config, never inferred from a variant name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from audiogen_core.errors import InvalidInputError

QK_NORMS = ("none", "ln")

# stable-audio-tools DiffusionTransformer / ContinuousTransformer options this port does not
# implement, with the value that means "off". A config setting one of them to anything else is
# refused instead of silently computing something different.
_SAT_UNSUPPORTED = {
    "patch_size": 1,
    "input_concat_dim": 0,
    "prepend_cond_dim": 0,
    "transformer_type": "continuous_transformer",
    "global_cond_type": "prepend",
    "timestep_cond_type": "global",
    "project_global_cond": True,
    "num_memory_tokens": 0,
    "use_sinusoidal_emb": False,
    "use_abs_pos_emb": False,
    "rotary_pos_emb": True,
    "conformer": False,
    "causal": False,
    "final_cross_attn_ix": -1,
    "layer_scale": False,
    "remove_norms": False,
    "add_rope": False,
}
_SAT_ATTN_UNSUPPORTED = {"differential": False, "feat_scale": False}


def _fields(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


@dataclass(frozen=True)
class DiTConfig:
    """Shapes of the Stable Audio diffusion transformer (defaults: Stable Audio Open 1.0).

    ``cond_token_dim`` is the width of the conditioner tokens fed to cross-attention;
    ``cross_attention_dim`` their width after the DiT's own token MLP (``cross_attention_proj``):
    equal to ``cond_token_dim`` in 1.0 (``project_cond_tokens: false``), ``embed_dim`` in small.
    Cross-attention keys/values have ``num_key_value_heads`` heads (upstream:
    ``cross_attention_dim // head_dim``), repeated to ``num_heads``.
    """

    io_channels: int = 64
    embed_dim: int = 1536
    depth: int = 24
    num_heads: int = 24
    num_key_value_heads: int = 12
    cond_token_dim: int = 768
    cross_attention_dim: int = 768
    global_cond_dim: int = 1536
    timestep_features_dim: int = 256
    qk_norm: str = "none"
    sample_size: int = 1024
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        for name in ("io_channels", "embed_dim", "depth", "num_heads", "num_key_value_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"DiT {name} must be a positive integer, got {value!r}")
        if self.embed_dim % self.num_heads:
            raise InvalidInputError(
                f"DiT embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}"
            )
        if self.num_heads % self.num_key_value_heads:
            raise InvalidInputError(
                f"DiT num_heads {self.num_heads} is not a multiple of the cross-attention "
                f"key/value heads {self.num_key_value_heads}"
            )
        if self.qk_norm not in QK_NORMS:
            raise InvalidInputError(f"DiT qk_norm {self.qk_norm!r} not supported ({QK_NORMS})")
        if self.timestep_features_dim % 2:
            raise InvalidInputError("DiT timestep_features_dim must be even")
        if self.cond_token_dim < 1:
            raise InvalidInputError("DiT without cross-attention (cond_token_dim 0) not supported")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def rotary_dim(self) -> int:
        """Leading dims of each head that get rotary position embedding.

        stable-audio-tools' ContinuousTransformer uses ``max(head_dim // 2, 32)``; diffusers'
        pipeline passes ``head_dim // 2``. They agree for head_dim >= 64 (every released
        checkpoint: 1.0 has 64, small 128); the checkpoints were trained with the former.
        """
        return min(max(self.head_dim // 2, 32), self.head_dim)

    @property
    def has_global_cond(self) -> bool:
        return self.global_cond_dim > 0

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DiTConfig:
        """Our own field names, a diffusers ``StableAudioDiTModel`` config.json, a full
        stable-audio-tools ``model_config.json`` or its ``model.diffusion.config`` section;
        unknown keys are ignored."""
        if isinstance(d.get("model"), Mapping):
            diffusion = d["model"].get("diffusion")
            if not isinstance(diffusion, Mapping) or not isinstance(
                diffusion.get("config"), Mapping
            ):
                raise InvalidInputError("model_config.json has no model.diffusion.config")
            if diffusion.get("type", "dit") != "dit":
                raise InvalidInputError(f"diffusion type {diffusion.get('type')!r} is not a DiT")
            pretransform = (d["model"].get("pretransform") or {}).get("config") or {}
            ratio = int(pretransform.get("downsampling_ratio", 2048))
            latents = int(d["sample_size"]) // ratio if "sample_size" in d else None
            return cls.from_stable_audio_tools(diffusion["config"], sample_size=latents)
        if "embed_dim" in d or ("io_channels" in d and "num_attention_heads" not in d):
            return cls.from_stable_audio_tools(d)
        if "num_attention_heads" in d or "attention_head_dim" in d:
            return cls.from_diffusers(d)
        names = _fields(cls)
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_diffusers(cls, d: Mapping[str, Any]) -> DiTConfig:
        """diffusers ``StableAudioDiTModel`` config (defaults as its ``__init__``)."""
        heads = int(d.get("num_attention_heads", 24))
        head_dim = int(d.get("attention_head_dim", 64))
        channels = int(d.get("in_channels", 64))
        if int(d.get("out_channels", channels)) != channels:
            raise InvalidInputError("DiT in_channels != out_channels is not supported")
        sample_size = d.get("sample_size", 1024)
        return cls(
            io_channels=channels,
            embed_dim=heads * head_dim,
            depth=int(d.get("num_layers", 24)),
            num_heads=heads,
            num_key_value_heads=int(d.get("num_key_value_attention_heads", 12)),
            cond_token_dim=int(d.get("cross_attention_input_dim", 768)),
            cross_attention_dim=int(d.get("cross_attention_dim", 768)),
            global_cond_dim=int(d.get("global_states_input_dim", 1536)),
            timestep_features_dim=int(d.get("time_proj_dim", 256)),
            sample_size=int(sample_size) if sample_size is not None else 1024,
        )

    @classmethod
    def from_stable_audio_tools(
        cls, d: Mapping[str, Any], *, sample_size: int | None = None
    ) -> DiTConfig:
        """stable-audio-tools ``DiffusionTransformer`` kwargs (``model.diffusion.config``;
        defaults as its ``__init__``); ``sample_size`` is the latent length when known."""
        for key, off in _SAT_UNSUPPORTED.items():
            if key in d and d[key] != off:
                raise InvalidInputError(f"DiT option {key}={d[key]!r} is not supported")
        attn = d.get("attn_kwargs") or {}
        for key, off in _SAT_ATTN_UNSUPPORTED.items():
            if attn.get(key, off) != off:
                raise InvalidInputError(f"DiT attention option {key}={attn[key]!r} not supported")
        ff = d.get("ff_kwargs") or {}
        if ff.get("mult", 4) != 4 or ff.get("glu", True) is not True or ff.get("no_bias", False):
            raise InvalidInputError(f"DiT feed-forward options {dict(ff)} are not supported")
        embed = int(d.get("embed_dim", 768))
        heads = int(d.get("num_heads", 8))
        cond = int(d.get("cond_token_dim", 0))
        cross = embed if d.get("project_cond_tokens", True) else cond
        head_dim = embed // heads if heads and embed % heads == 0 else 0
        if not head_dim or cross % head_dim:
            raise InvalidInputError(
                f"DiT cross-attention width {cross} is not a multiple of the head dim "
                f"({embed} / {heads} heads)"
            )
        return cls(
            io_channels=int(d.get("io_channels", 32)),
            embed_dim=embed,
            depth=int(d.get("depth", 12)),
            num_heads=heads,
            num_key_value_heads=cross // head_dim,
            cond_token_dim=cond,
            cross_attention_dim=cross,
            global_cond_dim=int(d.get("global_cond_dim", 0)),
            qk_norm=str(attn.get("qk_norm", "none")),
            sample_size=sample_size if sample_size is not None else 1024,
        )


@dataclass(frozen=True)
class NumberConditionerConfig:
    """One ``number`` conditioner (stable-audio-tools ``NumberConditioner``): seconds clamped to
    ``[min_val, max_val]`` and normalised to [0, 1] before the learned Fourier embedding."""

    id: str
    min_val: float = 0.0
    max_val: float = 1.0  # stable-audio-tools' default
    internal_dim: int = 256

    def __post_init__(self) -> None:
        if not self.max_val > self.min_val:
            raise InvalidInputError(
                f"number conditioner {self.id!r}: max_val {self.max_val} <= min_val {self.min_val}"
            )


@dataclass(frozen=True)
class ConditioningConfig:
    """Text (T5) plus number conditioners and how they are assembled for the DiT.

    ``cross_attn_cond_ids`` are concatenated along the sequence (``[prompt | seconds...]``),
    ``global_cond_ids`` along the channels (1.0: 2 × 768 = 1536).
    """

    t5_model_name: str = "t5-base"
    max_length: int = 128
    text_dim: int = 768
    cond_dim: int = 768
    text_projection: bool = False
    numbers: tuple[NumberConditionerConfig, ...] = field(
        default_factory=lambda: (
            NumberConditionerConfig("seconds_start", 0.0, 512.0),
            NumberConditionerConfig("seconds_total", 0.0, 512.0),
        )
    )
    cross_attn_cond_ids: tuple[str, ...] = ("prompt", "seconds_start", "seconds_total")
    global_cond_ids: tuple[str, ...] = ("seconds_start", "seconds_total")

    def __post_init__(self) -> None:
        if isinstance(self.max_length, bool) or self.max_length < 1:
            raise InvalidInputError(f"T5 max_length must be positive, got {self.max_length!r}")
        known = {"prompt", *self.number_ids}
        for name in (*self.cross_attn_cond_ids, *self.global_cond_ids):
            if name not in known:
                raise InvalidInputError(f"conditioning id {name!r} has no conditioner")
        if "prompt" in self.global_cond_ids:
            raise InvalidInputError("the prompt cannot be a global condition")

    @property
    def number_ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.numbers)

    @property
    def has_text_projection(self) -> bool:
        # stable-audio-tools' Conditioner / diffusers' StableAudioProjectionModel: a Linear when
        # the widths differ (or project_out is asked for), else the identity.
        return self.text_projection or self.text_dim != self.cond_dim

    @property
    def global_cond_dim(self) -> int:
        return self.cond_dim * len(self.global_cond_ids)

    def number(self, name: str) -> NumberConditionerConfig:
        for n in self.numbers:
            if n.id == name:
                return n
        raise InvalidInputError(f"no number conditioner {name!r} (have {self.number_ids})")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConditioningConfig:
        """A stable-audio-tools ``model_config.json`` (full), or our own field names."""
        if isinstance(d.get("model"), Mapping):
            return cls.from_stable_audio_tools(d)
        names = _fields(cls)
        kwargs = {k: v for k, v in d.items() if k in names}
        if "numbers" in kwargs:
            kwargs["numbers"] = tuple(
                n if isinstance(n, NumberConditionerConfig) else NumberConditionerConfig(**n)
                for n in kwargs["numbers"]
            )
        for key in ("cross_attn_cond_ids", "global_cond_ids"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    @classmethod
    def from_stable_audio_tools(cls, d: Mapping[str, Any]) -> ConditioningConfig:
        model = d.get("model") or {}
        conditioning = model.get("conditioning")
        if not isinstance(conditioning, Mapping) or not isinstance(
            conditioning.get("configs"), Sequence
        ):
            raise InvalidInputError("model_config.json has no model.conditioning.configs")
        cond_dim = int(conditioning.get("cond_dim", 768))
        kwargs: dict[str, Any] = {"cond_dim": cond_dim}
        numbers: list[NumberConditionerConfig] = []
        has_prompt = False
        for entry in conditioning["configs"]:
            kind, name, cfg = entry.get("type"), entry.get("id"), entry.get("config") or {}
            if kind == "t5":
                if name != "prompt":
                    raise InvalidInputError(f"T5 conditioner id {name!r}: only 'prompt' supported")
                has_prompt = True
                t5_name = str(cfg.get("t5_model_name", "t5-base"))
                kwargs.update(
                    t5_model_name=t5_name,
                    max_length=int(cfg.get("max_length", 128)),
                    text_dim=_T5_DIMS.get(t5_name.split("/")[-1], cond_dim),
                    text_projection=bool(cfg.get("project_out", False)),
                )
            elif kind == "number":
                numbers.append(
                    NumberConditionerConfig(
                        str(name), float(cfg.get("min_val", 0)), float(cfg.get("max_val", 1))
                    )
                )
            else:
                raise InvalidInputError(f"conditioner {name!r} of type {kind!r} not supported")
        if not has_prompt:
            raise InvalidInputError("model_config.json has no T5 'prompt' conditioner")
        diffusion = model.get("diffusion") or {}
        ids = tuple(n.id for n in numbers)
        return cls(
            **kwargs,
            numbers=tuple(numbers),
            cross_attn_cond_ids=tuple(diffusion.get("cross_attention_cond_ids", ("prompt", *ids))),
            global_cond_ids=tuple(diffusion.get("global_cond_ids", ids)),
        )

    @classmethod
    def from_diffusers(
        cls, projection: Mapping[str, Any], *, max_length: int = 128
    ) -> ConditioningConfig:
        """diffusers ``StableAudioProjectionModel`` config: its start/end number conditioners are
        ``seconds_start`` / ``seconds_total`` over one shared range. The T5 max length is the
        tokenizer's ``model_max_length`` (128 for 1.0), not part of this config."""
        text_dim = int(projection["text_encoder_dim"])
        cond_dim = int(projection["conditioning_dim"])
        lo, hi = float(projection["min_value"]), float(projection["max_value"])
        return cls(
            max_length=max_length,
            text_dim=text_dim,
            cond_dim=cond_dim,
            numbers=(
                NumberConditionerConfig("seconds_start", lo, hi),
                NumberConditionerConfig("seconds_total", lo, hi),
            ),
        )


# stable-audio-tools T5Conditioner.T5_MODEL_DIMS
_T5_DIMS = {
    "t5-small": 512,
    "t5-base": 768,
    "t5-large": 1024,
    "t5-3b": 1024,
    "t5-11b": 1024,
    "t5-v1_1-xl": 2048,
    "t5-v1_1-xxl": 4096,
    "flan-t5-small": 512,
    "flan-t5-base": 768,
    "flan-t5-large": 1024,
    "flan-t5-3b": 1024,
    "flan-t5-11b": 1024,
    "flan-t5-xl": 2048,
    "flan-t5-xxl": 4096,
}

__all__ = ["ConditioningConfig", "DiTConfig", "NumberConditionerConfig"]
