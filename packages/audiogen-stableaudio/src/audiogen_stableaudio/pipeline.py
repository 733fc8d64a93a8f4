"""Text-to-audio with Stable Audio Open: tokenizer → T5 → conditioners → DiT sampler → Oobleck.

The pipeline composes the networks and owns nothing numerical itself. It follows diffusers'
``StableAudioPipeline`` (1.0) and stable-audio-tools' ``generate_diffusion_cond`` (both models):
the prompts are tokenised as one batch padded to the T5 max length; classifier-free guidance runs
the batch ``[uncond; cond]`` through the DiT in one pass and mixes ``uncond + cfg·(cond − uncond)``
(skipped at cfg 1, the small model's default); the model always denoises its whole window
(``sample_size``) and the audio is trimmed to the requested duration afterwards.

Three directory layouts load (``detect_layout``):

- ``sat``: stable-audio-tools ``model_config.json`` + ``model.safetensors`` (DiT, conditioners and
  VAE in one file; both hub repos ship it). T5 and its tokenizer are not in it: they come from a
  ``text_encoder/`` + ``tokenizer/`` beside it (1.0's repo has them) or from the hub repo the
  config names (``t5_model_name``: ``t5-base`` → ``google-t5/t5-base``).
- ``diffusers``: ``model_index.json`` with ``transformer/``, ``projection_model/``, ``vae/``,
  ``text_encoder/``, ``tokenizer/`` (and ``scheduler/``, whose σ range is read).
- ``audiogen``: a converted directory (``manifest.json``), see ``convert``.

Upstream layouts are converted once into the audiogen cache (``converted_dir``; the idea of
audiogen_musicgen's cache, keyed by the resolved path and the size/mtime of every input file) and
loaded from there. Converted layout::

    manifest.json               format, source, revision, versions, dtype, objective, window, σ
    dit/config.json             DiTConfig fields;  dit/model.safetensors (our names)
    conditioners/config.json    ConditioningConfig fields;  conditioners/model.safetensors
    vae/config.json             OobleckConfig fields;  vae/model.safetensors (MLX layout, fused)
    t5/config.json              the T5 config;  t5/model.safetensors (encoder only)
    tokenizer/                  the tokenizer files, copied
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import re
import secrets
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from audiogen_core import audio as audio_io
from audiogen_core import backend, hub, oobleck, t5
from audiogen_core.errors import InvalidInputError, MissingWeightsError, WeightsError
from audiogen_core.oobleck import OobleckConfig, OobleckVAE
from audiogen_core.progress import Progress, progress_callback
from audiogen_core.t5 import T5Encoder
from audiogen_core.tokenizer import T5Tokenizer
from audiogen_core.weights import (
    cast_floats,
    float_dtype,
    load_into,
    load_safetensors,
    read_json,
    write_model_dir,
)

import mlx.core as mx
import numpy as np

from audiogen_stableaudio import samplers
from audiogen_stableaudio import weights as sa_weights
from audiogen_stableaudio.conditioners import (
    Conditioning,
    StableAudioConditioners,
    classifier_free,
)
from audiogen_stableaudio.config import ConditioningConfig, DiTConfig
from audiogen_stableaudio.dit import StableAudioDiT

FORMAT = "audiogen-stableaudio"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SAT_CONFIG = "model_config.json"
SAT_WEIGHTS = "model.safetensors"
DIFFUSERS_INDEX = "model_index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "spiece.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
T5_FILES = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
)
COMPONENTS = ("dit", "conditioners", "vae", "t5")
OBJECTIVES = ("v", "rf_denoiser")
LONG_PROMPT_CHARS = 2000

# What each layout needs from a hub repo. 1.0 ships both layouts: the original is preferred, and
# its text_encoder/ + tokenizer/ folders supply T5 (small has neither: see _t5_repo).
_PROBE_PATTERNS = [SAT_CONFIG, DIFFUSERS_INDEX, MANIFEST]
_SAT_PATTERNS = [
    SAT_CONFIG,
    SAT_WEIGHTS,
    *(f"text_encoder/{n}" for n in T5_FILES),
    *(f"tokenizer/{n}" for n in TOKENIZER_FILES),
]
_DIFFUSERS_PATTERNS = [
    DIFFUSERS_INDEX,
    *(f"{d}/*.json" for d in ("transformer", "projection_model", "vae", "scheduler")),
    *(
        f"{d}/diffusion_pytorch_model.safetensors"
        for d in ("transformer", "projection_model", "vae")
    ),
    *(f"text_encoder/{n}" for n in T5_FILES),
    *(f"tokenizer/{n}" for n in TOKENIZER_FILES),
]

Layout = Literal["audiogen", "sat", "diffusers"]
InitAudio = str | os.PathLike[str] | tuple[Any, float]


@dataclass(frozen=True)
class SamplingDefaults:
    """Per-objective defaults: the references' samplers for each released model."""

    sampler: str
    steps: int
    cfg_scale: float
    init_strength: float  # the noise level audio-to-audio starts from, in the objective's units


# stable-audio-tools' defaults for the two objectives / released models: small (ARC post-trained
# rectified flow) 8 ping-pong steps without guidance; 1.0 DPM++ 3M SDE, 100 steps, cfg 7. The
# init strengths are stable-audio-tools' gradio default noise level for v (σ 1) and the
# mid-point t 0.5 for rectified flow (its t 1 would ignore the init audio entirely).
DEFAULTS: dict[str, SamplingDefaults] = {
    "rf_denoiser": SamplingDefaults("pingpong", 8, 1.0, 0.5),
    "v": SamplingDefaults("dpmpp-3m-sde", 100, 7.0, 1.0),
}


def detect_layout(root: Path) -> Layout:
    """Which Stable Audio layout ``root`` holds (the original preferred over diffusers')."""
    if not root.is_dir():
        raise WeightsError(f"{root}: not a directory")
    if (root / MANIFEST).is_file():
        return "audiogen"
    if (root / SAT_CONFIG).is_file():
        return "sat"
    if (root / DIFFUSERS_INDEX).is_file():
        return "diffusers"
    raise WeightsError(
        f"{root}: not a Stable Audio model directory (no {MANIFEST} of an audiogen conversion, "
        f"no stable-audio-tools {SAT_CONFIG}, no diffusers {DIFFUSERS_INDEX})"
    )


def _t5_repo(name: str) -> str:
    """The hub repo of stable-audio-tools' ``t5_model_name`` (a transformers name such as
    ``t5-base``, which the hub serves from ``google-t5/t5-base``)."""
    if "/" in name:
        return name
    canonical = f"google-t5/{name}"
    return canonical if canonical in hub.KNOWN_REPOS else name


def _tokenizer_dir(*candidates: Path) -> Path | None:
    for d in candidates:
        if d.is_dir() and any((d / n).is_file() for n in ("tokenizer.json", "spiece.model")):
            return d
    return None


def _t5_dir(*candidates: Path) -> Path | None:
    for d in candidates:
        if (d / "config.json").is_file() and (
            (d / "model.safetensors").is_file() or (d / "model.safetensors.index.json").is_file()
        ):
            return d
    return None


@dataclass
class Upstream:
    """Everything read from an upstream directory, sanitized to our parameter names."""

    layout: Layout
    objective: str
    window: int  # latents the DiT denoises (its sample_size)
    sigma_min: float
    sigma_max: float
    dit_config: DiTConfig
    cond_config: ConditioningConfig
    vae_config: OobleckConfig
    t5_dir: Path
    tokenizer_dir: Path
    parts: dict[str, dict[str, mx.array]]
    inputs: list[Path]  # every file read (for the cache key)


def _wrap(what: Path, e: Exception) -> WeightsError:
    return WeightsError(f"{what}: unsupported Stable Audio config: {e}")


def _t5_weights(t5_dir: Path) -> dict[str, mx.array]:
    index = t5_dir / "model.safetensors.index.json"
    single = t5_dir / "model.safetensors"
    if single.is_file():
        return t5.sanitize(load_safetensors(single))
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise WeightsError(f"{index}: no weight_map")
    out: dict[str, mx.array] = {}
    for shard in sorted({str(v) for v in weight_map.values()}):
        if Path(shard).name != shard:
            raise WeightsError(f"{index}: bad shard name {shard!r}")
        out.update(load_safetensors(t5_dir / shard))
    return t5.sanitize(out)


def read_upstream(
    root: Path,
    *,
    t5_dir: Path | None = None,
    tokenizer_dir: Path | None = None,
    weights: Mapping[str, mx.array] | None = None,
) -> Upstream:
    """Read an upstream Stable Audio directory (``sat`` or ``diffusers`` layout).

    ``t5_dir`` / ``tokenizer_dir`` override where T5 and its tokenizer come from (default: the
    directory's ``text_encoder/`` and ``tokenizer/``). ``weights`` stands in for a ``sat``
    directory's ``model.safetensors`` (audiogen-convert passes a ``model.ckpt`` read with torch).
    """
    layout = detect_layout(root)
    if layout == "audiogen":
        raise WeightsError(f"{root}: already an audiogen conversion")
    inputs: list[Path] = []
    sigma_min, sigma_max = samplers.DEFAULT_SIGMA_MIN, samplers.DEFAULT_SIGMA_MAX
    if layout == "sat":
        cfg_path = root / SAT_CONFIG
        config = read_json(cfg_path)
        inputs.append(cfg_path)
        diffusion = (config.get("model") or {}).get("diffusion") or {}
        objective = str(diffusion.get("diffusion_objective", "v"))
        if objective not in OBJECTIVES:
            raise WeightsError(f"{cfg_path}: diffusion objective {objective!r} not supported")
        try:
            dit_config = DiTConfig.from_dict(config)
            cond_config = ConditioningConfig.from_dict(config)
            vae_config = OobleckConfig.from_stable_audio_tools(config)
            window = int(config["sample_size"]) // vae_config.hop_length
        except (InvalidInputError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise _wrap(cfg_path, e) from e
        if weights is None:
            wpath = root / SAT_WEIGHTS
            if not wpath.is_file():
                ckpt = " (only model.ckpt: convert it with `audiogen convert`, which reads it)"
                hint = ckpt if (root / "model.ckpt").is_file() else ""
                raise MissingWeightsError(f"{root}: no {SAT_WEIGHTS}{hint}")
            weights = load_safetensors(wpath)
            inputs.append(wpath)
        source = str(root / SAT_WEIGHTS)
        parts = {
            "dit": sa_weights.sanitize_dit(weights, "sat", config=dit_config, source=source),
            "conditioners": sa_weights.sanitize_conditioners(
                weights, "sat", config=cond_config, source=source
            ),
            "vae": oobleck.sanitize(weights, "sat", prefix="pretransform.model."),
        }
        if not parts["vae"]:
            raise MissingWeightsError(f"{source}: no VAE weights under 'pretransform.model.'")
    else:
        index = read_json(root / DIFFUSERS_INDEX)
        inputs.append(root / DIFFUSERS_INDEX)
        if index.get("_class_name", "StableAudioPipeline") != "StableAudioPipeline":
            raise WeightsError(
                f"{root / DIFFUSERS_INDEX}: not a StableAudioPipeline ({index.get('_class_name')!r})"
            )
        objective = "v"  # StableAudioPipeline is 1.0's v-objective model
        tok_cfg = root / "tokenizer" / "tokenizer_config.json"
        max_length = 128
        if tok_cfg.is_file():
            value = read_json(tok_cfg).get("model_max_length", 128)
            # transformers writes a huge sentinel when no limit was set
            max_length = int(value) if isinstance(value, int) and value < 1 << 20 else 128
        sched = root / "scheduler" / "scheduler_config.json"
        if sched.is_file():
            s = read_json(sched)
            sigma_min = float(s.get("sigma_min", sigma_min))
            sigma_max = float(s.get("sigma_max", sigma_max))
            inputs.append(sched)
        files = {
            d: (root / d / "config.json", root / d / "diffusion_pytorch_model.safetensors")
            for d in ("transformer", "projection_model", "vae")
        }
        for c, w in files.values():
            if not w.is_file():
                raise MissingWeightsError(f"{root}: {w.relative_to(root)} missing")
            inputs += [c, w]
        try:
            dit_config = DiTConfig.from_diffusers(read_json(files["transformer"][0]))
            cond_config = ConditioningConfig.from_diffusers(
                read_json(files["projection_model"][0]), max_length=max_length
            )
            vae_config = OobleckConfig.from_dict(read_json(files["vae"][0]))
        except (InvalidInputError, KeyError, TypeError, ValueError) as e:
            raise _wrap(root, e) from e
        window = dit_config.sample_size
        parts = {
            "dit": sa_weights.sanitize_dit(
                load_safetensors(files["transformer"][1]),
                "diffusers",
                source=str(files["transformer"][1]),
            ),
            "conditioners": sa_weights.sanitize_conditioners(
                load_safetensors(files["projection_model"][1]),
                "diffusers",
                config=cond_config,
                source=str(files["projection_model"][1]),
            ),
            "vae": oobleck.sanitize(load_safetensors(files["vae"][1]), "diffusers"),
        }
    found_t5 = t5_dir or _t5_dir(root / "text_encoder", root / "t5")
    found_tok = tokenizer_dir or _tokenizer_dir(
        root / "tokenizer", *([found_t5] if found_t5 else [])
    )
    if found_t5 is None or found_tok is None:
        raise MissingWeightsError(
            f"{root}: no T5 text encoder / tokenizer (looked for text_encoder/ and tokenizer/; "
            f"the model config names {cond_config.t5_model_name!r})"
        )
    t5_config = read_json(found_t5 / "config.json")
    parts["t5"] = _t5_weights(found_t5)
    inputs += [found_t5 / "config.json", *sorted(found_t5.glob("model*.safetensors"))]
    inputs += [found_tok / n for n in TOKENIZER_FILES if (found_tok / n).is_file()]
    # stable-audio-tools sizes its text projection from a table of T5 widths by name; the T5
    # actually loaded says the same for every released model and lets other T5s load.
    width = int(t5_config.get("d_model", cond_config.text_dim))
    if width != cond_config.text_dim:
        cond_config = dataclasses.replace(cond_config, text_dim=width)
    if dit_config.cond_token_dim != cond_config.cond_dim:
        raise WeightsError(
            f"{root}: conditioner width {cond_config.cond_dim} != DiT cond_token_dim "
            f"{dit_config.cond_token_dim}"
        )
    if dit_config.has_global_cond and dit_config.global_cond_dim != cond_config.global_cond_dim:
        raise WeightsError(
            f"{root}: global condition width {cond_config.global_cond_dim} != DiT "
            f"global_cond_dim {dit_config.global_cond_dim}"
        )
    if vae_config.latent_dim != dit_config.io_channels:
        raise WeightsError(
            f"{root}: VAE latent width {vae_config.latent_dim} != DiT io_channels "
            f"{dit_config.io_channels}"
        )
    return Upstream(
        layout=layout,
        objective=objective,
        window=window,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        dit_config=dataclasses.replace(dit_config, sample_size=window),
        cond_config=cond_config,
        vae_config=vae_config,
        t5_dir=found_t5,
        tokenizer_dir=found_tok,
        parts=parts,
        inputs=inputs,
    )


def _configs_json(up: Upstream) -> dict[str, dict[str, Any]]:
    return {
        "dit": dataclasses.asdict(up.dit_config),
        "conditioners": dataclasses.asdict(up.cond_config),
        "vae": dataclasses.asdict(up.vae_config),
        "t5": read_json(up.t5_dir / "config.json"),
    }


def _build(configs: Mapping[str, Mapping[str, Any]], source: str) -> dict[str, Any]:
    """Models for the component configs (MLX allocates lazily: nothing is computed here)."""
    try:
        names = {f.name for f in dataclasses.fields(DiTConfig)}
        # DiTConfig.from_dict would read our own "embed_dim" as a stable-audio-tools config.
        dit_config = DiTConfig(**{k: v for k, v in configs["dit"].items() if k in names})
        return {
            "dit": StableAudioDiT(dit_config),
            "conditioners": StableAudioConditioners(
                ConditioningConfig.from_dict(configs["conditioners"])
            ),
            "vae": OobleckVAE(OobleckConfig.from_dict(configs["vae"])),
            "t5": T5Encoder(t5.T5Config.from_dict(configs["t5"])),
        }
    except (InvalidInputError, TypeError, ValueError) as e:
        raise WeightsError(f"{source}: unsupported Stable Audio config: {e}") from e


def _version() -> str:
    from audiogen_stableaudio import __version__

    return __version__


def convert(
    up: Upstream,
    dst: Path,
    *,
    source: str,
    revision: str | None = None,
    dtype: mx.Dtype | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``up`` as an audiogen directory ``dst`` (which must not exist), atomically: a
    temporary sibling is filled, checked against our models, and renamed into place."""
    configs = _configs_json(up)
    parts = {k: cast_floats(v, dtype) if dtype is not None else v for k, v in up.parts.items()}
    models = _build(configs, source)
    for name, model in models.items():  # strict key/shape check before anything is written
        load_into(model, parts[name], source=f"{source} ({name})", strict=True)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": "stable-audio",
        "source": source,
        "revision": revision,
        "source_layout": up.layout,
        "audiogen_version": _version(),
        "dtype": float_dtype(v for p in parts.values() for v in p.values()),
        "quantization": None,
        "objective": up.objective,
        "sample_size": up.window,
        "sample_rate": up.vae_config.sampling_rate,
        "sigma_min": up.sigma_min,
        "sigma_max": up.sigma_max,
        "conditioners": list(up.cond_config.number_ids),
        **(extra or {}),
    }
    tokenizer = [up.tokenizer_dir / n for n in TOKENIZER_FILES if (up.tokenizer_dir / n).is_file()]
    out = {name: (configs[name], parts[name]) for name in COMPONENTS}
    write_model_dir(dst, out, tokenizer, manifest, MANIFEST)
    return dst


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a converted directory, checked to be ours and complete."""
    path = root / MANIFEST
    manifest = read_json(path)
    if manifest.get("format") != FORMAT:
        raise WeightsError(
            f"{path}: not an audiogen Stable Audio directory (format {manifest.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise WeightsError(
            f"{path}: format_version {version!r} is newer than this audiogen understands "
            f"({FORMAT_VERSION}); upgrade audiogen or convert the model again"
        )
    if manifest.get("objective") not in OBJECTIVES:
        raise WeightsError(f"{path}: unknown objective {manifest.get('objective')!r}")
    for part in COMPONENTS:
        for name in ("config.json", "model.safetensors"):
            if not (root / part / name).is_file():
                raise MissingWeightsError(f"{root}: incomplete conversion, {part}/{name} missing")
    if _tokenizer_dir(root / "tokenizer") is None:
        raise MissingWeightsError(f"{root}: incomplete conversion, tokenizer/ missing")
    return manifest


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else ``$AUDIOGEN_CACHE``, else ``~/.cache/audiogen``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("AUDIOGEN_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "audiogen"


def _cache_key(root: Path, inputs: Sequence[Path], source: str) -> str:
    """A readable, collision-safe name for the converted copy: the source plus a hash of the
    resolved path and of every input file's path and size, and its mtime unless it lives in a
    hub snapshot (``.../snapshots/<commit>/``, immutable per commit), so an edited local
    checkpoint is converted again."""
    h = hashlib.sha256(str(root.resolve()).encode())
    for f in sorted(set(inputs)):
        st = f.stat()
        in_snapshot = any(p.parent.name == "snapshots" for p in f.parents)
        stamp = "" if in_snapshot else str(st.st_mtime_ns)
        h.update(f"\0{f.resolve()}\0{st.st_size}\0{stamp}".encode())
    name = re.sub(r"[^A-Za-z0-9._-]+", "--", source).strip("-.") or "model"
    return f"{name[-80:]}-{h.hexdigest()[:16]}"


def snapshot_revision(root: Path) -> str | None:
    return root.name if root.parent.name == "snapshots" else None


def converted_dir(
    up: Upstream, root: Path, *, source: str, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The cached converted copy of the upstream directory ``root``, converting on first use."""
    base = cache_root(cache_dir) / "stableaudio"
    dst = base / _cache_key(root, up.inputs, source)
    if (dst / MANIFEST).is_file():
        return dst
    if dst.exists():
        raise WeightsError(f"{dst}: cache entry without {MANIFEST}; delete it and retry")
    try:
        return convert(up, dst, source=source, revision=snapshot_revision(root))
    except PermissionError as e:
        raise InvalidInputError(
            f"{base}: cannot write the conversion cache ({e}); pass cache_dir or set AUDIOGEN_CACHE"
        ) from e


@dataclass(frozen=True)
class Resolved:
    """A model directory found locally or fetched from the hub, with where its T5 comes from
    (``None``: beside it) and the label recorded as its source."""

    root: Path
    layout: Layout
    source: str
    t5_dir: Path | None = None
    tokenizer_dir: Path | None = None


def resolve(
    name_or_path: str | os.PathLike[str],
    *,
    offline: bool | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
) -> Resolved:
    """Find (or download) a Stable Audio model: a local directory, or a hub repo fetched in two
    passes (a probe for the layout, then only that layout's files). A stable-audio-tools layout
    without ``text_encoder/`` (small) gets T5 and its tokenizer from the repo its config names."""
    kw: dict[str, Any] = {"offline": offline, "trust_remote_code": trust_remote_code}
    is_local = Path(os.fspath(name_or_path)).expanduser().is_dir()
    if is_local:
        root = hub.resolve(name_or_path)
    else:
        probe = hub.resolve(name_or_path, allow_patterns=_PROBE_PATTERNS, revision=revision, **kw)
        patterns = _SAT_PATTERNS if detect_layout(probe) == "sat" else _DIFFUSERS_PATTERNS
        root = hub.resolve(name_or_path, allow_patterns=patterns, revision=revision, **kw)
    source = str(root) if is_local else os.fspath(name_or_path)
    layout = detect_layout(root)
    if layout != "sat" or _t5_dir(root / "text_encoder", root / "t5") is not None:
        return Resolved(root, layout, source)
    name = ConditioningConfig.from_dict(read_json(root / SAT_CONFIG)).t5_model_name
    t5_root = hub.resolve(_t5_repo(name), allow_patterns=[*T5_FILES, *TOKENIZER_FILES], **kw)
    return Resolved(root, layout, source, t5_root, _tokenizer_dir(root / "tokenizer", t5_root))


def _check_prompts(prompts: str | Sequence[str], what: str = "prompt") -> list[str]:
    batch = [prompts] if isinstance(prompts, str) else prompts
    if not isinstance(batch, list | tuple) or not batch:
        raise InvalidInputError(f"{what}s must be a string or a non-empty list of strings")
    out = []
    for i, text in enumerate(batch):
        if not isinstance(text, str):
            raise InvalidInputError(f"{what} {i} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise InvalidInputError(f"{what} {i} is empty (or only whitespace)")
        if len(text) > LONG_PROMPT_CHARS:
            warnings.warn(
                f"{what} {i} has {len(text)} characters; T5 reads a limited number of tokens, "
                "the rest is ignored",
                stacklevel=3,
            )
        out.append(text)
    return out


def _number(value: Any, name: str, *, low: float, high: float = math.inf, low_open: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInputError(f"{name} must be a finite number, got {value!r}")
    bad_low = value <= low if low_open else value < low
    if bad_low or value > high:
        lo = "(" if low_open else "["
        raise InvalidInputError(f"{name} must be in {lo}{low:g}, {high:g}], got {value!r}")
    return float(value)


class StableAudio:
    """Stable Audio Open (small or 1.0; objective, conditioners and window read from the
    checkpoint) text-to-audio."""

    def __init__(
        self,
        dit: StableAudioDiT,
        conditioners: StableAudioConditioners,
        text_encoder: T5Encoder,
        tokenizer: T5Tokenizer,
        vae: OobleckVAE,
        *,
        objective: str,
        sigma_min: float = samplers.DEFAULT_SIGMA_MIN,
        sigma_max: float = samplers.DEFAULT_SIGMA_MAX,
        source: str = "",
    ) -> None:
        if objective not in OBJECTIVES:
            raise WeightsError(f"{source}: diffusion objective {objective!r} not supported")
        self.dit = dit
        self.conditioners = conditioners
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.vae = vae
        self.objective = objective
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)
        self.source = source
        self.defaults = DEFAULTS[objective]

    @property
    def sample_rate(self) -> int:
        return self.vae.sample_rate

    @property
    def audio_channels(self) -> int:
        return self.vae.config.audio_channels

    @property
    def window(self) -> int:
        """Latent frames the DiT always denoises (upstream ``sample_size`` / hop)."""
        return self.dit.config.sample_size

    @property
    def max_duration(self) -> float:
        return self.window * self.vae.hop_length / self.sample_rate

    @property
    def number_ids(self) -> tuple[str, ...]:
        return self.conditioners.config.number_ids

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
    ) -> StableAudio:
        """Load a hub repo id, an upstream directory (stable-audio-tools or diffusers layout) or
        an audiogen-converted directory. Upstream weights are converted once into ``cache_dir``
        (default ``$AUDIOGEN_CACHE`` or ``~/.cache/audiogen``). ``dtype`` defaults to the
        backend's (float32 on CPU, float16 on a GPU)."""
        compute = backend.resolve_dtype(dtype)
        found = resolve(
            name_or_path, offline=offline, revision=revision, trust_remote_code=trust_remote_code
        )
        if found.layout == "audiogen":
            return cls.load_converted(found.root, dtype=compute)
        up = read_upstream(found.root, t5_dir=found.t5_dir, tokenizer_dir=found.tokenizer_dir)
        root = converted_dir(up, found.root, source=found.source, cache_dir=cache_dir)
        return cls.load_converted(root, dtype=compute)

    @classmethod
    def load_converted(cls, root: Path, *, dtype: mx.Dtype | str | None = None) -> StableAudio:
        compute = backend.resolve_dtype(dtype)
        manifest = read_manifest(root)
        configs = {p: read_json(root / p / "config.json") for p in COMPONENTS}
        models = _build(configs, str(root))
        for part in ("dit", "conditioners", "vae"):
            path = root / part / "model.safetensors"
            load_into(models[part], cast_floats(load_safetensors(path), compute), source=path)
        return cls(
            cast(StableAudioDiT, models["dit"]),
            cast(StableAudioConditioners, models["conditioners"]),
            # T5's own loader keeps its fp16 overflow guard
            T5Encoder.from_pretrained(root / "t5", dtype=compute),
            T5Tokenizer.from_pretrained(root / "tokenizer"),
            cast(OobleckVAE, models["vae"]),
            objective=str(manifest["objective"]),
            sigma_min=float(manifest.get("sigma_min", samplers.DEFAULT_SIGMA_MIN)),
            sigma_max=float(manifest.get("sigma_max", samplers.DEFAULT_SIGMA_MAX)),
            source=str(root),
        )

    def _seconds(self, batch: int, seconds_start: float, duration: float) -> dict[str, Any]:
        # seconds_total is where the audio ends in the (virtual) source file: start + duration,
        # as diffusers' audio_end_in_s; stable-audio-tools trained it as the file's length.
        values = {"seconds_start": seconds_start, "seconds_total": seconds_start + duration}
        return {k: values[k] for k in self.number_ids if k in values} | {
            k: 0.0 for k in self.number_ids if k not in values
        }

    def encode_prompts(
        self,
        prompts: Sequence[str],
        seconds: Mapping[str, Any],
    ) -> Conditioning:
        ids, mask = self.tokenizer(list(prompts), max_length=self.conditioners.config.max_length)
        return self.conditioners(self.text_encoder, mx.array(ids), mx.array(mask), seconds)

    def _resolve_options(
        self, steps: int | None, cfg_scale: float | None, sampler: str | None
    ) -> tuple[int, float, str]:
        kind = self.defaults.sampler if sampler is None else sampler
        if kind not in samplers.SAMPLERS:
            raise InvalidInputError(
                f"unknown sampler {kind!r}; valid samplers: {', '.join(samplers.SAMPLERS)}"
            )
        if samplers.SAMPLERS[kind] != self.objective:
            valid = [k for k, o in samplers.SAMPLERS.items() if o == self.objective]
            raise InvalidInputError(
                f"sampler {kind!r} is for {samplers.SAMPLERS[kind]!r} models; this model's "
                f"objective is {self.objective!r} (samplers: {', '.join(valid)})"
            )
        n = self.defaults.steps if steps is None else steps
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000:
            raise InvalidInputError(f"steps must be an integer in [1, 10000], got {n!r}")
        cfg = self.defaults.cfg_scale if cfg_scale is None else cfg_scale
        cfg = _number(cfg, "cfg_scale", low=0.0, high=100.0, low_open=False)
        return n, cfg, kind

    def _check_duration(self, duration: Any) -> float:
        return _number(duration, "duration", low=0.0, high=self.max_duration, low_open=True)

    def generate_latents(
        self,
        prompts: str | Sequence[str],
        duration: float,
        *,
        noise: mx.array,
        step_noise: samplers.StepNoise | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        sampler: str | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        seconds_start: float = 0.0,
        init_latents: mx.array | None = None,
        init_strength: float | None = None,
        init_noise_sigma: float | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> mx.array:
        """Clean latents ``(batch, io_channels, window)`` from explicit randomness: ``noise``
        (unit variance, that shape) and, for stochastic samplers, ``step_noise`` (see
        ``samplers.sample``). ``init_noise_sigma`` (v only) scales the initial noise as diffusers
        does (``samplers.diffusers_init_noise_sigma``) instead of by σ_max."""
        batch = _check_prompts(prompts)
        duration = self._check_duration(duration)
        start = _number(seconds_start, "seconds_start", low=0.0, low_open=False)
        n, cfg, kind = self._resolve_options(steps, cfg_scale, sampler)
        shape = (len(batch), self.dit.config.io_channels, self.window)
        if tuple(noise.shape) != shape:
            raise InvalidInputError(f"noise has shape {tuple(noise.shape)}, expected {shape}")
        seconds = self._seconds(len(batch), start, duration)
        cond = self.encode_prompts(batch, seconds)
        guided = cfg != 1.0
        if guided:
            negative = None
            if negative_prompt is not None:
                neg = _check_prompts(negative_prompt, "negative prompt")
                if len(neg) == 1:
                    neg = neg * len(batch)
                if len(neg) != len(batch):
                    raise InvalidInputError(
                        f"{len(neg)} negative prompts for {len(batch)} prompts (give one or one "
                        "per prompt)"
                    )
                negative = self.encode_prompts(neg, seconds)
            cond = classifier_free(cond, negative)
        elif negative_prompt is not None:
            warnings.warn("negative_prompt has no effect at cfg_scale 1", stacklevel=2)
        total = n * (4 if kind == "rk4" else 1)
        # Progress waits for the evaluation before the current one, so the device always has
        # one queued while the host builds the next graph (a sync per step left the GPU idle
        # for the graph-building time of every step).
        pending: list[mx.array] = []
        dit = self._dit_call()

        def denoise(x: mx.array, t: mx.array) -> mx.array:
            if guided:
                out = dit(mx.concatenate([x, x]), mx.concatenate([t, t]), cond)
                uncond, conditioned = mx.split(out, 2)
                v = uncond + (conditioned - uncond) * cfg
            else:
                v = dit(x, t, cond)
            v = v.astype(mx.float32)
            if progress is not None:
                mx.async_eval(v)
                pending.append(v)
                if len(pending) > 1:
                    mx.eval(pending[-2])
                    progress(len(pending) - 1, total)
            return v

        sigma_kw: dict[str, Any] = {}
        if self.objective == "v":
            sigma_kw = {
                "sigma_min": self.sigma_min,
                "sigma_max": self.sigma_max,
                "init_noise_sigma": init_noise_sigma,
            }
        elif init_noise_sigma is not None:
            raise InvalidInputError("init_noise_sigma applies to v-objective models only")
        latents = samplers.sample(
            kind,
            denoise,
            noise.astype(mx.float32),
            n,
            step_noise=step_noise,
            init_latents=init_latents,
            init_strength=init_strength,
            **sigma_kw,
        )
        mx.eval(latents)
        if progress is not None and pending:
            progress(len(pending), total)
        return latents

    def _dit_call(self) -> Callable[[mx.array, mx.array, Any], mx.array]:
        """The DiT as ``(x, t, cond) -> prediction``; on a GPU compiled (``mx.compile`` fuses its
        elementwise chains: one 1.0 evaluation 21.7 → 18.9 ms on an H200, tools/bench/
        dit_profile.py). Built once per pipeline: MLX retraces it only for new shapes (another
        batch or window). Not on the CPU, where compiling needs a C++ compiler at run time and
        the arithmetic dominates."""

        def run(x: mx.array, t: mx.array, cross: mx.array, glob: mx.array | None) -> mx.array:
            return self.dit(x, t, cross, None, glob)

        fn: Callable[..., mx.array] = run
        if mx.default_device() == mx.gpu:
            if getattr(self, "_compiled_dit", None) is None:
                self._compiled_dit = mx.compile(run)
            fn = self._compiled_dit

        def call(x: mx.array, t: mx.array, cond: Any) -> mx.array:
            return fn(x, t, cond.cross_attn_cond, cond.global_cond)

        return call

    def _init_audio(self, init_audio: InitAudio) -> np.ndarray:
        """``(channels, samples)`` at the VAE's rate and channel count from a path or an
        ``(array, rate)`` pair."""
        rate: float
        if isinstance(init_audio, str | os.PathLike):
            wave, rate = audio_io.read(init_audio)
        elif isinstance(init_audio, tuple) and len(init_audio) == 2:
            wave, rate = np.asarray(init_audio[0], dtype=np.float32), init_audio[1]
            if wave.ndim == 1:
                wave = wave[None]
        else:
            raise InvalidInputError(
                "init_audio must be an audio file path or an (audio (channels, samples), "
                "sample_rate) pair"
            )
        wave = audio_io.resample(wave, rate, self.sample_rate)
        return audio_io.to_channels(wave, self.audio_channels)

    def encode_audio(self, wave: np.ndarray, batch: int, key: mx.array) -> mx.array:
        """VAE latents of ``wave`` padded with silence (or cut) to the window, one per batch
        item; a posterior sample as stable-audio-tools' VAE bottleneck and diffusers draw."""
        samples = self.window * self.vae.hop_length
        fitted = np.zeros((self.audio_channels, samples), dtype=np.float32)
        n = min(samples, wave.shape[-1])
        fitted[:, :n] = wave[:, :n]
        z = self.vae.encode(mx.array(fitted)[None], sample=True, key=key)
        return mx.broadcast_to(z, (batch, *z.shape[1:]))

    def decode(self, latents: mx.array) -> np.ndarray:
        """Latents ``(B, io_channels, T)`` → float32 audio ``(B, channels, T · hop)``."""
        return np.array(self.vae.decode(latents), dtype=np.float32)

    def generate(
        self,
        prompts: str | Sequence[str],
        duration: float,
        *,
        steps: int | None = None,
        cfg_scale: float | None = None,
        sampler: str | None = None,
        negative_prompt: str | Sequence[str] | None = None,
        seed: int | None = None,
        seconds_start: float = 0.0,
        init_audio: InitAudio | None = None,
        init_strength: float | None = None,
        progress: Progress = None,
    ) -> np.ndarray:
        """Audio ``(batch, channels, samples)`` float32 at ``sample_rate``: ``duration`` seconds
        (at most ``max_duration``) per prompt, all prompts in one pass.

        Defaults follow the objective (``DEFAULTS``): rectified flow (small) ping-pong, 8 steps,
        cfg 1 (no guidance pass); v (1.0) DPM++ 3M SDE, 100 steps, cfg 7, σ 0.3…500.
        ``init_audio`` (a file path or ``(audio, rate)``) is resampled to the model's rate and
        channels, encoded, noised to ``init_strength`` (a σ for v models, a t in (0, 1] for
        rectified flow; see ``samplers.sample``) and denoised from there. The same ``seed`` gives
        the same audio; initial and per-step noise are drawn from it with ``mx.random``.
        """
        batch = _check_prompts(prompts)
        duration = self._check_duration(duration)
        n, _, kind = self._resolve_options(steps, cfg_scale, sampler)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise InvalidInputError(f"seed must be a non-negative integer or None, got {seed!r}")
        if init_strength is not None and init_audio is None:
            raise InvalidInputError("init_strength needs init_audio")
        init_latents = None
        key = mx.random.key(secrets.randbits(63) if seed is None else seed)
        noise_key, step_key, init_key = mx.random.split(key, 3)
        shape = (len(batch), self.dit.config.io_channels, self.window)
        if init_audio is not None:
            init_latents = self.encode_audio(self._init_audio(init_audio), len(batch), init_key)
            if init_strength is None:
                init_strength = self.defaults.init_strength
        noise = mx.random.normal(shape, key=noise_key)
        step_noise = (
            samplers.step_noise_from_key(step_key, n, shape)
            if kind in samplers.STOCHASTIC
            else None
        )
        report, bar = progress_callback(progress, "denoising")
        try:
            latents = self.generate_latents(
                batch,
                duration,
                noise=noise,
                step_noise=step_noise,
                steps=n,
                cfg_scale=cfg_scale,
                sampler=kind,
                negative_prompt=negative_prompt,
                seconds_start=seconds_start,
                init_latents=init_latents,
                init_strength=init_strength,
                progress=report,
            )
        finally:
            if bar is not None:
                bar.close()
        samples = round(duration * self.sample_rate)
        return self.decode(latents)[..., :samples]

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


__all__ = [
    "DEFAULTS",
    "FORMAT",
    "MANIFEST",
    "SamplingDefaults",
    "StableAudio",
    "Upstream",
    "convert",
    "converted_dir",
    "detect_layout",
    "read_manifest",
    "read_upstream",
    "resolve",
]
