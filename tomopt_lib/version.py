"""Package version (TomOpt's ``tomopt.version`` path)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
