"""Measures of structure in generated Shakespeare: real words and speaker headings."""

from __future__ import annotations

import re

_WORD = re.compile(r"[A-Za-z']+")
_SPEAKER = re.compile(r"^[A-Z][A-Z' \-]*:$")


def vocabulary(text: str) -> set[str]:
    """The lower-cased words of ``text`` (letters and apostrophes)."""
    return {w.lower().strip("'") for w in _WORD.findall(text)} - {""}


def word_validity(sample: str, words: set[str]) -> float:
    """Share of the sample's words that occur in ``words``: 1.0 means every word is real."""
    found = [w.lower().strip("'") for w in _WORD.findall(sample)]
    found = [w for w in found if w]
    return sum(w in words for w in found) / len(found) if found else 0.0


def speaker_format(sample: str) -> float:
    """Share of paragraphs (blank-line separated, after the first) that open with a ``NAME:`` line."""
    paragraphs = [p for p in sample.split("\n\n")[1:] if p.strip()]
    if not paragraphs:
        return 0.0
    return sum(bool(_SPEAKER.match(p.strip("\n").split("\n")[0])) for p in paragraphs) / len(paragraphs)
