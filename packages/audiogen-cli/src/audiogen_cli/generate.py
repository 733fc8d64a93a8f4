"""``audiogen generate``: text to an audio file. Parses options and calls the model library."""

from __future__ import annotations

from pathlib import Path

import click

# Short names users type; anything else is passed on as a hub repo id or a local directory.
MUSICGEN_ALIASES = {
    f"musicgen-{v}": f"facebook/musicgen-{v}"
    for v in (
        "small",
        "medium",
        "large",
        "stereo-small",
        "stereo-medium",
        "stereo-large",
        "melody",
        "melody-large",
        "stereo-melody",
        "stereo-melody-large",
        "style",
    )
}
NOT_YET = {
    "stable-audio-small": "stabilityai/stable-audio-open-small",
    "stable-audio-1.0": "stabilityai/stable-audio-open-1.0",
}
SUFFIXES = (".wav", ".flac", ".ogg")


def _outputs(output: Path, count: int) -> list[Path]:
    """One file per prompt: ``out.wav`` for one prompt, ``out-1.wav``, ``out-2.wav``… for more."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(1, count + 1)]


@click.command()
@click.argument("prompts", nargs=-1, required=True)
@click.option(
    "-m",
    "--model",
    default="musicgen-small",
    show_default=True,
    help="musicgen-small|medium|large|stereo-*, a hub repo id or a local directory.",
)
@click.option(
    "-d", "--duration", type=float, default=10.0, show_default=True, help="Seconds (≤ 30)."
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("out.wav"),
    show_default=True,
    help="Audio file (.wav/.flac/.ogg); numbered when several prompts.",
)
@click.option("--seed", type=int, help="Same seed, same audio.")
@click.option(
    "--guidance", type=float, default=3.0, show_default=True, help="Classifier-free guidance scale."
)
@click.option("--top-k", type=int, default=250, show_default=True)
@click.option("--top-p", type=float, default=0.0, show_default=True, help="0 = off.")
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--offline", is_flag=True, help="Use only the local hub cache.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where converted weights are kept (default $AUDIOGEN_CACHE or ~/.cache/audiogen).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def generate(
    prompts: tuple[str, ...],
    model: str,
    duration: float,
    output: Path,
    seed: int | None,
    guidance: float,
    top_k: int,
    top_p: float,
    temperature: float,
    offline: bool,
    cache_dir: Path | None,
    quiet: bool,
) -> None:
    """Generate music for each PROMPT (batched in one pass) and write audio files."""
    from audiogen_core.errors import InvalidInputError

    if model in NOT_YET:
        raise InvalidInputError(f"{model}: Stable Audio is not in this release yet")
    # Check where the files go before spending minutes generating.
    if output.suffix.lower() not in SUFFIXES:
        raise InvalidInputError(f"{output}: output must end in {', '.join(SUFFIXES)}")
    if not output.resolve().parent.is_dir():
        raise InvalidInputError(f"{output}: directory {output.parent} does not exist")

    from audiogen_musicgen import MusicGen

    m = MusicGen.from_pretrained(
        MUSICGEN_ALIASES.get(model, model), offline=offline or None, cache_dir=cache_dir
    )
    audio = m.generate(
        list(prompts),
        duration,
        guidance_scale=guidance,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        seed=seed,
        progress=not quiet,
    )
    for item, path in zip(audio, _outputs(output, len(prompts)), strict=True):
        click.echo(str(m.save(item, path)))
