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
STABLE_AUDIO_ALIASES = {
    "stable-audio-small": "stabilityai/stable-audio-open-small",
    "stable-audio-1.0": "stabilityai/stable-audio-open-1.0",
}
SUFFIXES = (".wav", ".flac", ".ogg")


def _is_stable_audio(name: str) -> bool:
    """Stable Audio when a local directory holds its files (stable-audio-tools
    model_config.json without a transformers config.json, diffusers model_index.json, or an
    audiogen Stable Audio manifest) or a hub id names a stabilityai/stable-audio repo;
    MusicGen otherwise."""
    from audiogen_convert.stableaudio import is_stableaudio

    return is_stableaudio(name)


def _outputs(output: Path, count: int) -> list[Path]:
    """One file per prompt: ``out.wav`` for one prompt, ``out-1.wav``, ``out-2.wav``… for more."""
    if count == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i}{output.suffix}") for i in range(1, count + 1)]


@click.command()
@click.argument("prompts", nargs=-1)
@click.option(
    "-m",
    "--model",
    default="musicgen-small",
    show_default=True,
    help="musicgen-small|medium|large|stereo-*|melody*, stable-audio-small|stable-audio-1.0, a "
    "hub repo id or a local directory (Stable Audio when it holds model_config.json / "
    "model_index.json).",
)
@click.option(
    "-d",
    "--duration",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds (MusicGen ≤ 30; Stable Audio ≤ its window: small ~11.9, 1.0 ~47.5).",
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
@click.option("--steps", type=int, help="Stable Audio: sampler steps (default: the model's).")
@click.option(
    "--cfg-scale", type=float, help="Stable Audio: guidance scale (default: small 1, 1.0 7)."
)
@click.option(
    "--sampler",
    help="Stable Audio: pingpong|euler|rk4 (small), dpmpp-3m-sde|dpmpp-2m-sde|k-euler (1.0).",
)
@click.option("--negative-prompt", help="Stable Audio: what to steer away from (needs cfg ≠ 1).")
@click.option(
    "--seconds-start", type=float, default=0.0, show_default=True, help="Stable Audio (1.0)."
)
@click.option(
    "--init-audio",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Stable Audio: audio file to start from (audio-to-audio).",
)
@click.option(
    "--init-strength",
    type=float,
    help="Stable Audio: noise level for --init-audio (σ for 1.0, t in (0, 1] for small).",
)
@click.option(
    "--melody",
    "melodies",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="MusicGen melody models: audio file whose melody (chroma) to follow; once for all "
    "prompts or once per prompt. Up to 30 s are used.",
)
@click.option(
    "--style-audio",
    "style_audio",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="musicgen-style: reference audio whose style to follow (≥ 3 s); once for all prompts or "
    "once per prompt. Without a PROMPT: style only.",
)
@click.option(
    "--style-beta",
    type=float,
    help="musicgen-style: double-guidance weight of the text (default 5 with text and style, "
    "else plain CFG).",
)
@click.option(
    "--style-excerpt-start",
    type=float,
    help="musicgen-style: where the 3 s excerpt starts, in seconds (default: drawn from --seed).",
)
@click.option(
    "--eval-q",
    type=click.IntRange(1, 6),
    help="musicgen-style: RVQ codebooks of the style tokens (1-6; default the model's, 3; fewer "
    "= looser style).",
)
@click.option(
    "--quantize",
    type=click.Choice(["4", "8"]),
    help=(
        "MusicGen: quantize the decoder's linears (less memory; on a CUDA GPU the fused "
        "float16 decode step, which needs float weights, is faster)."
    ),
)
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
    steps: int | None,
    cfg_scale: float | None,
    sampler: str | None,
    negative_prompt: str | None,
    seconds_start: float,
    init_audio: Path | None,
    init_strength: float | None,
    melodies: tuple[Path, ...],
    style_audio: tuple[Path, ...],
    style_beta: float | None,
    style_excerpt_start: float | None,
    eval_q: int | None,
    quantize: str | None,
) -> None:
    """Generate audio for each PROMPT (batched in one pass) and write audio files."""
    from audiogen_core.errors import InvalidInputError

    styled = {
        "--style-audio": style_audio or None,
        "--style-beta": style_beta,
        "--style-excerpt-start": style_excerpt_start,
        "--eval-q": eval_q,
    }
    style_flags = [k for k, v in styled.items() if v is not None]
    if not prompts and not style_audio:
        raise InvalidInputError("give a PROMPT (or, for musicgen-style, --style-audio)")

    # Check where the files go before spending minutes generating.
    if output.suffix.lower() not in SUFFIXES:
        raise InvalidInputError(f"{output}: output must end in {', '.join(SUFFIXES)}")
    if not output.resolve().parent.is_dir():
        raise InvalidInputError(f"{output}: directory {output.parent} does not exist")

    name = STABLE_AUDIO_ALIASES.get(model, model)
    if _is_stable_audio(name):
        flags = [*(["--quantize"] if quantize else []), *(["--melody"] if melodies else [])]
        if flags or style_flags:
            raise InvalidInputError(
                f"{', '.join(flags + style_flags)}: MusicGen options; {model} is Stable Audio"
            )
        from audiogen_stableaudio import StableAudio

        sa = StableAudio.from_pretrained(name, offline=offline or None, cache_dir=cache_dir)
        waves = sa.generate(
            list(prompts),
            duration,
            steps=steps,
            cfg_scale=cfg_scale,
            sampler=sampler,
            negative_prompt=negative_prompt,
            seed=seed,
            seconds_start=seconds_start,
            init_audio=init_audio,
            init_strength=init_strength,
            progress=not quiet,
        )
        for item, path in zip(waves, _outputs(output, len(prompts)), strict=True):
            click.echo(str(sa.save(item, path)))
        return
    given = {
        "--steps": steps,
        "--cfg-scale": cfg_scale,
        "--sampler": sampler,
        "--negative-prompt": negative_prompt,
        "--init-audio": init_audio,
        "--init-strength": init_strength,
        "--seconds-start": seconds_start or None,
    }
    extra = [k for k, v in given.items() if v is not None]
    if extra:
        raise InvalidInputError(f"{', '.join(extra)}: Stable Audio options; {model} is MusicGen")
    if len(melodies) not in (0, 1, len(prompts)):
        raise InvalidInputError(
            f"--melody given {len(melodies)} times for {len(prompts)} prompts (once, or once each)"
        )
    if prompts and len(style_audio) not in (0, 1, len(prompts)):
        raise InvalidInputError(
            f"--style-audio given {len(style_audio)} times for {len(prompts)} prompts "
            "(once, or once each)"
        )

    from audiogen_musicgen import MusicGen

    m = MusicGen.from_pretrained(
        MUSICGEN_ALIASES.get(model, model),
        offline=offline or None,
        cache_dir=cache_dir,
        quantize=int(quantize) if quantize else None,
    )
    if melodies and not m.is_melody:
        raise InvalidInputError(f"--melody: {model} is not a melody model (try musicgen-melody)")
    if style_flags and not m.is_style:
        raise InvalidInputError(
            f"{', '.join(style_flags)}: {model} is not a style model (try musicgen-style)"
        )
    if not prompts and not m.is_style:
        raise InvalidInputError(f"give a PROMPT: {model} generates from text")
    style_kw: dict[str, object] = {}
    if m.is_style:
        # audiocraft's documented text+style setting: cfg 3 with beta 5; plain CFG otherwise.
        beta = style_beta if style_beta is not None else (5.0 if prompts and style_audio else None)
        style_kw = {
            "style": list(style_audio) or None,
            "style_beta": beta,
            "style_excerpt_start": style_excerpt_start,
            "eval_q": eval_q,
        }
    audio = m.generate(
        list(prompts) or None,
        duration,
        guidance_scale=guidance,
        top_k=top_k,
        top_p=top_p,
        temperature=temperature,
        seed=seed,
        progress=not quiet,
        melody=list(melodies) or None,
        **style_kw,  # type: ignore[arg-type]
    )
    for item, path in zip(audio, _outputs(output, len(audio)), strict=True):
        click.echo(str(m.save(item, path)))
