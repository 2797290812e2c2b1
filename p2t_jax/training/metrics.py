"""Metrics as JSON lines (``metrics.jsonl``) and TensorBoard events (``tb/``), process 0 only."""

from __future__ import annotations

import json
import pathlib
import time

import jax
import numpy as np


def to_floats(metrics: dict) -> dict[str, float]:
    """Device scalars to Python floats (one host transfer for the whole dict)."""
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


def mean_metrics(history: list[dict]) -> dict[str, float]:
    """Mean of each metric over a list of metric dicts."""
    return {k: float(np.mean([h[k] for h in history])) for k in history[0]} if history else {}


class MetricsWriter:
    """Appends ``{"step", "split", **metrics}`` lines to ``metrics.jsonl`` and TensorBoard scalars."""

    def __init__(self, workdir: str | pathlib.Path, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = pathlib.Path(workdir) / "metrics.jsonl"
        self._tb = None
        if self.enabled and tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tb"))

    def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "split": split, "time": round(time.time(), 3)}
        record.update({k: float(v) for k, v in metrics.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def write_json(path: str | pathlib.Path, data) -> None:
    """Writes ``data`` as indented JSON, replacing an old file only once the new one is complete."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def read_metrics(workdir: str | pathlib.Path, split: str | None = None) -> list[dict]:
    """The records of ``metrics.jsonl`` (optionally of one split)."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in records if split is None or r["split"] == split]
