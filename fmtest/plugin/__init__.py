"""The pytest plugin (`hooks`, the entry point), its options (`options`), the per-process session that runs
and judges cases (`session`), and fmtest's rows in pytest's own reports (`reports`)."""

from fmtest.plugin.hooks import check_case

__all__ = ["check_case"]
