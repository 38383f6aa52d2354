"""The version of yolobn (no imports: every module may read it without importing the package root)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
