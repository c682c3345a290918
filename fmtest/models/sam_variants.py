"""SAM variants by name and the checkpoint each needs, answered without importing segment_anything.

Every SAM pipeline validates its `sam_variant` option and checks for the checkpoint in
`check_available`, which runs for every case of a suite, the skipped ones included: importing
segment_anything there would cost seconds for nothing. `fmtest.models.sam` builds the models.
"""

from __future__ import annotations

from pathlib import Path

from fmtest.errors import DataError
from fmtest.models import registry

_PREFIX = "sam_"


def weight_key(variant: str) -> str:
    """The registry key of a variant's checkpoint: `sam_vit_h` for `vit_h`."""
    return f"{_PREFIX}{variant}"


def known_variants() -> tuple[str, ...]:
    """Every variant with a registry entry: the official vit_h, vit_l, vit_b and any registered beside them."""
    return tuple(key.removeprefix(_PREFIX) for key in registry.WEIGHTS if key.startswith(_PREFIX))


def require(weights_dir: Path | None, variant: str = "vit_h") -> None:
    """Raise MissingWeights unless the variant's checkpoint is present or an engine is injected."""
    registry.require(weight_key(variant), weights_dir)


def model_id(weights_dir: Path | None, variant: str = "vit_h", checkpoint: Path | None = None) -> str:
    """The model id the engine `fmtest.models.sam` loads for these arguments reports, without loading it: the
    file's sha256 (`registry.identify`), or an injected engine's id. A cached rerun keys its predictions by it."""
    if checkpoint is None:
        injected = registry.injected(weight_key(variant))
        if injected is not None:
            return injected.model_id  # type: ignore[attr-defined]
        checkpoint = registry.resolve(weight_key(variant), weights_dir)
    path = Path(checkpoint).resolve()
    if not path.is_file():
        raise DataError("SAM checkpoint file not found", path)
    return registry.identify(path, "sam_checkpoint")
