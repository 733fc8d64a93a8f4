"""``audiogen info``: what this installation will run on."""

from __future__ import annotations

import click


@click.command()
def info() -> None:
    """Show versions, compute device and the CPU BLAS in use."""
    from audiogen_core import backend

    rows = backend.info()
    width = max(map(len, rows))
    for key, value in rows.items():
        click.echo(f"{key:<{width}}  {value}")
