"""Which float precision a model runs in: float32 as the upstream code, or bfloat16 autocast."""

from __future__ import annotations

import contextlib

from fmtest.util.lazy import lazy_module

torch = lazy_module("torch")

PRECISIONS = ("fp32", "bf16")


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on the device for `precision = "bf16"`; nothing for "fp32".

    Weights stay float32 (shared with the float32 path); matrix products and convolutions run in
    bfloat16, reductions and normalisations in float32, as torch.autocast decides per operation.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
