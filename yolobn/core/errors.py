"""Exceptions that carry a one-line, user-facing message."""

from __future__ import annotations

__all__ = ["CheckpointError", "NoBatchNormError", "YolobnError"]


class YolobnError(Exception):
    """An error caused by the input (a file, an option), not by a bug.

    The message is one line that says what is wrong and what to do; the CLI prints it and exits 2.
    """


class CheckpointError(YolobnError):
    """A model file that cannot be (safely) loaded as an Ultralytics model."""


class NoBatchNormError(YolobnError):
    """A model that has no BatchNorm layer left to inspect (for example a fused checkpoint)."""
