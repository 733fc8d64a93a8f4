"""audiogen-musicgen: MusicGen text-to-music on MLX.

``MusicGen.from_pretrained("facebook/musicgen-small").generate(["lofi beat"], duration=5)``
"""

import audiogen_core  # noqa: F401  - first: preloads OpenBLAS before any module imports mlx

from audiogen_musicgen.pipeline import MusicGen

__version__ = "0.1.0"
__all__ = ["MusicGen", "__version__"]
