"""audiogen-stableaudio: Stable Audio Open (small and 1.0) text-to-audio on MLX.

``StableAudio.from_pretrained("stabilityai/stable-audio-open-small").generate(["rain"], duration=5)``
"""

import audiogen_core  # noqa: F401  - first: preloads OpenBLAS before any module imports mlx

from audiogen_stableaudio.pipeline import StableAudio

__version__ = "0.1.0"
__all__ = ["StableAudio", "__version__"]
