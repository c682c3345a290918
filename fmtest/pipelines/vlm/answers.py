"""Reading the model's answer: JSON `{label: OK|NOK, reasoning}`, or the study's prose; anything else is no answer.

An answer that cannot be read (no JSON, an unknown label, a refusal) is never guessed at: it raises
UnusableAnswer, which the pipeline turns into a failed prediction, NOK, so it never passes a part.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from fmtest.data.sample import LABELS, NOK, OK, Label

if TYPE_CHECKING:
    from fmtest.pipelines.vlm.client import VLMReply

ANSWER_FIELDS = ("label", "reasoning")
# JSON Schema of the answer; each backend passes it in its API's structured-output form.
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": list(LABELS)},
        "reasoning": {"type": "string"},
    },
    "required": list(ANSWER_FIELDS),
    "additionalProperties": False,
}


class UnusableAnswer(ValueError):
    """No usable answer: not the JSON asked for, an unknown label, a refusal or an empty reply."""


def read_answer(reply: VLMReply, *, free_text: bool) -> tuple[Label, str]:
    """(label, reasoning) from a reply: the JSON asked for, or with `free_text` the study's prose."""
    if reply.refusal is not None:
        raise UnusableAnswer(f"no answer: {reply.refusal}")
    if not reply.text:
        raise UnusableAnswer(f"empty answer (finish reason {reply.finish_reason})")
    return parse_free_text_answer(reply.text) if free_text else parse_answer(reply.text)


def parse_answer(text: str) -> tuple[Label, str]:
    """(label, reasoning) from the model's text: a JSON object, bare, fenced or inside prose.

    Several objects with a label are fine when they agree; disagreeing ones are no answer.
    """
    objects = _json_objects(text)
    if not objects:
        raise UnusableAnswer(f"no JSON object in the answer: {excerpt(text)}")
    answers = [o for o in objects if "label" in o] or objects[:1]
    labels = [a.get("label") for a in answers]
    for label in labels:
        if not isinstance(label, str) or label.strip().upper() not in LABELS:
            raise UnusableAnswer(f"unknown label {label!r} (expected OK or NOK): {excerpt(text)}")
    if len({label.strip().upper() for label in labels}) > 1:
        raise UnusableAnswer(f"conflicting labels {labels}: {excerpt(text)}")
    reasoning = answers[0].get("reasoning", "")
    if not isinstance(reasoning, str):
        raise UnusableAnswer(f"reasoning is not a string: {excerpt(text)}")
    return labels[0].strip().upper(), reasoning.strip()


_OPENING_YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
_STATED_LABEL = re.compile(r"\b(?:label|verdict|classification)\W{0,3}\s*[:=]\s*\W{0,3}(NOK|OK)\b", re.IGNORECASE)


def parse_free_text_answer(text: str) -> tuple[Label, str]:
    """(label, reasoning) from a prose answer, the study's "one class label + a reasoning string".

    The label is the first of: a JSON answer (`parse_answer`), a stated label ("Label: NOK"), or the
    opening yes/no the study's prompts ask for ("Please determine whether the image contains
    anomalies or defects. If yes, ...": yes = NOK, no = OK). The reasoning is the whole answer.
    """
    try:
        return parse_answer(text)
    except UnusableAnswer:
        pass
    stated = _STATED_LABEL.search(text)
    if stated:
        return stated.group(1).upper(), text.strip()
    opening = _OPENING_YES_NO.match(text)
    if opening:
        return (NOK if opening.group(1).lower() == "yes" else OK), text.strip()
    raise UnusableAnswer(f"no label, opening yes/no or JSON answer: {excerpt(text)}")


def _json_objects(text: str) -> list[dict]:
    """Every JSON object in `text` that is not inside another one, in order."""
    decoder, found, position = json.JSONDecoder(), [], 0
    while (start := text.find("{", position)) >= 0:
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        found.append(value)
        position = end
    return found


def excerpt(text: str | None, limit: int = 200) -> str:
    """The start of `text` on one line, quoted: enough of an answer or a body to recognise it in a message."""
    text = (text or "").strip().replace("\n", " ")
    return repr(text if len(text) <= limit else text[:limit] + "...")
