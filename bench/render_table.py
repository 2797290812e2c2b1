"""Renders the README's per-machine speed table from the results store (``bench/results/``).

    python bench/render_table.py [--results DIR] [--config configs/shakespeare.py:nanogpt_cpu]
                                 [--write README.md]

One row per machine class (CPU model, family/model, ISA extensions, cores) of the
``bench/step.py`` records for ``--config`` (other configs and variants are left out): the
median JAX / PyTorch ratio over its runs, the range, the median step times, how many runs,
the load average they ran under (the highest of each run's start and end), the dates and
where the rows came from (``measured``, or imported from earlier notes). Below it, one row
per ``bench/scaling.py`` record: the median JAX / PyTorch over its grid and the step memory
at context 512 against PyTorch's, per attention kernel.

Prints the tables; with ``--write FILE`` also puts them between the markers
``<!-- speed-table:start -->`` and ``<!-- speed-table:end -->`` in that file (refused,
exit 2, if the markers are missing: nothing is written).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import results as store  # noqa: E402

START, END = "<!-- speed-table:start -->", "<!-- speed-table:end -->"
CONFIG = "configs/shakespeare.py:nanogpt_cpu"


def machine_class(rec: dict) -> str:
    """The machine a record ran on, as a table cell: model name (family f, model m; ISA), N cores."""
    m = rec.get("machine", {})
    if "label" in m:  # an imported row whose CPU was described in words
        return m["label"]
    isa = ", ".join(m.get("isa", [])) or "no AVX2"
    return f"{m.get('model_name', '?')} (family {m.get('family', '?')}, model {m.get('model', '?')}; {isa}), " \
           f"{m.get('cores', '?')} cores"


def _load(rec: dict) -> float | None:
    load = rec.get("load") or {}
    values = [v[0] for v in (load.get("start"), load.get("end")) if v]
    return max(values) if values else None


def _busy(rec: dict) -> bool | None:
    """True if the load average exceeded the CPUs at the run's start or end, None if not recorded."""
    load, cpus = _load(rec), (rec.get("load") or {}).get("cpus")
    return None if load is None or not cpus else load > cpus


def step_rows(records: list[dict], config: str = CONFIG) -> list[dict]:
    """Per machine class and load condition (idle, under load, not recorded; in order of first appearance): runs,
    median ratio, range, median ms, load, dates, sources. Runs under load are never pooled with idle ones."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        f = rec["figures"]
        if f.get("config", config).strip() != config or "torch" not in f or "ratio" not in f["torch"]:
            continue
        groups.setdefault((machine_class(rec), _busy(rec)), []).append(rec)
    rows = []
    for (machine, _), recs in groups.items():
        ratios = [r["figures"]["torch"]["ratio"] for r in recs]
        loads = [x for x in map(_load, recs) if x is not None]
        rows.append({"machine": machine, "runs": len(recs), "ratio": statistics.median(ratios),
                     "low": min(ratios), "high": max(ratios),
                     "jax_ms": statistics.median(r["figures"]["jax"]["ms_per_step"] for r in recs),
                     "torch_ms": statistics.median(r["figures"]["torch"]["ms_per_step"] for r in recs),
                     "load": max(loads) if loads else None, "cpus": (recs[0].get("load") or {}).get("cpus"),
                     "dates": sorted({r["date"][:10] for r in recs}),
                     "sources": sorted({r.get("source", "measured") for r in recs})})
    return rows


def _load_cell(row: dict) -> str:
    if row["load"] is None:
        return "not recorded"
    busy = row["cpus"] and row["load"] > row["cpus"]
    return f"up to {row['load']:.1f}" + (" (under load)" if busy else "")


def render_step(rows: list[dict]) -> str:
    lines = ["| machine | JAX / PyTorch (median) | range | JAX ms | PyTorch ms | runs | load average | date | source |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['machine']} | **{r['ratio']:.2f}** | {r['low']:.2f}–{r['high']:.2f} | {r['jax_ms']:.1f} | "
                     f"{r['torch_ms']:.1f} | {r['runs']} | {_load_cell(r)} | {', '.join(r['dates'])} | "
                     f"{'; '.join(r['sources'])} |")
    return "\n".join(lines)


def render_scaling(records: list[dict]) -> str:
    lines = ["| machine | attention | median JAX / PyTorch over the grid | step memory at context 512 / PyTorch's | "
             "points | load average | date |", "|---|---|---|---|---|---|---|"]
    for rec in records:
        for impl, s in rec["figures"].get("summary", {}).items():
            mem = s.get("memory_ratio_at_512")
            lines.append(f"| {machine_class(rec)} | {impl} | **{s['median_ratio']:.2f}** | "
                         f"{'—' if mem is None else f'{mem:.2f}'} | {len(rec['figures']['rows'])} | "
                         f"{_load_cell({'load': _load(rec), 'cpus': (rec.get('load') or {}).get('cpus')})} | "
                         f"{rec['date'][:10]} |")
    return "\n".join(lines)


def render(folder: Path = store.RESULTS, config: str = CONFIG) -> str:
    """Both tables as markdown, each with the command that renders it."""
    text = [f"`python bench/step.py` (`{config.split(':')[-1]}`), JAX / PyTorch step time, per machine class:", "",
            render_step(step_rows(store.read("step", folder), config))]
    scaling = store.read("scaling", folder)
    if scaling:
        text += ["", "`python bench/scaling.py`, per run:", "", render_scaling(scaling)]
    text += ["", "Rendered by `python bench/render_table.py` from `bench/results/`."]
    return "\n".join(text)


def write_between_markers(path: Path, text: str) -> None:
    """Replaces what lies between the markers in ``path`` with ``text``.

    Raises:
      ValueError: the markers are missing or out of order (the file is left as it was).
    """
    content = path.read_text()
    start, end = content.find(START), content.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no '{START}' ... '{END}' markers to write the table between.")
    path.write_text(content[:start + len(START)] + "\n" + text + "\n" + content[end:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", default=str(store.RESULTS), help="the results store (a folder)")
    parser.add_argument("--config", default=CONFIG, help="the bench/step.py config whose rows to show")
    parser.add_argument("--write", default="", metavar="FILE", help="put the tables between the markers in FILE")
    args = parser.parse_args(argv)
    try:
        text = render(Path(args.results), args.config)
        if args.write:
            write_between_markers(Path(args.write), text)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
