"""Conversion of MusicGen-style (facebook/musicgen-style, an audiocraft export) into an audiogen
directory.

The style checkpoint is not self-contained: ``state_dict.bin`` (``{"best_state", "xp.cfg"}``)
holds the LM, the text conditioner's output projection and the style conditioner, but audiocraft
loads the rest by name (read from its code, audiocraft main 896ec7c):

- T5: ``T5Conditioner(finetune=False)`` keeps ``t5-base`` out of the checkpoint and loads it from
  the hub (``t5`` here: a transformers T5 directory with its tokenizer);
- MERT: ``m-a-p/MERT-v1-95M``, loaded by ``FeatureExtractor`` with ``AutoModel`` (``mert``);
- EnCodec: ``compression_state_dict.bin`` is audiocraft's full 32 kHz EnCodec, the model its
  training config names as ``//pretrained/facebook/encodec_32khz`` — transformers'
  facebook/encodec_32khz was converted from that same file, so we read that repo (``encodec``)
  instead of renaming SEANet keys (not hash-verified: the style repo's blob hash was not
  available offline).

Converted layout: the text MusicGen layout (``decoder/ t5/ encodec/ tokenizer/``; the decoder
has no cross-attention) plus ``mert/`` (config + our MERT parameters) and ``style/`` (the style
conditioner's config + parameters), with ``"model": "musicgen-style"`` in the manifest.
Reading ``.bin`` needs torch through audiogen-convert (``convert.bin_reader``).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from audiogen_core import encodec, t5
from audiogen_core.errors import InvalidInputError, MissingWeightsError, WeightsError
from audiogen_core.weights import float_dtype, load_safetensors, read_json, write_model_dir

import mlx.core as mx

from audiogen_musicgen import convert, mert, style
from audiogen_musicgen import weights as decoder_weights
from audiogen_musicgen.config import DecoderConfig
from audiogen_musicgen.decoder import MusicGenDecoder

STYLE_FILE = "state_dict.bin"
# Where audiocraft gets the parts that are not in state_dict.bin (hub ids, allow-listed).
COMPANIONS = {
    "t5": "t5-base",
    "mert": "m-a-p/MERT-v1-95M",
    "encodec": "facebook/encodec_32khz",
}
COMPANION_PATTERNS = {
    "t5": ["config.json", "model.safetensors", *convert.TOKENIZER_FILES],
    "mert": ["config.json", "model.safetensors", "pytorch_model.bin"],
    "encodec": ["config.json", "model.safetensors"],
}
PARTS = ("decoder", "t5", "encodec", "mert", "style")


def is_style_checkpoint(root: Path) -> bool:
    return (root / STYLE_FILE).is_file() and not (root / "config.json").is_file()


def _weights(root: Path, what: str) -> tuple[dict[str, mx.array], Path]:
    """A companion directory's tensors: ``model.safetensors``, else ``pytorch_model.bin``
    (needs audiogen-convert's torch reader)."""
    single = root / "model.safetensors"
    if single.is_file():
        return load_safetensors(single), single
    pickle = root / "pytorch_model.bin"
    if pickle.is_file():
        reader = convert.bin_reader()
        if reader is None:
            raise WeightsError(f"{pickle}: {convert.BIN_HINT}")
        return dict(reader.read_bin(pickle)), pickle
    raise MissingWeightsError(f"{root}: no model.safetensors or pytorch_model.bin for {what}")


def _style_section(cfg: dict[str, Any], source: str) -> dict[str, Any]:
    try:
        section = cfg["conditioners"]["self_wav"]["style"]
    except (KeyError, TypeError):
        raise WeightsError(
            f"{source}: xp.cfg has no conditioners.self_wav.style section (not MusicGen-style)"
        ) from None
    if not isinstance(section, dict):
        raise WeightsError(f"{source}: conditioners.self_wav.style is not a mapping")
    return section


def read_style_checkpoint(
    path: Path,
) -> tuple[dict[str, dict[str, mx.array]], dict[str, dict[str, Any]]]:
    """``state_dict.bin`` -> our parameters and configs for ``decoder`` and ``style``. Every
    tensor must have an owner: anything but the LM, the text projection and the style
    conditioner is refused by name."""
    reader = convert.bin_reader()
    if reader is None:
        raise WeightsError(f"{path}: an audiocraft checkpoint. {convert.BIN_HINT}")
    tensors, cfg = reader.read_audiocraft(path)
    source = str(path)
    if not cfg:
        raise WeightsError(f"{source}: no xp.cfg in the checkpoint (not an audiocraft export)")
    style_keys = {k for k in tensors if k.startswith(style.PREFIX)}
    text_proj = decoder_weights.AUDIOCRAFT_TEXT_PROJ
    stray = sorted(
        k
        for k in tensors
        if k.startswith("condition_provider.")
        and k not in style_keys
        and not k.startswith(text_proj)
    )
    if stray:
        raise MissingWeightsError(
            f"{source}: unexpected conditioner weights: {', '.join(stray[:5])}"
        )
    if not style_keys:
        raise WeightsError(f"{source}: no style conditioner ({style.PREFIX}*): not MusicGen-style")
    proj = tensors.get(text_proj + "weight")
    if proj is None:
        raise MissingWeightsError(f"{source}: missing weight {text_proj}weight")
    embed = tensors.get(style.PREFIX + "embed.weight")
    if embed is None:
        raise MissingWeightsError(f"{source}: missing weight {style.PREFIX}embed.weight")
    try:
        decoder_config = DecoderConfig.from_audiocraft(cfg, int(proj.shape[1]))
        preset = style.StyleConfig.from_audiocraft(
            _style_section(cfg, source), decoder_config.hidden_size
        )
        # Widths and depth from the tensors (the preset names only the head count); the
        # feature width is MERT's (audiocraft hard-codes 768, MERT-v1-95M's).
        head = style.PREFIX + "transformer.layers."
        layers = {k[len(head) :].split(".")[0] for k in style_keys if k.startswith(head)}
        ffn = tensors.get(style.PREFIX + "transformer.layers.0.linear1.weight")
        style_config = replace(
            preset,
            dim=int(embed.shape[0]),
            feature_dim=int(embed.shape[1]),
            num_layers=len(layers),
            ffn_dim=int(ffn.shape[0]) if ffn is not None else preset.ffn_dim,
        )
    except (InvalidInputError, TypeError, ValueError) as e:
        raise WeightsError(f"{source}: unsupported MusicGen-style config: {e}") from e
    params = {
        "decoder": decoder_weights.sanitize_audiocraft(tensors, source=source),
        "style": style.sanitize(tensors),
    }
    configs = {"decoder": asdict(decoder_config), "style": asdict(style_config)}
    return params, configs


def _companion_parts(
    dirs: dict[str, Path],
) -> tuple[dict[str, dict[str, mx.array]], dict[str, dict[str, Any]]]:
    params: dict[str, dict[str, mx.array]] = {}
    configs: dict[str, dict[str, Any]] = {}
    w, _ = _weights(dirs["t5"], "T5")
    params["t5"], configs["t5"] = t5.sanitize(w), read_json(dirs["t5"] / "config.json")
    w, src = _weights(dirs["encodec"], "EnCodec")
    params["encodec"] = encodec.sanitize(w)
    configs["encodec"] = read_json(dirs["encodec"] / "config.json")
    w, src = _weights(dirs["mert"], "MERT")
    mert_config_path = dirs["mert"] / "config.json"
    mert_config = mert.MertConfig.from_dict(
        read_json(mert_config_path), source=str(mert_config_path)
    )
    params["mert"], configs["mert"] = mert.sanitize(w, str(src)), asdict(mert_config)
    return params, configs


def _check_widths(configs: dict[str, dict[str, Any]], companions: dict[str, Path]) -> None:
    """The companions must fit the checkpoint: T5 width = the text projection's input, MERT
    width = the style conditioner's input, EnCodec rate = the style model's rate."""
    text = configs["t5"].get("d_model")
    if text != configs["decoder"]["text_encoder_hidden_size"]:
        raise WeightsError(
            f"{companions['t5']}: T5 width {text} != the checkpoint's text projection input "
            f"{configs['decoder']['text_encoder_hidden_size']}"
        )
    if configs["mert"]["hidden_size"] != configs["style"]["feature_dim"]:
        raise WeightsError(
            f"{companions['mert']}: MERT width {configs['mert']['hidden_size']} != the style "
            f"conditioner's input {configs['style']['feature_dim']}"
        )
    rate = encodec.EncodecConfig.from_dict(configs["encodec"]).sampling_rate
    if rate != configs["style"]["sample_rate"]:
        raise WeightsError(
            f"{companions['encodec']}: EnCodec at {rate} Hz, the style model runs at "
            f"{configs['style']['sample_rate']} Hz"
        )


def build_models(configs: dict[str, dict[str, Any]], source: str) -> dict[str, Any]:
    try:
        return {
            "decoder": MusicGenDecoder(DecoderConfig.from_dict(configs["decoder"])),
            "t5": t5.T5Encoder(t5.T5Config.from_dict(configs["t5"])),
            "encodec": encodec.EncodecModel(encodec.EncodecConfig.from_dict(configs["encodec"])),
            "mert": mert.MertModel(mert.MertConfig.from_dict(configs["mert"], source=source)),
            "style": style.StyleConditioner(style.StyleConfig.from_dict(configs["style"])),
        }
    except (InvalidInputError, TypeError) as e:
        raise WeightsError(f"{source}: unsupported MusicGen-style config: {e}") from e


def convert_style(
    src: Path,
    dst: Path,
    companions: dict[str, Path],
    *,
    source: str | None = None,
    revision: str | None = None,
    checkpoint_parts: tuple[dict[str, dict[str, mx.array]], dict[str, dict[str, Any]]]
    | None = None,
) -> Path:
    """Convert the style checkpoint directory ``src`` plus the ``companions`` directories
    (``t5``, ``mert``, ``encodec``) into ``dst`` (which must not exist), atomically.
    ``checkpoint_parts``: ``read_style_checkpoint``'s result when the caller already read it
    (to check the checkpoint before fetching companions)."""
    checkpoint = src / STYLE_FILE
    params, configs = checkpoint_parts or read_style_checkpoint(checkpoint)
    params, configs = dict(params), dict(configs)
    more_params, more_configs = _companion_parts(companions)
    params.update(more_params)
    configs.update(more_configs)
    tokenizer = convert.tokenizer_files(companions["t5"])
    _check_widths(configs, companions)
    for part, model in build_models(configs, str(checkpoint)).items():
        convert.check_parameters(model, params[part], f"{checkpoint} ({part})")

    decoder_config = DecoderConfig.from_dict(configs["decoder"])
    manifest = {
        "format": convert.FORMAT,
        "format_version": convert.FORMAT_VERSION,
        "model": "musicgen-style",
        "source": source or str(src),
        "revision": revision,
        "companions": {k: str(v) for k, v in companions.items()},
        "audiogen_version": convert._version(),
        "dtype": float_dtype(params["decoder"].values()),
        "quantization": None,
        "audio_channels": decoder_config.audio_channels,
        "num_codebooks": decoder_config.num_codebooks,
    }
    parts = {part: (configs[part], params[part]) for part in PARTS}
    write_model_dir(dst, parts, tokenizer, manifest, convert.MANIFEST)
    return dst


def converted_dir(
    src: Path,
    companions: dict[str, Path],
    *,
    source: str | None = None,
    cache_dir: Any = None,
) -> Path:
    """The cached converted copy of a style checkpoint, converting on first use (keyed on the
    checkpoint and every companion file)."""
    inputs = [src / STYLE_FILE]
    for name in sorted(companions):
        inputs += sorted(p for p in companions[name].iterdir() if p.is_file())
    return convert.cached_conversion(
        convert.cache_key(src, source, inputs),
        lambda dst: convert_style(
            src, dst, companions, source=source, revision=convert.snapshot_revision(src)
        ),
        cache_dir,
    )


__all__ = [
    "COMPANIONS",
    "COMPANION_PATTERNS",
    "STYLE_FILE",
    "convert_style",
    "converted_dir",
    "is_style_checkpoint",
    "read_style_checkpoint",
]
