"""SAA+'s per-category settings, as `saa_plus` options: SAA+'s own for MVTec AD, fmtest's for the study's other datasets.

Source: github.com/caoyunkang/Segment-Any-Anomaly, `SAA/prompts/mvtec_parameters.py` (each
category's own anomaly prompts, the phrase whose boxes are dropped, and the property prompt "the
image of <object> have 1 dissimilar <object>, with a maximum of 5 anomaly. The anomaly would not
exceed 0.9 object area.") and `SAA/prompts/general_prompts.py` (three generic prompts per category,
listed first, as `eval_SAA.py` combines them). Only the five categories the study scores are here.
Upstream ends some prompts with "." (GroundingDINO's phrase separator); fmtest's captions add it.

SAA+ published nothing for Oxford-IIIT-Pet or IndustrialSAT, and the study does not say what it set.
`STUDY_DATASETS` gives them settings of the same form, chosen as SAA+ would read them (a reconstruction,
marked as such wherever it is shown): the anomaly prompt is the study's own text prompt ("cat",
"defect"), and there is no object prompt, so the object area is the whole image, SAA+'s own
fallback when it finds no object box. On Oxford-IIIT-Pet the "anomaly" is the whole foreground
animal: an object box would be the cat's own box, and the area filter (anomaly < ratio x object area)
would drop the very box that holds the cat; its area limit is the whole image (ratio 1.0, as SAA+
sets for metal_nut, pill and transistor), since a cat often fills the frame. IndustrialSAT's images
show one package filling the frame; it keeps SAA+'s single-object numbers (0.9, top 5).
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


@dataclass(frozen=True)
class DatasetSettings:
    """fmtest's settings in SAA+'s form for a whole dataset SAA+ published none for (every group alike)."""

    max_area_ratio: float
    top_k: int
    why: str

    def options(self) -> dict[str, object]:
        """The study's text prompt as the one anomaly prompt; no object prompt, so no object box and no filter word."""
        return {"anomaly_prompts": ("{prompt}",), "object_prompt": "", "filter_words": (),
                "max_area_ratio": self.max_area_ratio, "top_k": self.top_k}


PUBLISHED: dict[str, dict[str, CategoryPrompts]] = {
    "mvtec": {
        "carpet": CategoryPrompts("carpet", ("black hole", "thread", "defect")),
        "grid": CategoryPrompts("grid", ("irregular pattern", "defect")),
        "leather": CategoryPrompts("leather", ("defect",)),
        "tile": CategoryPrompts("tile", ("defect",)),
        "wood": CategoryPrompts("wood", ("defect",)),
    },
}

STUDY_DATASETS: dict[str, DatasetSettings] = {
    "oxford_pets": DatasetSettings(
        max_area_ratio=1.0, top_k=5,
        why="the cat is the whole foreground: no object box (it would be the cat's own, and the area filter would "
            "drop the cat); any box short of the whole image may hold it"),
    "industrialsat": DatasetSettings(
        max_area_ratio=0.9, top_k=5,
        why="one package fills the frame: no object box, the image is the object; SAA+'s single-object numbers"),
}


def published_options(dataset: str, group: str | None) -> dict[str, object]:
    """SAA+'s options for a dataset group (fmtest's for the study datasets SAA+ published none for);
    ConfigError for any other."""
    where = table("saa_plus")
    if dataset in STUDY_DATASETS:
        return STUDY_DATASETS[dataset].options()
    if dataset not in PUBLISHED:
        known = ", ".join([*PUBLISHED, *STUDY_DATASETS])
        raise ConfigError(f"published_prompts: SAA+'s per-category settings exist for {known} only, not "
                          f"{dataset!r}; set anomaly_prompts and object_prompt instead", where)
    categories = PUBLISHED[dataset]
    if group not in categories:
        raise ConfigError(f"published_prompts: no SAA+ prompts for {dataset} group {group!r}; fmtest has them for "
                          f"{', '.join(categories)}", where)
    return categories[group].options()
