"""Token files: EnCodec codes saved as ``.npz`` with the facts needed to decode them again."""

from __future__ import annotations

import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from audiogen_core.errors import InvalidInputError

import numpy as np


@dataclass(frozen=True)
class CodesFile:
    codes: np.ndarray  # (batch, codebooks, frames) int
    sample_rate: int
    channels: int
    num_samples: int  # original length, so decoding can trim the codec's frame padding


def save_codes(path: str | os.PathLike[str], data: CodesFile) -> Path:
    """Write ``data`` atomically (temp file in the same directory, then rename)."""
    p = Path(path)
    if p.suffix != ".npz":
        raise InvalidInputError(f"{p}: codes files end in .npz")
    if not p.parent.is_dir():
        raise InvalidInputError(f"{p}: directory {p.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=".npz", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(
                f,
                codes=np.asarray(data.codes, dtype=np.int16),
                sample_rate=data.sample_rate,
                channels=data.channels,
                num_samples=data.num_samples,
            )
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def load_codes(path: str | os.PathLike[str]) -> CodesFile:
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            codes = z["codes"]
            meta = (int(z["sample_rate"]), int(z["channels"]), int(z["num_samples"]))
    except FileNotFoundError as e:
        raise InvalidInputError(f"{p}: no such codes file") from e
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise InvalidInputError(f"{p}: not an audiogen codes file ({e})") from e
    if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer):
        raise InvalidInputError(f"{p}: codes must be an integer (batch, codebooks, frames) array")
    return CodesFile(codes.astype(np.int32), *meta)
