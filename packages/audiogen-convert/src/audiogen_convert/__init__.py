"""audiogen-convert: upstream MusicGen checkpoints (safetensors, sharded, PyTorch ``.bin``) to
audiogen directories. ``formats`` detects and reads the files; ``musicgen`` converts."""

__version__ = "0.1.0"
__all__ = ["__version__"]
