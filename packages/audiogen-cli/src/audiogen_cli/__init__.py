"""audiogen-cli: the ``audiogen`` command. Parsing only; the work happens in the libraries."""

__version__ = "0.1.0"
__all__ = ["__version__"]
