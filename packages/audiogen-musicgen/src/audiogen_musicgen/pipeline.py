"""Text-to-music with MusicGen: tokenizer → T5 → decoder (delay pattern, CFG, sampling) → EnCodec.

The pipeline composes the networks and owns nothing numerical itself. It follows transformers'
``MusicgenForConditionalGeneration.generate``: the prompts are tokenised as one padded batch, the
unconditional CFG branch is zeroed text states with a zero mask (in ``sampling.generate_codes``),
and stereo models decode ``codes[:, ::2]`` (left) and ``codes[:, 1::2]`` (right) as two mono
EnCodec streams.

Melody models (``MusicgenMelodyForConditionalGeneration``) take an optional melody: its chroma
(``audiogen_musicgen.chroma``) and the text become the decoder's input prefix. The unconditional
branch is zero text and the "no melody" chroma (every frame on bin 0); without a melody the
conditional branch uses that same bin-0 chroma, as upstream does.

The style model (facebook/musicgen-style, audiocraft) prepends ``[style | text]``: a 3 s excerpt
of a reference → MERT → the style conditioner's tokens, then the projected text. With
``style_beta`` it runs audiocraft's double guidance over three branches, full / style only (text
zeroed) / null (both zeroed); without, plain CFG over full / null (``convert_style`` documents
where each part comes from).
"""

from __future__ import annotations

import math
import os
import secrets
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from audiogen_core import audio as audio_io
from audiogen_core import backend, hub
from audiogen_core.encodec import EncodecModel
from audiogen_core.errors import InvalidInputError, WeightsError
from audiogen_core.progress import Progress, progress_callback
from audiogen_core.t5 import T5Encoder
from audiogen_core.tokenizer import T5Tokenizer
from audiogen_core.weights import cast_floats, load_into, load_safetensors, quantize_linears

import mlx.core as mx
import numpy as np

from audiogen_musicgen import chroma as chroma_mod
from audiogen_musicgen import convert, convert_style
from audiogen_musicgen.decoder import MusicGenDecoder
from audiogen_musicgen.mert import MertConfig, MertModel
from audiogen_musicgen.sampling import generate_codes, validate_sampling
from audiogen_musicgen.style import StyleConditioner, StyleConfig, excerpt_start

MAX_DURATION_S = 30.0  # upstream's cap (1503 decoder positions at 50 frames/s)
MAX_TEXT_TOKENS = 512  # T5's training length; longer prompts are truncated
LONG_PROMPT_CHARS = 2000

# What a hub snapshot needs: configs, safetensors weights, tokenizer. ``.bin`` files are left out
# (they need the optional torch reader); the small .bin index is fetched so a sharded .bin-only
# repo is recognised as such.
HUB_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    *convert.TOKENIZER_FILES,
)

BIN_PATTERNS = ("pytorch_model.bin", "pytorch_model-*.bin", convert_style.STYLE_FILE)


def _check_prompts(prompts: str | Sequence[str]) -> list[str]:
    batch = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(batch, list | tuple) or not batch:
        raise InvalidInputError("prompts must be a string or a non-empty list of strings")
    out = []
    for i, text in enumerate(batch):
        if not isinstance(text, str):
            raise InvalidInputError(f"prompt {i} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise InvalidInputError(f"prompt {i} is empty (or only whitespace)")
        if len(text) > LONG_PROMPT_CHARS:
            warnings.warn(
                f"prompt {i} has {len(text)} characters; T5 reads at most {MAX_TEXT_TOKENS} "
                "tokens, the rest is ignored",
                stacklevel=3,
            )
        out.append(text)
    return out


def _check_duration(duration: Any) -> float:
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise InvalidInputError(f"duration must be a number of seconds, got {duration!r}")
    if not math.isfinite(duration) or not 0 < duration <= MAX_DURATION_S:
        raise InvalidInputError(
            f"duration must be > 0 and <= {MAX_DURATION_S:g} seconds, got {duration!r}"
        )
    return float(duration)


MelodyInput = Any  # a path, a (channels, samples) / (samples,) array, or a list of them
MERT_SAMPLE_RATE = 24_000  # MERT-v1-95M's input rate


def _is_path(x: Any) -> bool:
    return isinstance(x, str | os.PathLike)


def _check_top_p(top_p: Any) -> float | None:
    """audiocraft's convention: ``top_p = 0`` means off; otherwise it must lie in (0, 1]."""
    if isinstance(top_p, bool) or not isinstance(top_p, int | float) or math.isnan(top_p):
        raise InvalidInputError(f"top_p must be 0 (off) or in (0, 1], got {top_p!r}")
    if top_p == 0:
        return None
    if not 0 < top_p <= 1:
        raise InvalidInputError(f"top_p must be 0 (off) or in (0, 1], got {top_p!r}")
    return float(top_p)


class MusicGen:
    """MusicGen text-to-music (mono or stereo, read from the checkpoint's config)."""

    def __init__(
        self,
        decoder: MusicGenDecoder,
        text_encoder: T5Encoder,
        tokenizer: T5Tokenizer,
        audio_encoder: EncodecModel,
        *,
        source: str = "",
        mert: MertModel | None = None,
        style: StyleConditioner | None = None,
    ) -> None:
        config = decoder.config
        codec = audio_encoder.config
        if codec.audio_channels != 1:
            raise WeightsError(
                f"{source}: MusicGen's EnCodec must be mono (stereo models decode two mono "
                f"streams), got audio_channels={codec.audio_channels}"
            )
        if codec.codebook_size != config.vocab_size:
            raise WeightsError(
                f"{source}: EnCodec codebook_size {codec.codebook_size} != decoder vocab_size "
                f"{config.vocab_size}"
            )
        if config.codebooks_per_channel > codec.num_quantizers:
            raise WeightsError(
                f"{source}: the decoder predicts {config.codebooks_per_channel} codebooks per "
                f"channel, EnCodec has {codec.num_quantizers} quantizers"
            )
        width = text_encoder.config.d_model
        if config.text_encoder_hidden_size not in (None, width):
            raise WeightsError(
                f"{source}: T5 width {width} != the decoder's text width "
                f"{config.text_encoder_hidden_size}"
            )
        self.decoder = decoder
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.audio_encoder = audio_encoder
        self.source = source
        if (mert is None) != (style is None):
            raise WeightsError(f"{source}: a style model needs both MERT and the style conditioner")
        if config.cross_attention and style is not None:
            raise WeightsError(f"{source}: a style model's decoder has no cross-attention")
        self.mert = mert
        self.style = style

    @property
    def sample_rate(self) -> int:
        return self.audio_encoder.sample_rate

    @property
    def frame_rate(self) -> int:
        return self.audio_encoder.frame_rate

    @property
    def audio_channels(self) -> int:
        return self.decoder.config.audio_channels

    @property
    def num_codebooks(self) -> int:
        return self.decoder.config.num_codebooks

    @property
    def is_style(self) -> bool:
        """True for MusicGen-style (``style=`` accepted; text optional)."""
        return self.style is not None

    @property
    def is_melody(self) -> bool:
        """True for the melody variants (conditioning prepended; ``melody=`` accepted)."""
        return self.decoder.config.is_melody

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        dtype: mx.Dtype | str | None = None,
        offline: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        quantize: int | None = None,
        group_size: int = 64,
        companions: dict[str, str | os.PathLike[str]] | None = None,
    ) -> MusicGen:
        """Load a hub repo id, an upstream-layout directory or an audiogen-converted directory.

        ``quantize`` (4 or 8) quantizes the decoder's linears in memory (those whose input size
        is a multiple of ``group_size``): less memory, and the output is no longer token-exact
        with the unquantized model. On MLX's CUDA backend it also turns off the fused decode
        step (``MusicGenDecoder.can_fuse`` needs float weights), which is the faster one there.

        Upstream weights are converted once into ``cache_dir`` (default ``$AUDIOGEN_CACHE`` or
        ``~/.cache/audiogen``); later loads read the converted copy. Hub downloads go to the
        Hugging Face cache (``HF_HOME``) as usual; ``offline`` (default: ``HF_HUB_OFFLINE``)
        uses that cache only. ``dtype`` defaults to the backend's (float32 on CPU, float16 on
        a GPU).

        MusicGen-style (an audiocraft ``state_dict.bin`` without ``config.json``) also needs
        the parts audiocraft loads by name: ``companions`` maps ``t5`` / ``mert`` / ``encodec``
        to a hub id or a local directory (defaults ``convert_style.COMPANIONS``).
        """
        compute = backend.resolve_dtype(dtype)
        root = hub.resolve(
            name_or_path,
            allow_patterns=list(HUB_PATTERNS),
            revision=revision,
            offline=offline,
            trust_remote_code=trust_remote_code,
        )
        is_repo = not Path(os.fspath(name_or_path)).expanduser().is_dir()
        source = os.fspath(name_or_path) if is_repo else str(root)
        if is_repo and not convert.is_converted(root) and not any(root.glob("*.safetensors")):
            # facebook/musicgen-medium and -large publish only PyTorch .bin weights: fetch
            # them in a second pass, and only when they can be read (not GBs to then fail).
            if convert.bin_reader() is None:
                raise WeightsError(f"{name_or_path}: only PyTorch .bin weights. {convert.BIN_HINT}")
            root = hub.resolve(
                name_or_path,
                allow_patterns=[*HUB_PATTERNS, *BIN_PATTERNS],
                revision=revision,
                offline=offline,
                trust_remote_code=trust_remote_code,
            )
        if not convert.is_converted(root) and convert_style.is_style_checkpoint(root):
            if convert.bin_reader() is None:
                raise WeightsError(f"{root}: an audiocraft checkpoint. {convert.BIN_HINT}")
            dirs = {
                name: hub.resolve(
                    (companions or {}).get(name, default),
                    allow_patterns=convert_style.COMPANION_PATTERNS[name],
                    revision=None,
                    offline=offline,
                    trust_remote_code=trust_remote_code,
                )
                for name, default in convert_style.COMPANIONS.items()
            }
            root = convert_style.converted_dir(root, dirs, source=source, cache_dir=cache_dir)
        if not convert.is_converted(root):
            if not (root / "config.json").is_file():
                raise WeightsError(
                    f"{root}: not a MusicGen model directory (no {convert.MANIFEST} of an "
                    "audiogen conversion, no config.json of a transformers checkpoint)"
                )
            root = convert.converted_dir(root, source=source, cache_dir=cache_dir)
        model = cls._load_converted(root, compute)
        if quantize is not None and quantize_linears(model.decoder, quantize, group_size) == 0:
            raise InvalidInputError(
                f"{root}: no decoder linear has an input size divisible by {group_size}"
            )
        return model

    @classmethod
    def _load_converted(cls, root: Path, dtype: mx.Dtype) -> MusicGen:
        manifest = convert.read_manifest(root)
        configs = {
            p: convert.read_json(root / p / "config.json") for p in ("decoder", "t5", "encodec")
        }
        models = convert.build_models(configs, str(root))
        for part in ("decoder", "encodec"):
            path = root / part / "model.safetensors"
            load_into(models[part], cast_floats(load_safetensors(path), dtype), source=path)
        # T5's own loader keeps its fp16 overflow guard (``wo`` in fp32); our t5/ directory is
        # a plain T5 checkpoint (parameter names are the upstream ones).
        text_encoder = T5Encoder.from_pretrained(root / "t5", dtype=dtype)
        tokenizer = T5Tokenizer.from_pretrained(root / "tokenizer")
        mert = style = None
        if manifest.get("model") == "musicgen-style":
            # The style path runs in float32 whatever the decoder's dtype (as audiocraft).
            mert_config = MertConfig.from_dict(convert.read_json(root / "mert" / "config.json"))
            mert = MertModel(mert_config)
            style = StyleConditioner(
                StyleConfig.from_dict(convert.read_json(root / "style" / "config.json"))
            )
            for part, model in (("mert", mert), ("style", style)):
                path = root / part / "model.safetensors"
                load_into(model, cast_floats(load_safetensors(path), mx.float32), source=path)
        return cls(
            cast(MusicGenDecoder, models["decoder"]),
            text_encoder,
            tokenizer,
            cast(EncodecModel, models["encodec"]),
            source=str(root),
            mert=mert,
            style=style,
        )

    def num_frames(self, duration: float) -> int:
        """Frames covering ``duration`` seconds. Rounded up (after rounding away float noise such
        as 0.1·50 = 5.000000000000001), so the decoded audio always holds
        ``round(duration · sample_rate)`` samples to trim to."""
        return max(1, math.ceil(round(_check_duration(duration) * self.frame_rate, 6)))

    def encode_text(self, prompts: str | Sequence[str]) -> tuple[mx.array, mx.array]:
        """T5 states ``(B, L, D_text)`` in the decoder's dtype and the mask ``(B, L)``."""
        ids, mask = self.tokenizer(_check_prompts(prompts), max_length=MAX_TEXT_TOKENS)
        states = self.text_encoder(ids, mask)
        dtype = self.decoder.lm_heads.weight.dtype
        return states.astype(dtype), mx.array(mask)

    def melody_chroma(
        self, melody: MelodyInput, sample_rate: int | None = None, *, batch: int = 1
    ) -> list[np.ndarray]:
        """One-hot chroma ``(frames, num_chroma)`` per prompt from ``melody``: a file path (any
        format audiogen_core.audio reads), an array ``(channels, samples)`` or ``(samples,)``
        at ``sample_rate``, or a list with one of those per prompt (``batch`` of them). One
        melody is used for every prompt."""
        if not self.is_melody:
            raise InvalidInputError(
                f"{self.source}: melody given, but this is not a melody model (use a "
                "musicgen-melody variant)"
            )
        items = list(melody) if isinstance(melody, list | tuple) else [melody]
        if len(items) not in (1, batch):
            raise InvalidInputError(
                f"got {len(items)} melodies for {batch} prompts (give one, or one per prompt)"
            )
        out = []
        for item in items:
            if _is_path(item):
                out.append(chroma_mod.chroma_from_file(item))
            else:
                if sample_rate is None:
                    raise InvalidInputError("a melody given as an array needs melody_sample_rate")
                out.append(chroma_mod.chroma_features(item, sample_rate))
        return out * batch if len(out) == 1 else out

    def melody_prefixes(
        self,
        states: mx.array,
        mask: mx.array,
        chroma: Sequence[np.ndarray] | None,
    ) -> tuple[mx.array, mx.array]:
        """The conditional and unconditional decoder prefixes ``(B, chroma_length + S, D)``.

        Each prompt's chroma is tiled to ``chroma_length`` on its own (transformers tiles a
        padded batch; equal for equal-length melodies). No chroma: the bin-0 "no melody" chroma,
        which is also the unconditional branch's, with zeroed text."""
        config = self.decoder.config
        bins = config.num_chroma or 12
        null = np.zeros((1, 1, bins), np.float32)
        null[..., 0] = 1.0
        b = states.shape[0]
        if chroma is None:
            cond = self.decoder.melody_prefix(states, mask, mx.array(np.repeat(null, b, 0)))
        else:
            if len(chroma) != b:
                raise InvalidInputError(f"got {len(chroma)} chroma arrays for {b} prompts")
            rows = []
            for i, c in enumerate(chroma):
                c = np.asarray(c, dtype=np.float32)
                if c.ndim != 2 or c.shape[1] != bins or c.shape[0] < 1:
                    raise InvalidInputError(
                        f"chroma {i} must be (frames, {bins}), got shape {c.shape}"
                    )
                rows.append(
                    self.decoder.melody_prefix(
                        states[i : i + 1], mask[i : i + 1], mx.array(c[None])
                    )
                )
            cond = mx.concatenate(rows)
        uncond = self.decoder.melody_prefix(
            mx.zeros_like(states), mx.zeros_like(mask), mx.array(np.repeat(null, b, 0))
        )
        return cond, uncond

    def style_tokens(
        self,
        style: MelodyInput,
        sample_rate: int | None = None,
        *,
        batch: int = 1,
        eval_q: int | None = None,
        excerpt_start_s: float | None = None,
        seed: int | None = None,
    ) -> mx.array:
        """Style tokens ``(B, T', D)`` (already masked) from ``style``: a path, an array
        ``(channels, samples)`` / ``(samples,)`` at ``sample_rate``, or one per prompt.

        As audiocraft's ``StyleConditioner``: mono at the model's rate (32 kHz), a 3 s excerpt
        (at ``excerpt_start_s`` seconds, else a start drawn from ``seed``: upstream draws it at
        random even at inference, we make it reproducible), resampled to MERT's 24 kHz, MERT's
        last hidden state, then the conditioner with ``eval_q`` codebooks. Resampling uses
        torchaudio's windowed sinc (``chroma.resample``); audiocraft uses julius' with the same
        zero crossings (24) and roll-off (0.945), so inputs agree to resampler rounding."""
        if self.style is None or self.mert is None:
            raise InvalidInputError(
                f"{self.source}: style given, but this is not a style model (use musicgen-style)"
            )
        config = self.style.config
        items = list(style) if isinstance(style, list | tuple) else [style]
        if len(items) not in (1, batch):
            raise InvalidInputError(
                f"got {len(items)} style references for {batch} prompts (give one, or one each)"
            )
        features, lengths = [], []
        for i, item in enumerate(items):
            what = f"style reference {i}"
            if _is_path(item):
                audio, rate = audio_io.read(item)
                what = str(item)
            else:
                if sample_rate is None:
                    raise InvalidInputError("a style reference given as an array needs its rate")
                audio = np.asarray(item, dtype=np.float32)
                audio = audio[None] if audio.ndim == 1 else audio
                if audio.ndim != 2 or audio.shape[1] == 0 or not np.isfinite(audio).all():
                    raise InvalidInputError(
                        f"{what} must be finite (samples,) or (channels, samples) audio, "
                        f"got shape {audio.shape}"
                    )
                rate = int(sample_rate)
            mono = audio.mean(axis=0, keepdims=True, dtype=np.float32)
            wav = chroma_mod.resample(mono, rate, config.sample_rate, what=what)[0]
            start = None
            if excerpt_start_s is not None:
                start = round(float(excerpt_start_s) * config.sample_rate)
            begin = excerpt_start(wav.shape[0], config, start=start, seed=seed)
            excerpt = wav[None, begin : begin + config.excerpt_samples]
            excerpt = chroma_mod.resample(excerpt, config.sample_rate, MERT_SAMPLE_RATE, what=what)
            features.append(self.mert(mx.array(excerpt)))
            lengths.append(wav.shape[0])
        feats = mx.concatenate(features)
        out = self.style(
            feats, eval_q=eval_q, lengths=self.style.token_lengths(np.asarray(lengths))
        )
        tokens = out.tokens
        if tokens.shape[0] == 1 and batch > 1:
            tokens = mx.repeat(tokens, batch, axis=0)
        return tokens

    def style_prefixes(
        self,
        states: mx.array,
        mask: mx.array,
        style_tokens: mx.array | None,
        beta: float | None,
    ) -> list[mx.array]:
        """The decoder prefixes of audiocraft's guidance branches: ``[full, style only, null]``
        with ``beta``, else ``[full, null]``; each ``[style | text]``. Text zeroed by the mask
        (after the projection, so pads are zero vectors); without a reference the style part is
        one zero token in every branch, with one the null branch has as many zero tokens as the
        reference has (audiocraft pads the null wav to the batch's length, then masks it)."""
        text = self.decoder.encoder_states(states, mask)
        b, d = text.shape[0], text.shape[-1]
        zeros_text = mx.zeros_like(text)
        if style_tokens is None:
            style_part = null_style = mx.zeros((b, 1, d), text.dtype)
        else:
            style_part = style_tokens.astype(text.dtype)
            null_style = mx.zeros_like(style_part)
        full = mx.concatenate([style_part, text], axis=1)
        null = mx.concatenate([null_style, zeros_text], axis=1)
        if beta is None:
            return [full, null]
        return [full, mx.concatenate([style_part, zeros_text], axis=1), null]

    def _style_text(
        self, prompts: str | Sequence[str] | None, batch: int
    ) -> tuple[mx.array, mx.array]:
        """T5 states and mask; no prompt (style only) is audiocraft's dropped description: the
        empty string (one ``</s>``) with a zero mask."""
        if prompts is not None:
            return self.encode_text(prompts)
        ids, mask = self.tokenizer([""] * batch, max_length=MAX_TEXT_TOKENS)
        states = self.text_encoder(ids, mask).astype(self.decoder.lm_heads.weight.dtype)
        return states, mx.zeros(np.asarray(mask).shape, dtype=mx.int32)

    def generate_codes(
        self,
        prompts: str | Sequence[str] | None,
        duration: float,
        *,
        guidance_scale: float = 3.0,
        top_k: int | None = 250,
        top_p: float = 0.0,
        temperature: float = 1.0,
        seed: int | None = None,
        greedy: bool = False,
        progress: Progress = None,
        melody: MelodyInput = None,
        melody_sample_rate: int | None = None,
        chroma: Sequence[np.ndarray] | None = None,
        style: MelodyInput = None,
        style_sample_rate: int | None = None,
        style_beta: float | None = None,
        style_excerpt_start: float | None = None,
        eval_q: int | None = None,
    ) -> np.ndarray:
        """EnCodec codes ``(batch, codebooks, frames)`` int32 for the prompts, one batched pass.

        Sampling follows transformers' warper order (temperature, top-k, top-p); ``top_p = 0``
        turns top-p off, ``top_k = None`` top-k; ``greedy`` takes the argmax (no randomness).
        CFG runs when ``guidance_scale > 1``. The same ``seed`` gives the same codes; ``None``
        draws a fresh one. ``progress``: a ``callable(step, total)`` or True for a bar.

        Melody models: ``melody`` (see ``melody_chroma``; ``melody_sample_rate`` for arrays) or
        precomputed one-hot ``chroma`` (one ``(frames, 12)`` array per prompt, as transformers'
        ``input_features``); neither means text only.

        Style model: ``style`` (a reference like ``melody``; ``style_sample_rate`` for arrays),
        ``style_beta`` (None: plain CFG, audiocraft's default; a number: double guidance, e.g.
        5 with text and style), ``style_excerpt_start`` (seconds; default drawn from ``seed``),
        ``eval_q`` (RVQ codebooks, 1-6; default the checkpoint's, 3). ``prompts`` may be None
        for style only.
        """
        p = _check_top_p(top_p)
        validate_sampling(
            temperature=temperature, top_k=top_k, top_p=p, guidance_scale=guidance_scale
        )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise InvalidInputError(f"seed must be a non-negative integer or None, got {seed!r}")
        frames = self.num_frames(duration)
        if seed is None and not greedy:
            seed = secrets.randbits(63)
        styled = style is not None or style_beta is not None or eval_q is not None
        if (styled or style_excerpt_start is not None) and not self.is_style:
            raise InvalidInputError(
                f"{self.source}: style options given, but this is not a style model "
                "(use musicgen-style)"
            )
        if style_beta is not None and not (
            isinstance(style_beta, int | float)
            and not isinstance(style_beta, bool)
            and math.isfinite(style_beta)
        ):
            raise InvalidInputError(f"style_beta must be a finite number, got {style_beta!r}")
        if prompts is None and not (self.is_style and style is not None):
            raise InvalidInputError("prompts are required (only a style model can go without)")
        if self.is_style:
            batch = len(style) if prompts is None and isinstance(style, list | tuple) else None
            states, mask = self._style_text(prompts, batch or 1)
            tokens = None
            if style is not None:
                tokens = self.style_tokens(
                    style,
                    style_sample_rate,
                    batch=states.shape[0],
                    eval_q=eval_q,
                    excerpt_start_s=style_excerpt_start,
                    seed=seed,
                )
            return self._sample(
                None,
                self.style_prefixes(states, mask, tokens, style_beta),
                frames,
                guidance_scale=guidance_scale,
                top_k=top_k,
                top_p=p,
                temperature=temperature,
                seed=seed,
                greedy=greedy,
                progress=progress,
                beta=style_beta,
            )
        if prompts is None:
            raise InvalidInputError("prompts are required (only a style model can go without)")
        if (melody is not None or chroma is not None) and not self.is_melody:
            raise InvalidInputError(
                f"{self.source}: melody given, but this is not a melody model (use a "
                "musicgen-melody variant)"
            )
        if melody is not None and chroma is not None:
            raise InvalidInputError("give melody or chroma, not both")
        states, mask = self.encode_text(prompts)
        if melody is not None:
            chroma = self.melody_chroma(melody, melody_sample_rate, batch=states.shape[0])
        prefix = None
        if self.is_melody:
            prefix = list(self.melody_prefixes(states, mask, chroma))
        return self._sample(
            (states, mask) if prefix is None else None,
            prefix,
            frames,
            guidance_scale=guidance_scale,
            top_k=top_k,
            top_p=p,
            temperature=temperature,
            seed=seed,
            greedy=greedy,
            progress=progress,
        )

    def _sample(
        self,
        text: tuple[mx.array, mx.array] | None,
        prefix: list[mx.array] | None,
        frames: int,
        *,
        guidance_scale: float,
        top_k: int | None,
        top_p: float | None,
        temperature: float,
        seed: int | None,
        greedy: bool,
        progress: Progress,
        beta: float | None = None,
    ) -> np.ndarray:
        """The decode loop (``sampling.generate_codes``) with a progress bar; codes as numpy."""
        p = top_p
        report, bar = progress_callback(progress, "generating")
        try:
            codes = generate_codes(
                self.decoder,
                None if text is None else text[0],
                None if text is None else text[1],
                frames,
                prefix=prefix,
                beta=beta,
                guidance_scale=guidance_scale,
                top_k=top_k,
                top_p=p,
                temperature=temperature,
                key=None if greedy else seed,
                greedy=greedy,
                on_step=report,
            )
            result = np.array(codes, dtype=np.int32)
        finally:
            if bar is not None:
                bar.close()
        return result

    def decode(self, codes: Any) -> np.ndarray:
        """Codes ``(B, K, F)`` → float32 audio ``(B, channels, F · hop)``. Stereo: even codebooks
        are the left channel, odd the right, each decoded as a mono EnCodec stream (transformers
        ``MusicgenForConditionalGeneration.generate``); both go through EnCodec as one batch."""
        c = mx.array(np.asarray(codes)) if not isinstance(codes, mx.array) else codes
        if c.ndim != 3 or c.shape[1] != self.num_codebooks:
            raise InvalidInputError(
                f"codes must be (batch, {self.num_codebooks}, frames), got shape {c.shape}"
            )
        if self.audio_channels == 1:
            return np.array(self.audio_encoder.decode(c), dtype=np.float32)
        b = c.shape[0]
        wave = self.audio_encoder.decode(mx.concatenate([c[:, ::2], c[:, 1::2]]))  # (2B, 1, T)
        return np.array(wave.reshape(2, b, -1).transpose(1, 0, 2), dtype=np.float32)

    def generate(
        self,
        prompts: str | Sequence[str] | None,
        duration: float,
        *,
        guidance_scale: float = 3.0,
        top_k: int | None = 250,
        top_p: float = 0.0,
        temperature: float = 1.0,
        seed: int | None = None,
        greedy: bool = False,
        progress: Progress = None,
        melody: MelodyInput = None,
        melody_sample_rate: int | None = None,
        chroma: Sequence[np.ndarray] | None = None,
        style: MelodyInput = None,
        style_sample_rate: int | None = None,
        style_beta: float | None = None,
        style_excerpt_start: float | None = None,
        eval_q: int | None = None,
    ) -> np.ndarray:
        """Audio ``(batch, channels, samples)`` float32 at ``sample_rate``, ``duration`` seconds
        (at most 30) per prompt. Arguments as for ``generate_codes``."""
        codes = self.generate_codes(
            prompts,
            duration,
            guidance_scale=guidance_scale,
            top_k=top_k,
            top_p=top_p,
            temperature=temperature,
            seed=seed,
            greedy=greedy,
            progress=progress,
            melody=melody,
            melody_sample_rate=melody_sample_rate,
            chroma=chroma,
            style=style,
            style_sample_rate=style_sample_rate,
            style_beta=style_beta,
            style_excerpt_start=style_excerpt_start,
            eval_q=eval_q,
        )
        samples = round(float(duration) * self.sample_rate)
        return self.decode(codes)[..., :samples]

    def save(
        self,
        audio: Any,
        path: str | os.PathLike[str],
        *,
        subtype: str | None = None,
        mkdir_parents: bool = False,
    ) -> Path:
        """Write one item of ``generate``'s output (``(channels, samples)``) at ``sample_rate``
        (audiogen_core.audio.write: atomic; wav, flac or ogg by suffix)."""
        return audio_io.write(
            path, audio, self.sample_rate, subtype=subtype, mkdir_parents=mkdir_parents
        )


__all__ = ["MusicGen"]
