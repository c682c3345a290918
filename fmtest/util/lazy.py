"""A third-party module imported on first use, so importing fmtest loads no model library.

Every pipeline class is imported in every run (the suite config checks each pipeline's options, the plan
asks each whether it can run), but only a pipeline that predicts needs torch: a run whose predictions
all come from the cache then starts in a fraction of the time. `torch = lazy_module("torch")` at the top
of a module reads like the import it replaces; the first attribute looked up imports the module, so a
decorator or base class taken from it (`@torch.no_grad()`, `nn.Module`) would import it at once and
belongs inside a function. fmtest's own modules are imported inside functions instead, where
`tests/test_architecture.py` still sees them.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """Stands for the module `name` and imports it when one of its attributes is first looked up."""

    __slots__ = ("_module", "_name")

    def __init__(self, name: str):
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str):
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attribute)

    def __repr__(self) -> str:
        return f"<lazily imported module {self._name!r}{' (imported)' if self._module is not None else ''}>"


def lazy_module(name: str) -> LazyModule:
    """The module `name`, imported when first used (see the module text)."""
    return LazyModule(name)
