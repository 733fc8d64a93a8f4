"""audiogen-musicgen (skeleton: its issue has not landed yet)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
