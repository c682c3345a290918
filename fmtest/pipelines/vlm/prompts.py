"""What a request asks: the prompt text (built in, or from a prompt file) and the order of its parts."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fmtest.errors import ConfigError, Unavailable

if TYPE_CHECKING:
    from fmtest.pipelines.vlm.images import EncodedImage

# The study's basic prompt, sent verbatim (suites/prompts/basic.txt holds the same text).
BASIC_PROMPT = (
    "Please determine whether the image contains anomalies or defects. If yes, give a specific reason"
)
REFERENCE_CAPTION = "Reference image: a defect-free part (label OK)."
TEST_CAPTION = "Image to inspect:"

_TEMPLATE_GAP = re.compile(r"<<.*?>>", re.DOTALL)


def load_prompt_file(path: Path) -> str:
    """The prompt text of a prompt file: `#` comment lines dropped, surrounding blank space trimmed.

    A missing file is Unavailable (the user supplies it); a file that is empty or still has a
    `<<...>>` template gap is a ConfigError, so an unfinished template is never sent to a model.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise Unavailable("prompt file not found; users supply their own refined prompt (the object's structure "
                          "and how its defects look; the study's IndustrialSAT prompt is not public): write it "
                          "there or set prompt_file, see suites/prompts/README.md", path) from None
    text = "\n".join(line for line in raw.splitlines() if not line.lstrip().startswith("#")).strip()
    if not text:
        raise ConfigError("prompt file has no prompt text (only comments or blank lines)", path)
    gap = _TEMPLATE_GAP.search(text)
    if gap:
        raise ConfigError(f"prompt file is an unfinished template: fill in {gap.group(0)!r}", path)
    return text


@dataclass(frozen=True)
class VLMRequest:
    """One question to the model; every backend sends `parts()` in their order."""

    prompt: str
    reference: EncodedImage
    image: EncodedImage
    captions: bool = True

    def parts(self) -> list[str | EncodedImage]:
        """[Caption,] reference, [caption,] test image, prompt: the study's refined prompt speaks of
        'the last image given', so the test image must come after the reference."""
        if not self.captions:
            return [self.reference, self.image, self.prompt]
        return [REFERENCE_CAPTION, self.reference, TEST_CAPTION, self.image, self.prompt]
