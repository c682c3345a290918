"""SAA+'s published per-category prompts for MVTec AD's texture categories, as `saa_plus` options.

Source: github.com/caoyunkang/Segment-Any-Anomaly, `SAA/prompts/mvtec_parameters.py` (each
category's own anomaly prompts, the phrase whose boxes are dropped, and the property prompt "the
image of <object> have 1 dissimilar <object>, with a maximum of 5 anomaly. The anomaly would not
exceed 0.9 object area.") and `SAA/prompts/general_prompts.py` (three generic prompts per category,
listed first, as `eval_SAA.py` combines them). Only the five categories the study scores are here.
Upstream ends some prompts with "." (GroundingDINO's phrase separator); fmtest's captions add it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fmtest.errors import ConfigError
from fmtest.pipelines.options import table

GENERIC_PROMPTS = ("defect on {object}", "damage on {object}", "flaw on {object}")


@dataclass(frozen=True)
class CategoryPrompts:
    """One category's hybrid prompts: language prompts, the object word, and the property prompt's numbers."""

    object_prompt: str
    own_prompts: tuple[str, ...]
    max_area_ratio: float = 0.9  # "the anomaly would not exceed 0.9 object area"
    top_k: int = 5  # "with a maximum of 5 anomaly"

    def options(self) -> dict[str, object]:
        """The `saa_plus` options these prompts set; boxes naming the object itself are dropped."""
        return {"anomaly_prompts": GENERIC_PROMPTS + self.own_prompts, "object_prompt": self.object_prompt,
                "filter_words": ("{object}",), "max_area_ratio": self.max_area_ratio, "top_k": self.top_k}


PUBLISHED: dict[str, dict[str, CategoryPrompts]] = {
    "mvtec": {
        "carpet": CategoryPrompts("carpet", ("black hole", "thread", "defect")),
        "grid": CategoryPrompts("grid", ("irregular pattern", "defect")),
        "leather": CategoryPrompts("leather", ("defect",)),
        "tile": CategoryPrompts("tile", ("defect",)),
        "wood": CategoryPrompts("wood", ("defect",)),
    },
}


def published_options(dataset: str, group: str | None) -> dict[str, object]:
    """SAA+'s options for a dataset group; ConfigError when SAA+ published none for it."""
    where = table("saa_plus")
    if dataset not in PUBLISHED:
        raise ConfigError(f"published_prompts: SAA+ publishes per-category prompts for {', '.join(PUBLISHED)} "
                          f"only, not {dataset!r}; set anomaly_prompts and object_prompt instead", where)
    categories = PUBLISHED[dataset]
    if group not in categories:
        raise ConfigError(f"published_prompts: no SAA+ prompts for {dataset} group {group!r}; fmtest has them for "
                          f"{', '.join(categories)}", where)
    return categories[group].options()
