"""Which run folders hold quick runs and which full ones: what the overview says beside each.

``p2t reproduce --budget quick|full --out DIR`` writes each chapter into ``DIR/<NN_name>/``
with a ``reproduce.json`` whose ``budget`` field says which budget made it. A folder without
one was made by the experiment script (or ``p2t train``) directly: a full run, unless its
config is a ``smoke`` variant (the tests' tiny configs), which counts as quick.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib

REPRODUCE_FILE = "reproduce.json"  # written by `p2t reproduce` into every chapter folder
BUDGETS = ("quick", "full")
SMALL_VARIANTS = ("smoke",)  # config variants that make small runs (counted as quick)


@dataclasses.dataclass(frozen=True)
class Budget:
    """What made a run folder.

    Attributes:
      name: ``"quick"`` or ``"full"``.
      source: how that is known, in a few words (shown on the overview).
    """

    name: str
    source: str

    def label(self) -> str:
        return f"{self.name} run ({self.source})"


def _read(path: pathlib.Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):  # missing, unreadable, not JSON or not UTF-8
        return None
    return data if isinstance(data, dict) else None


def _variants(folder: pathlib.Path, limit: int = 64):
    """The ``variant`` of every config found in ``folder``: its own (``config.json`` of ``p2t train``,
    the config inside an experiment's ``results.json``) and its run folders' (``result.json``,
    ``config.json``), at most ``limit`` files read."""
    files = [folder / "config.json", folder / "results.json"]
    files += itertools.islice(itertools.chain(folder.glob("*/result.json"), folder.glob("*/config.json")), limit)
    for path in files:
        data = _read(path)
        if data is None:
            continue
        config = data.get("config", data) if path.name != "config.json" else data
        if isinstance(config, dict) and isinstance(config.get("variant"), str):
            yield config["variant"]


def run_budget(folder: str | pathlib.Path) -> Budget:
    """The budget that made the runs in ``folder`` (a chapter folder, or a run folder inside one).

    ``reproduce.json`` in ``folder`` or its parent decides when it names a budget; otherwise a
    config of the ``smoke`` variant makes it quick, and anything else is full.
    """
    folder = pathlib.Path(folder)
    for where in (folder, folder.parent):
        record = _read(where / REPRODUCE_FILE)
        if record is not None and record.get("budget") in BUDGETS:
            return Budget(record["budget"], f"p2t reproduce --budget {record['budget']}")
    small = sorted({v for v in _variants(folder) if v in SMALL_VARIANTS})
    if small:
        return Budget("quick", f"its config is the {small[0]} variant")
    return Budget("full", "made directly, not by p2t reproduce")
