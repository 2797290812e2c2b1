"""The README's measured lines per chapter, written from a full run's report (one source of truth).

Each chapter's section of a README may hold a block between the markers

    <!-- reproduce:NN_name:start -->
    <!-- reproduce:NN_name:end -->

``p2t reproduce --budget full --publish DIR`` replaces what is between them in
``DIR/README.md`` with that chapter's claims as the report measured them (PASS / FAIL /
OBSERVATION, the statement, the measured value), its run time, the machine and the command
that re-runs the chapter. Text outside the markers is never touched; a chapter the run did
not finish keeps its block as it was.
"""

from __future__ import annotations

import math
import pathlib
import re
from collections.abc import Sequence
from typing import Any

from p2t_jax.reproduce.report import REPORT_MD, Section, anchor, write_file

README = "README.md"


def markers(name: str) -> tuple[str, str]:
    """The start and end markers of chapter folder ``name``'s block (e.g. ``10_transformer``)."""
    return f"<!-- reproduce:{name}:start -->", f"<!-- reproduce:{name}:end -->"


def readable(value: Any) -> str:
    """A measured value for prose: floats to 4 significant digits, ``{"small": 1.74, "large": 1.41}`` as
    ``small 1.74, large 1.41``, lists as ``a / b / c``, nested values in parentheses."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            text = readable(v)
            key = str(k).replace("_", " ")
            parts.append(f"{key} ({text})" if isinstance(v, (dict, list)) else f"{key} {text}")
        return ", ".join(parts)
    if isinstance(value, list):
        return " / ".join(f"({readable(v)})" if isinstance(v, (dict, list)) else readable(v) for v in value)
    if value is None:
        return "—"
    return str(value)


def block(section: Section, machine: str, report_link: str = REPORT_MD) -> str:
    """The Markdown between one chapter's markers."""
    o = section.outcome
    cpu = f", {o.cpu_seconds:,.0f} s of CPU" if o.cpu_seconds is not None else ""
    lines = [f"Measured by `p2t reproduce --chapters {o.chapter.number}` (the full budget: `python "
             f"{o.chapter.script}`), {o.seconds:,.0f} s{cpu} on {machine}; every claim with the paper's figure "
             f"beside it in [REPORT.md]({report_link}#{anchor(o.chapter)}):", ""]
    for r in section.rows:
        lines.append(f"- **{r.verdict}** {r.statement}: {readable(r.value)}")
    return "\n".join(lines)


def update(path: pathlib.Path, sections: Sequence[Section], machine: str) -> list[str]:
    """Rewrites the blocks of ``path`` for the chapters in ``sections`` that finished; returns the folder names
    whose blocks were rewritten. A chapter without markers in the file is skipped; the file is replaced whole
    (written beside it, then renamed), or left as it was when nothing changes.

    Raises:
      ValueError: a chapter's start marker without its end marker after it (one sentence; nothing written).
    """
    text = original = path.read_text()
    done = []
    for s in sections:
        if s.outcome.status not in ("passed", "claims failed") or not s.rows:
            continue
        span = _inside(text, s.outcome.chapter.name, path)
        if span is None:
            continue
        text = text[:span[0]] + "\n" + block(s, machine) + "\n" + text[span[1]:]
        done.append(s.outcome.chapter.name)
    if text != original:
        write_file(path, text)
    return done


def check(path: pathlib.Path) -> None:
    """Raises ``ValueError`` (one sentence) if a start marker in ``path`` has no end marker after it."""
    text = path.read_text()
    for name in names_with_markers(text):
        _inside(text, name, path)


def _inside(text: str, name: str, path: pathlib.Path) -> tuple[int, int] | None:
    """Where the text between chapter ``name``'s markers begins and ends in ``text`` (None: no start marker).

    Raises:
      ValueError: the start marker without its end marker after it (one sentence naming ``path``).
    """
    start, end = markers(name)
    if start not in text:
        return None
    i = text.index(start) + len(start)
    j = text.find(end, i)
    if j < 0:
        raise ValueError(f"{path} has '{start}' without '{end}' after it; add the end marker.")
    return i, j


def names_with_markers(text: str) -> list[str]:
    """The chapter folder names that have a start marker in ``text``, in order."""
    return re.findall(r"<!-- reproduce:([0-9A-Za-z_]+):start -->", text)
