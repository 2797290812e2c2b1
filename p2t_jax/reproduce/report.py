"""``REPORT.md`` and ``report.html`` from the chapters' folders: every claim, its number, the paper's beside it.

Per chapter: each claim of its ``results.json`` with PASS or FAIL, the measured value and
the reference figure (:mod:`p2t_jax.reproduce.references`); each entry of its
``observations`` (measured, not claimed, e.g. chapter 8's "the vanilla RNN falls toward
chance") as OBSERVATION; its figures; its run time. At the top: the budget, the total wall
time, the machine, the versions and the code revision. The HTML page holds its figures
inline (base64), so it is one file to send; the Markdown links them.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import math
import os
import pathlib
import shutil
import time
from collections.abc import Callable, Sequence
from typing import Any

from p2t_jax.reproduce import provenance
from p2t_jax.reproduce.references import reference
from p2t_jax.reproduce.runner import RESULTS, Outcome

REPORT_MD = "REPORT.md"
REPORT_HTML = "report.html"
PUBLISHED_FIGURES = "docs/report"  # under the --publish folder: <dir>/docs/report/<NN_name>/<figure>.png


@dataclasses.dataclass
class Row:
    """One line of a chapter's table: a claim (PASS / FAIL) or an observation."""

    name: str
    verdict: str  # PASS, FAIL or OBSERVATION
    statement: str
    measured: str
    reference: str
    value: Any = None  # the measured value as results.json holds it


@dataclasses.dataclass
class Section:
    """One chapter in the report."""

    outcome: Outcome
    rows: list[Row]
    figures: list[str]  # file names in the chapter's folder

    @property
    def passed(self) -> int:
        return sum(r.verdict == "PASS" for r in self.rows)

    @property
    def claimed(self) -> int:
        return sum(r.verdict in ("PASS", "FAIL") for r in self.rows)


def short(value: Any, limit: int = 200) -> str:
    """A measured value in one short line: floats to 4 significant digits, dicts and lists as compact JSON."""
    def tidy(v):
        if isinstance(v, float):
            return float(f"{v:.4g}") if math.isfinite(v) else str(v)
        if isinstance(v, dict):
            return {k: tidy(x) for k, x in v.items()}
        if isinstance(v, list):
            return [tidy(x) for x in v]
        return v

    if value is None:
        return ""
    v = tidy(value)
    text = v if isinstance(v, str) else json.dumps(v, separators=(", ", ": "))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_results(folder: pathlib.Path) -> dict[str, Any]:
    try:
        results = json.loads((folder / RESULTS).read_text())
    except (OSError, ValueError):
        return {}
    return results if isinstance(results, dict) else {}


def section(outcome: Outcome) -> Section:
    """The report's section for one chapter, from its folder."""
    results = read_results(outcome.folder) if outcome.status in ("passed", "claims failed") else {}
    order = {name: i for i, name in enumerate(outcome.chapter.claims)}  # the experiment's order, not the file's
    claims = sorted((results.get("claims") or {}).items(), key=lambda kv: order.get(kv[0], len(order)))
    rows = [Row(name, "PASS" if item.get("passed") else "FAIL", item.get("statement", ""),
                short(item.get("measured")), reference(name), item.get("measured")) for name, item in claims]
    for name, item in (results.get("observations") or {}).items():
        if isinstance(item, dict):
            statement = item.get("statement", name)
            measured = {k: v for k, v in item.items() if k != "statement"}
            if "reproduced" in measured:
                statement += f" (reproduced here: {'yes' if measured.pop('reproduced') else 'no'})"
        else:
            statement, measured = name.replace("_", " "), item
        rows.append(Row(name, "OBSERVATION", statement, short(measured), reference(name), measured))
    figures = [f for f in results.get("figures") or [] if (outcome.folder / f).is_file()]
    if results:
        figures += [p.name for p in sorted(outcome.folder.glob("*.png")) if p.name not in figures]
    return Section(outcome, rows, figures)


@dataclasses.dataclass
class Header:
    """The facts at the top of the report."""

    budget: str
    wall_seconds: float
    jobs: int
    command: str
    stopped_by: int | None = None
    lanes: list[tuple[int, ...]] | None = None  # the cores each of the jobs was kept to (runner.lanes), or None
    machine: str = dataclasses.field(default_factory=provenance.machine_line)
    versions: dict[str, str] = dataclasses.field(default_factory=provenance.versions)
    revision: str = dataclasses.field(default_factory=provenance.git_revision)
    date: str = dataclasses.field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M %Z"))
    load: str = dataclasses.field(default_factory=lambda: load_average())


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def _platforms(sections: Sequence[Section]) -> str:
    found = sorted({str(read_results(s.outcome.folder).get("device")) for s in sections
                    if read_results(s.outcome.folder).get("device")})
    return ", ".join(found) or "unknown"


def _budget_line(budget: str) -> str:
    if budget == "quick":
        return ("**quick** — small runs (the configs' smoke variants, cut further) that show the mechanics in a few "
                "minutes; many claims cannot hold at this size, so a FAIL here is not a failure of the code. The "
                "chapters' claims are those of the full budget: `p2t reproduce --budget full`.")
    return "**full** — every experiment's own default config."


def markdown(header: Header, sections: Sequence[Section],
             figure_link: Callable[[Section, str], str] = lambda s, f: f"{s.outcome.chapter.name}/{f}",
             folders: str = "") -> str:
    """The report as Markdown; ``figure_link(section, file)`` is where a figure is linked from, ``folders``
    what the chapters' folder names are prefixed with where the report names them."""
    passed = sum(s.passed for s in sections)
    claimed = sum(s.claimed for s in sections)
    lines = [f"# From perceptrons to transformers: the arc reproduced{' (quick budget)' if header.budget == 'quick' else ''}",
             "",
             f"- budget: {_budget_line(header.budget)}",
             f"- claims: **{passed} of {claimed} PASS** over {len(sections)} chapters"
             + (f"; stopped by signal {header.stopped_by} before the end" if header.stopped_by else ""),
             f"- wall time: **{header.wall_seconds:.0f} s** ({header.wall_seconds / 60:.1f} min), {header.jobs} "
             f"chapter{'s' if header.jobs > 1 else ''} at a time{_lanes_note(header)}{_reused_note(sections)}"
             f"{_cpu_total(sections)}",
             f"- machine: {header.machine}; JAX platform: {_platforms(sections)}; load average at the end "
             f"(1 / 5 / 15 min): {header.load}",
             f"- versions: {', '.join(f'{k} {v}' for k, v in header.versions.items())}",
             f"- code revision: `{header.revision}`; written {header.date}",
             f"- command: `{header.command}`",
             "",
             "| chapter | status | claims | run time |",
             "|---|---|---|---|"]
    for s in sections:
        o = s.outcome
        lines.append(f"| [{o.chapter.number}. {o.chapter.title}](#{anchor(o.chapter)}) | {o.status}"
                     f"{' (reused)' if o.reused else ''} | {s.passed} / {s.claimed} PASS | {_time(o)} |")
    for s in sections:
        o = s.outcome
        lines += ["", f"## {o.chapter.number}. {o.chapter.title}", "",
                  f"`python {o.chapter.script}` — {o.status}{' (reused from an earlier run)' if o.reused else ''}, "
                  f"{_time(o)}; folder `{folders}{o.chapter.name}/`, log `{folders}{o.chapter.name}/log.txt`", ""]
        if s.rows:
            lines += ["| | claim | measured | reference (paper or series) |", "|---|---|---|---|"]
            lines += [f"| **{r.verdict}** | {_md(r.statement)} <sub>`{r.name}`</sub> | {_md(r.measured)} | "
                      f"{_md(r.reference) or '—'} |" for r in s.rows]
        else:
            lines.append(f"No results: the chapter ended with status '{o.status}' (exit status {o.exit_code}); see "
                         f"its log.")
        lines += [""] + [f"![{f}]({figure_link(s, f)})" for f in s.figures]
    return "\n".join(lines) + "\n"


def _time(o: Outcome) -> str:
    """``41.9 s (20.3 s CPU)``: wall time, and CPU time (user + system, all threads) where known."""
    return f"{o.seconds:.1f} s" + (f" ({o.cpu_seconds:.1f} s CPU)" if o.cpu_seconds is not None else "")


def _lanes_note(header: Header) -> str:
    """", each kept to its own core" (or cores) when the chapters were pinned to lanes; "" otherwise."""
    if not header.lanes:
        return ""
    widths = {len(lane) for lane in header.lanes}
    return f", each kept to its own {'core' if widths == {1} else 'cores'}"


def _reused_note(sections: Sequence[Section]) -> str:
    reused = [s.outcome for s in sections if s.outcome.reused]
    if not reused:
        return ""
    return (f" ({len(reused)} chapter{'s' if len(reused) > 1 else ''} reused from an earlier run, not counted here: "
            f"their own run times below add up to {sum(o.seconds for o in reused):.0f} s)")


def _cpu_total(sections: Sequence[Section]) -> str:
    known = [s.outcome.cpu_seconds for s in sections if s.outcome.cpu_seconds is not None]
    return f"; {sum(known):.0f} s of CPU time in the chapters" if known else ""


def anchor(chapter) -> str:
    return f"{chapter.number}-{chapter.title.lower().replace(' ', '-')}"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.5em 0;width:100%}td,th{border:1px solid #ccc;padding:4px 6px;
vertical-align:top;font-size:0.9em}th{background:#f3f3f3}code{font-size:0.85em}.PASS{color:#176c2e;font-weight:bold}
.FAIL{color:#b00020;font-weight:bold}.OBSERVATION{color:#8a5a00;font-weight:bold}img{max-width:100%;
margin:0.5em 0;border:1px solid #eee}.quick{background:#fff4d6;padding:0.5em 1em;border-left:4px solid #e0a800}"""


def html_page(header: Header, sections: Sequence[Section]) -> str:
    """The report as one HTML page, figures inline."""
    e = html.escape
    passed = sum(s.passed for s in sections)
    claimed = sum(s.claimed for s in sections)
    quick = header.budget == "quick"
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<title>p2t_jax reproduction{' (quick)' if quick else ''}</title><style>{CSS}</style></head><body>",
             f"<h1>From perceptrons to transformers: the arc reproduced{' (quick budget)' if quick else ''}</h1>"]
    if quick:
        parts.append("<p class='quick'>Quick budget: small runs that show the mechanics in a few minutes; many claims "
                     "cannot hold at this size, so a FAIL here is not a failure of the code. The chapters' claims are "
                     "those of <code>p2t reproduce --budget full</code>.</p>")
    facts = [("claims", f"{passed} of {claimed} PASS over {len(sections)} chapters"
              + (f"; stopped by signal {header.stopped_by}" if header.stopped_by else "")),
             ("budget", header.budget),
             ("wall time", f"{header.wall_seconds:.0f} s ({header.wall_seconds / 60:.1f} min), {header.jobs} at a time"
                           f"{_lanes_note(header)}{_reused_note(sections)}{_cpu_total(sections)}"),
             ("machine", f"{header.machine}; JAX platform: {_platforms(sections)}"),
             ("load average at the end", header.load),
             ("versions", ", ".join(f"{k} {v}" for k, v in header.versions.items())),
             ("code revision", header.revision), ("written", header.date), ("command", header.command)]
    parts.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts) + "</table>")
    parts.append("<table><tr><th>chapter</th><th>status</th><th>claims</th><th>run time</th></tr>")
    for s in sections:
        o = s.outcome
        parts.append(f"<tr><td><a href='#{anchor(o.chapter)}'>{o.chapter.number}. {e(o.chapter.title)}</a></td>"
                     f"<td>{e(o.status)}{' (reused)' if o.reused else ''}</td><td>{s.passed} / {s.claimed} PASS</td>"
                     f"<td>{_time(o)}</td></tr>")
    parts.append("</table>")
    for s in sections:
        o = s.outcome
        parts.append(f"<h2 id='{anchor(o.chapter)}'>{o.chapter.number}. {e(o.chapter.title)}</h2>"
                     f"<p><code>python {e(o.chapter.script)}</code> — {e(o.status)}"
                     f"{' (reused from an earlier run)' if o.reused else ''}, {_time(o)}</p>")
        if s.rows:
            parts.append("<table><tr><th></th><th>claim</th><th>measured</th><th>reference (paper or series)</th></tr>")
            parts += [f"<tr><td class='{r.verdict}'>{r.verdict}</td><td>{e(r.statement)} <code>{e(r.name)}</code></td>"
                      f"<td><code>{e(r.measured)}</code></td><td>{e(r.reference) or '—'}</td></tr>" for r in s.rows]
            parts.append("</table>")
        else:
            parts.append(f"<p>No results: the chapter ended with status '{e(o.status)}' (exit status "
                         f"{o.exit_code}); see <code>{e(o.chapter.name)}/log.txt</code>.</p>")
        for f in s.figures:
            data = base64.b64encode((o.folder / f).read_bytes()).decode()
            parts.append(f"<figure><img alt='{e(f)}' src='data:image/png;base64,{data}'><figcaption>{e(f)}"
                         f"</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_file(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write(out: pathlib.Path, header: Header, outcomes: Sequence[Outcome]) -> list[Section]:
    """Writes ``out/REPORT.md`` and ``out/report.html``; returns the sections."""
    sections = [section(o) for o in outcomes]
    write_file(out / REPORT_MD, markdown(header, sections))
    write_file(out / REPORT_HTML, html_page(header, sections))
    return sections


def publish(root: pathlib.Path, header: Header, sections: Sequence[Section]) -> pathlib.Path:
    """Writes ``root/REPORT.md`` with its figures copied under ``root/docs/report/<NN_name>/``; returns the file."""
    figures = root / PUBLISHED_FIGURES
    for s in sections:
        folder = figures / s.outcome.chapter.name
        if folder.exists():
            shutil.rmtree(folder)
        if s.figures:
            folder.mkdir(parents=True)
        for f in s.figures:
            shutil.copy2(s.outcome.folder / f, folder / f)
    path = root / REPORT_MD
    folders = f"{sections[0].outcome.folder.parent}/" if sections else ""
    write_file(path, markdown(header, sections, lambda s, f: f"{PUBLISHED_FIGURES}/{s.outcome.chapter.name}/{f}",
                          folders=folders))
    return path
