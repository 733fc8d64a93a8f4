"""Upstream key lists of the ten full-size MusicGen text and melody models, for
tests/musicgen/test_key_coverage.py.

Builds transformers' ``MusicgenForConditionalGeneration`` for each variant's config on the meta
device (no memory, no download) and writes its ``state_dict()`` key names and shapes, with the
composite config, to tests/fixtures/musicgen_keys/<variant>.json. Run:

    uv run python tools/musicgen_keys.py

Configs (transformers ``convert_musicgen_transformers.py`` / audiocraft): decoders small 24 layers
× 1024 (16 heads), medium 48 × 1536 (24 heads), large 48 × 2048 (32 heads), FFN 4 × width,
vocabulary 2048 with pad/bos 2048; mono 4 codebooks, stereo 8 (audio_channels 2). Every variant
uses T5-base as its text encoder (the converter loads ``t5-base`` for all three sizes) and the
mono facebook/encodec_32khz codec (stereo decodes two mono streams). The melody variants
(transformers ``convert_musicgen_melody_transformers.py``) are ``MusicgenMelodyForConditionalGeneration``:
melody / stereo-melody 48 × 1536 (24 heads), the -large ones 48 × 2048 (32 heads), the same T5-base
and codec, ``num_chroma`` 12, ``chroma_length`` 235.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "musicgen_keys"

SIZES = {  # name: (layers, hidden, heads)
    "small": (24, 1024, 16),
    "medium": (48, 1536, 24),
    "large": (48, 2048, 32),
}
VARIANTS = {
    **{name: ("facebook/musicgen-" + name, size, 1) for name, size in SIZES.items()},
    **{
        f"stereo-{name}": ("facebook/musicgen-stereo-" + name, size, 2)
        for name, size in SIZES.items()
    },
    "melody": ("facebook/musicgen-melody", SIZES["medium"], 1),
    "melody-large": ("facebook/musicgen-melody-large", SIZES["large"], 1),
    "stereo-melody": ("facebook/musicgen-stereo-melody", SIZES["medium"], 2),
    "stereo-melody-large": ("facebook/musicgen-stereo-melody-large", SIZES["large"], 2),
}


def is_melody(variant: str) -> bool:
    return "melody" in variant


# t5-base's config.json.
T5_BASE: dict[str, Any] = {
    "vocab_size": 32128,
    "d_model": 768,
    "d_kv": 64,
    "d_ff": 3072,
    "num_layers": 12,
    "num_heads": 12,
    "feed_forward_proj": "relu",
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
}
# facebook/encodec_32khz (transformers convert_encodec_checkpoint_to_pytorch.py, "encodec_32khz").
ENCODEC_32K: dict[str, Any] = {
    "sampling_rate": 32_000,
    "audio_channels": 1,
    "upsampling_ratios": [8, 5, 4, 4],
    "target_bandwidths": [2.2],
    "num_filters": 64,
    "codebook_size": 2048,
    "use_causal_conv": False,
    "normalize": False,
    "use_conv_shortcut": False,
}


def make_config(variant: str) -> Any:
    from transformers import (
        EncodecConfig,
        MusicgenConfig,
        MusicgenDecoderConfig,
        MusicgenMelodyConfig,
        MusicgenMelodyDecoderConfig,
        T5Config,
    )

    _, (layers, hidden, heads), channels = VARIANTS[variant]
    melody = is_melody(variant)
    decoder_cls = MusicgenMelodyDecoderConfig if melody else MusicgenDecoderConfig
    decoder = decoder_cls(
        vocab_size=2048,
        hidden_size=hidden,
        ffn_dim=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_codebooks=4 * channels,
        audio_channels=channels,
        max_position_embeddings=2048,
        pad_token_id=2048,
        bos_token_id=2048,
        tie_word_embeddings=False,
    )
    composite = MusicgenMelodyConfig if melody else MusicgenConfig
    return composite(
        text_encoder=T5Config(**T5_BASE),
        audio_encoder=EncodecConfig(**ENCODEC_32K),
        decoder=decoder,
    )


def upstream_keys(torch: Any, variant: str) -> dict[str, Any]:
    """``{"repo", "config", "keys": {name: shape}}`` of the variant, built on the meta device."""
    from transformers import (
        MusicgenForConditionalGeneration,
        MusicgenMelodyForConditionalGeneration,
    )

    config = make_config(variant)
    cls = (
        MusicgenMelodyForConditionalGeneration
        if is_melody(variant)
        else MusicgenForConditionalGeneration
    )
    with torch.device("meta"):
        model = cls(config)
    keys = {k: list(v.shape) for k, v in model.state_dict().items()}
    composite = config.to_dict()
    composite.pop("transformers_version", None)
    return {"repo": VARIANTS[variant][0], "config": composite, "keys": keys}


def dump(data: dict[str, Any]) -> str:
    """Compact JSON with one key per line (greppable, small diffs)."""
    head = {k: v for k, v in data.items() if k != "keys"}
    lines = [json.dumps(k) + ": " + json.dumps(v) for k, v in sorted(data["keys"].items())]
    body = json.dumps(head, sort_keys=True, default=str)[:-1]
    return body + ', "keys": {\n' + ",\n".join(lines) + "\n}}\n"


def main() -> int:
    import torch

    OUT.mkdir(parents=True, exist_ok=True)
    for variant in VARIANTS:
        data = upstream_keys(torch, variant)
        path = OUT / f"{variant}.json"
        path.write_text(dump(data))
        print(f"{variant}: {len(data['keys'])} keys, {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
