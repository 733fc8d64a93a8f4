"""audiogen-core: the codecs and shared pieces every audiogen model uses.

Importing this package first preloads the system OpenBLAS on Linux (see ``backend``), so it must
happen before anything imports ``mlx.core``.
"""

from audiogen_core import backend as _backend

_backend.preload_openblas()

from audiogen_core.errors import (  # noqa: E402
    AudioFileError,
    AudiogenError,
    CorruptWeightsError,
    DownloadError,
    InvalidInputError,
    MissingWeightsError,
    WeightsError,
)

__version__ = "0.1.0"

__all__ = [
    "AudioFileError",
    "AudiogenError",
    "CorruptWeightsError",
    "DownloadError",
    "InvalidInputError",
    "MissingWeightsError",
    "WeightsError",
    "__version__",
]
