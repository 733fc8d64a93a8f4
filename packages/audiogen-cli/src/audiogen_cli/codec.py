"""``audiogen codec``: EnCodec encode / decode / round trip of audio files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

DEFAULT_CODEC = "facebook/encodec_32khz"
_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json"]

model_option = click.option(
    "--model",
    "-m",
    default=DEFAULT_CODEC,
    show_default=True,
    help="Hub repo id or local directory of an EnCodec (or MusicGen) checkpoint.",
)
offline_option = click.option("--offline", is_flag=True, help="Use only the local hub cache.")


def _load(model: str, offline: bool) -> Any:
    from audiogen_core import hub
    from audiogen_core.encodec import EncodecModel

    path = hub.resolve(model, allow_patterns=_PATTERNS, offline=offline or None)
    return EncodecModel.from_pretrained(path)


@click.group()
def codec() -> None:
    """Encode audio to EnCodec tokens and decode them back."""


@codec.command()
@click.argument("audio_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--codebooks", type=click.IntRange(min=1), help="Codebooks to keep (default: all).")
@model_option
@offline_option
def encode(
    audio_file: Path, output: Path, codebooks: int | None, model: str, offline: bool
) -> None:
    """Encode AUDIO_FILE (any format soundfile reads) to a .npz of codes."""
    from audiogen_core import audio
    from audiogen_core.codes import CodesFile, save_codes

    m = _load(model, offline)
    wave, _ = audio.read(audio_file, sample_rate=m.sample_rate, channels=m.channels)
    codes = m.encode(wave[None], num_codebooks=codebooks)
    import numpy as np

    out = save_codes(output, CodesFile(np.array(codes), m.sample_rate, m.channels, wave.shape[-1]))
    click.echo(f"{out}: {codes.shape[1]} codebooks × {codes.shape[2]} frames")


@codec.command()
@click.argument("codes_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@model_option
@offline_option
def decode(codes_file: Path, output: Path, model: str, offline: bool) -> None:
    """Decode a .npz of codes to an audio file (.wav / .flac / .ogg)."""
    from audiogen_core import audio
    from audiogen_core.codes import load_codes
    from audiogen_core.errors import InvalidInputError

    import numpy as np

    data = load_codes(codes_file)
    m = _load(model, offline)
    if (data.sample_rate, data.channels) != (m.sample_rate, m.channels):
        raise InvalidInputError(
            f"{codes_file}: codes are for {data.sample_rate} Hz × {data.channels} ch, the model "
            f"decodes {m.sample_rate} Hz × {m.channels} ch"
        )
    wave = np.array(m.decode(data.codes))[0, :, : data.num_samples]
    click.echo(str(audio.write(output, wave, m.sample_rate)))


@codec.command()
@click.argument("audio_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@model_option
@offline_option
def roundtrip(audio_file: Path, output: Path, model: str, offline: bool) -> None:
    """Encode AUDIO_FILE and decode it again: hear what the codec keeps."""
    from audiogen_core import audio

    import numpy as np

    m = _load(model, offline)
    wave, _ = audio.read(audio_file, sample_rate=m.sample_rate, channels=m.channels)
    out = np.array(m.decode(m.encode(wave[None])))[0, :, : wave.shape[-1]]
    click.echo(str(audio.write(output, out, m.sample_rate)))
