"""Progress reporting for the step loops of the generation pipelines."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from audiogen_core.errors import InvalidInputError

Progress = Callable[[int, int], None] | bool | None
"""A ``callable(step, total)``, True for a progress bar, or None / False for silence."""


def progress_callback(
    progress: Progress, desc: str = "generating"
) -> tuple[Callable[[int, int], None] | None, Any]:
    """A ``(step, total)`` callable for ``progress`` and the bar to close afterwards (or None)."""
    if progress is None or progress is False:
        return None, None
    if callable(progress):
        return progress, None
    if progress is not True:
        raise InvalidInputError(
            f"progress must be a callable(step, total) or a bool, got {progress!r}"
        )
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with huggingface_hub

        def report(step: int, total: int) -> None:
            end = "\n" if step == total else ""
            print(f"\r{desc}: {step}/{total}", end=end, file=sys.stderr)

        return report, None
    bar = tqdm(total=None, unit="step", desc=desc)

    def update(step: int, total: int) -> None:
        bar.total = total
        bar.update(step - bar.n)

    return update, bar
