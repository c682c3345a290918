"""The study's request layout switches: prose answers read as label + reasoning, edge-replicated borders."""

from __future__ import annotations

import numpy as np
import pytest

from fmtest.imaging.align import estimate_alignment, warp_to_reference
from fmtest.pipelines.vlm.answers import UnusableAnswer, parse_free_text_answer
from fmtest.pipelines.vlm.images import encode_png
from fmtest.pipelines.vlm.prompts import VLMRequest


@pytest.mark.parametrize("text,label", [
    ("Yes, the image contains an anomaly: a scratch across the surface.", "NOK"),
    ("**Yes.** There is a hole in the upper left.", "NOK"),
    ("No, the image does not contain anomalies or defects.", "OK"),
    ("no anomalies are visible", "OK"),
    ("After comparing both images.\nVerdict: NOK - a crack runs along the edge.", "NOK"),
    ("Label: **OK**\nReasoning: the part matches the reference.", "OK"),
    ('```json\n{"label": "NOK", "reasoning": "contamination"}\n```', "NOK"),
])
def test_free_text_answers_give_the_studys_label(text, label):
    parsed, reasoning = parse_free_text_answer(text)
    assert parsed == label
    assert reasoning == ("contamination" if text.startswith("```") else text.strip())


@pytest.mark.parametrize("text", ["Not sure what to make of it.", "The image shows a carpet.", ""])
def test_prose_without_a_label_is_no_answer(text):
    with pytest.raises(UnusableAnswer, match="no label, opening yes/no or JSON answer"):
        parse_free_text_answer(text)


def test_captions_switch_drops_the_caption_texts():
    image = encode_png(np.zeros((4, 4), np.float32))
    assert VLMRequest("prompt", image, image, captions=False).parts() == [image, image, "prompt"]
    assert len(VLMRequest("prompt", image, image).parts()) == 5


def test_replicated_border_leaves_no_black_wedge():
    rng = np.random.default_rng(0)
    reference = 0.3 + 0.4 * rng.random((64, 64)).astype(np.float32)
    moved = np.roll(reference, (5, -4), axis=(0, 1))
    moved[:5], moved[:, -4:] = 0.5, 0.5  # the recording's own content at the edges
    alignment = estimate_alignment(moved, reference)
    black = warp_to_reference(moved, alignment, reference.shape)
    replicated = warp_to_reference(moved, alignment, reference.shape, replicate_border=True)
    assert (black[-3:] < 0.05).all() and replicated.min() > 0.25
    np.testing.assert_allclose(replicated[10:50, 10:50], black[10:50, 10:50])
