"""User-facing errors: each names the file (or setting) and what is wrong with it.

The plugin prints these as one line instead of a traceback, and keeps results already computed.
"""

from __future__ import annotations


class FmtestError(Exception):
    """A problem the user can fix (bad input, bad option); shown without a traceback."""

    def __init__(self, message: str, path: object | None = None):
        self.path = path
        super().__init__(f"{path}: {message}" if path is not None else message)


class DataError(FmtestError):
    """A dataset file is missing, corrupt or inconsistent (mask size, label file...)."""


class ConfigError(FmtestError):
    """An option or the suite config file is wrong (unknown name, bad value)."""


class CannotJudge(FmtestError):
    """A case ran but its numbers cannot be judged (no images, unusable answers, undefined metric): an error."""


class Unavailable(FmtestError):
    """A pipeline cannot run here: weights or API key missing. Skipped, or an error under --fm-strict."""


class MissingWeights(Unavailable):
    """A checkpoint file is not in the weights folder."""


class PipelineError(FmtestError):
    """A pipeline broke its contract (predictions per image, masks at the image's size): the case errors."""
