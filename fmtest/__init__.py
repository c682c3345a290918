"""fmtest: pytest-based evaluation of foundation models for industrial defect inspection."""

__version__ = "0.1.0"
