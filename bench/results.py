"""The benchmarks' results store: one JSON line per run under ``bench/results/<bench>.jsonl``.

Every record carries where and when it ran, so a table built from the store names each
row's machine (``bench/render_table.py``)::

    {"bench": "step", "date": "2026-12-03T17:02:11Z",
     "machine": {"model_name": "AMD EPYC", "family": "25", "model": "17", "isa": ["AVX2", ...], "cores": 2},
     "machine_line": "machine: AMD EPYC (family 25, model 17; ...), 2 cores; ...",
     "versions": {"jax": "0.10.2", "jaxlib": "0.10.2", "torch": "2.13.0+cpu"}, "xla_flags": "",
     "load": {"start": [4.1, 3.9, 3.2], "end": [4.6, 4.0, 3.3], "cpus": 2},
     "command": "python bench/step.py ...", "figures": {...}, "source": "measured"}

``source`` is ``measured`` for a run of the bench itself, or says where an imported row came
from (rows from earlier notes, whose machine line is as those notes gave it). ``load`` is the
system's load average (1, 5 and 15 minutes) when the bench started and when it ended: above
the number of CPUs, other work shared the machine and the absolute times are slower.

Importing this module does not import JAX.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (empty where the system has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def versions() -> dict:
    """Installed versions of the packages a bench's figures depend on (those present)."""
    out = {}
    for name in ("jax", "jaxlib", "torch", "flax", "optax"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def record(bench: str, figures: dict, *, machine_line: str, load_start: list[float], command: str | None = None,
           source: str = "measured") -> dict:
    """A store record for one run of ``bench`` (see the module docstring); the load at its end is read now."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import harness

    return {"bench": bench, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": harness.cpu_facts(), "machine_line": machine_line, "versions": versions(),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "load": {"start": load_start, "end": load_average(), "cpus": os.cpu_count()},
            "command": command or "python " + " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]]),
            "figures": figures, "source": source}


def append(rec: dict, folder: Path = RESULTS) -> Path:
    """Appends ``rec`` as one JSON line to ``folder/<bench>.jsonl``; returns that path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{rec['bench']}.jsonl"
    with path.open("a") as f:
        f.write(json.dumps(rec, sort_keys=True) + "\n")
    return path


def read(bench: str, folder: Path = RESULTS) -> list[dict]:
    """Every record of ``bench`` in the store, oldest first.

    Raises:
      ValueError: a line that is not a JSON object (names the file and line).
    """
    path = folder / f"{bench}.jsonl"
    if not path.exists():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n} is not a JSON record ({e.msg}).") from None
        if not isinstance(rec, dict) or "figures" not in rec:
            raise ValueError(f"{path}:{n} is not a results record (a JSON object with 'figures').")
        records.append(rec)
    return records
