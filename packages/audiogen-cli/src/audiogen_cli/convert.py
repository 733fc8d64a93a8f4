"""``audiogen convert``: an upstream MusicGen checkpoint (hub repo id or local directory, in any
format audiogen-convert reads) to an audiogen directory. Parses options and calls the library."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("src")
@click.option(
    "-o",
    "--output",
    "output",
    required=True,
    type=click.Path(path_type=Path),
    help="Directory to write (must not exist unless --force).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float16", "bfloat16", "float32"]),
    help="Cast floating weights (default: keep the published dtype).",
)
@click.option("--offline", is_flag=True, help="Use only the local hub cache.")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--revision", help="Hub revision (branch, tag or commit).")
@click.option(
    "--trust-remote-code",
    is_flag=True,
    help="Allow hub repos outside audiogen's known list (no code is ever run).",
)
def convert(
    src: str,
    output: Path,
    dtype: str | None,
    offline: bool,
    force: bool,
    revision: str | None,
    trust_remote_code: bool,
) -> None:
    """Convert SRC (a hub repo id such as facebook/musicgen-small, or a local upstream
    directory) into an audiogen directory. facebook/musicgen-style (audiocraft) also fetches
    the parts audiocraft loads by name: t5-base, m-a-p/MERT-v1-95M, facebook/encodec_32khz."""
    from audiogen_convert.musicgen import check_out_dir, convert_musicgen, resolve_source
    from audiogen_convert.stableaudio import convert_stableaudio, is_stableaudio

    if is_stableaudio(src):
        sa = convert_stableaudio(
            src,
            output,
            dtype=dtype,
            offline=offline or None,
            revision=revision,
            trust_remote_code=trust_remote_code,
            force=force,
        )
        click.echo(
            f"detected: {sa.format} checkpoint, Stable Audio ({sa.objective}; conditioners "
            f"{', '.join(sa.conditioners)})"
        )
        click.echo(f"wrote: {sa.out_dir} ({sa.dtype})")
        return
    # Output rules first, so a bad -o fails before any download (checked again with the source).
    check_out_dir(output, force=force)
    root, source, rev = resolve_source(
        src, offline=offline or None, revision=revision, trust_remote_code=trust_remote_code
    )
    result = convert_musicgen(
        root,
        output,
        dtype=dtype,
        source=source,
        revision=rev,
        force=force,
        offline=offline or None,  # musicgen-style also fetches t5-base, MERT and EnCodec
    )
    click.echo(
        f"detected: {result.format} checkpoint, MusicGen {result.variant} "
        f"({result.num_codebooks} codebooks) in {root}"
    )
    click.echo(f"wrote: {result.out_dir} ({result.dtype})")
