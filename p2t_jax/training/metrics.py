"""Metrics as JSON lines (``metrics.jsonl``) and TensorBoard events (``tb/``), process 0 only.

Each line of ``metrics.jsonl`` is one JSON object: ``{"step", "split", "time", **metrics}`` (a
sweep's lines also carry ``"member"``, the member's index in its ``members.json``).
A non-finite value (NaN, infinity) is written as ``null``, so every line stays valid JSON.
When a run resumes from the checkpoint at step S, lines with ``step > S`` (written after that
checkpoint by the run that stopped) are dropped, so every step appears once per split.
(TensorBoard event files are append-only: there, the resumed run's points follow the old ones.)
"""

from __future__ import annotations

import contextlib
import json
import math
import pathlib
import sys
import time

import jax
import numpy as np

from p2t_jax.training.stopping import LogFailed


def to_floats(metrics: dict) -> dict[str, float]:
    """Device scalars to Python floats (one host transfer for the whole dict)."""
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def mean_metrics(history: list[dict]) -> dict[str, float]:
    """Mean of each metric over a list of metric dicts."""
    return {k: float(np.mean([h[k] for h in history])) for k in history[0]} if history else {}


def finite_or_none(value):
    """``value`` with every non-finite float (also inside dicts and lists) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


class MetricsWriter:
    """Appends ``{"step", "split", **metrics}`` lines to ``metrics.jsonl`` and TensorBoard scalars.

    Raises LogFailed (a SaveFailed, one sentence) when a line or a TensorBoard event cannot be written, e.g. on
    a full disk; TensorBoard writes nothing more after its first failure.
    """

    def __init__(self, workdir: str | pathlib.Path, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self._tb = None
        if self.enabled and tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tb"))

    def write(self, step: int, split: str, metrics: dict[str, float], member: int | None = None) -> None:
        """One line; a sweep's member ``i`` adds ``"member": i`` and TensorBoard tags ``split/name/member_i``."""
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, "time": round(time.time(), 3)}
        if member is not None:
            record["member"] = int(member)
        record.update({k: float(v) for k, v in metrics.items()})
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(finite_or_none(record), allow_nan=False) + "\n")
        except OSError as e:
            raise LogFailed(f"could not append to {self.path} ({e.strerror or e}).") from e
        if self._tb is not None:
            points = [(f"{split}/{k}" if member is None else f"{split}/{k}/member_{member}", float(v))
                      for k, v in metrics.items() if math.isfinite(float(v))]
            self._tensorboard(lambda tb: [tb.add_scalar(tag, v, int(step)) for tag, v in points])

    def write_event(self, step: int, event: str, fields: dict) -> None:
        """Appends ``{"step", "split": "event", "time", "event", **fields}`` (e.g. a config change
        allowed on resume); ``read_metrics(workdir, "event")`` reads them back."""
        if not self.enabled:
            return
        record = {"step": int(step), "split": "event", "time": round(time.time(), 3), "event": event, **fields}
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(finite_or_none(record), allow_nan=False) + "\n")
        except OSError as e:
            raise LogFailed(f"could not append to {self.path} ({e.strerror or e}).") from e

    def close(self) -> None:
        """Flushes and closes the TensorBoard events file; LogFailed if that cannot be written."""
        self._tensorboard(lambda tb: tb.close(), last=True)

    def _tensorboard(self, call, last: bool = False) -> None:
        tb = self._tb
        if tb is None:
            return
        if last:
            self._tb = None
        try:
            call(tb)
        except OSError as e:
            self._tb = None
            _abandon(tb)
            raise LogFailed(f"could not write TensorBoard events under {self.path.parent / 'tb'} "
                             f"({e.strerror or e}).") from e


def _abandon(tb) -> None:
    """After a failed TensorBoard write: stops its writer thread and closes its events files, dropping
    what could not be written, so that neither the thread nor tensorboardX's exit hook tries again
    (and prints a traceback after the run's one sentence). Best effort: tensorboardX's internals."""
    for file_writer in list((getattr(tb, "all_writers", None) or {}).values()):
        events = getattr(file_writer, "event_writer", None)
        if events is None or getattr(events, "_closed", True):
            continue
        events._closed = True  # the exit hook's close() is a no-op from here
        with contextlib.suppress(Exception):
            events._worker.stop()
        with contextlib.suppress(Exception):  # closes the file even though its last flush fails
            events._ev_writer._py_recordio_writer._writer.close()


def write_json(path: str | pathlib.Path, data) -> None:
    """Writes ``data`` as indented JSON (non-finite numbers as null), replacing an old file only
    once the new one is complete."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(finite_or_none(data), indent=2, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)


def _parse_lines(path: pathlib.Path) -> tuple[list[dict], int]:
    """The JSON object lines of ``path`` and how many lines were not (a line cut short by a
    killed process, bytes that are not UTF-8, or an edited file)."""
    records, bad = [], 0
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            bad += 1
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and isinstance(record.get("split"), str):
            records.append(record)
        else:
            bad += 1
    return records, bad


def read_metrics(workdir: str | pathlib.Path, split: str | None = None) -> list[dict]:
    """The records of ``metrics.jsonl`` (optionally of one split); lines that are not records are
    skipped with a warning on stderr. Non-finite values read back as None."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records, bad = _parse_lines(path)
    if bad:
        print(f"warning: skipped {bad} line(s) of {path} that are not metric records.", file=sys.stderr)
    return [r for r in records if split is None or r["split"] == split]


def drop_after(workdir: str | pathlib.Path, step: int) -> int:
    """Rewrites ``metrics.jsonl`` without records past ``step`` (and without unreadable lines);
    returns how many lines went. Process 0 only; the file is replaced atomically."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if jax.process_index() != 0 or not path.exists():
        return 0
    records, bad = _parse_lines(path)
    kept = [r for r in records if r["step"] <= step]
    dropped = len(records) - len(kept) + bad
    if dropped:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
        tmp.replace(path)
    return dropped
