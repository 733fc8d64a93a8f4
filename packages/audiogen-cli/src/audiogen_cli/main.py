"""The ``audiogen`` command: a click group whose subcommands load lazily, so ``audiogen --help``
does not pay for importing MLX and the models."""

from __future__ import annotations

import importlib
from typing import Any

import click

from audiogen_cli import __version__

# name -> (module, attribute, one-line help shown without importing the module)
_COMMANDS: dict[str, tuple[str, str, str]] = {
    "generate": ("audiogen_cli.generate", "generate", "Generate music from text prompts."),
    "info": ("audiogen_cli.info", "info", "Show versions, compute device and BLAS."),
    "codec": ("audiogen_cli.codec", "codec", "Encode / decode audio with EnCodec."),
    "convert": (
        "audiogen_cli.convert",
        "convert",
        "Convert upstream weights to an audiogen directory.",
    ),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module, attr, _ = _COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in sorted(_COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        # Library errors become one red line and exit code 2; anything else is a bug and keeps its
        # traceback.
        from audiogen_core.errors import AudiogenError

        try:
            return super().invoke(ctx)
        except AudiogenError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            ctx.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="audiogen")
def cli() -> None:
    """Text-to-music and text-to-audio generation on MLX."""
