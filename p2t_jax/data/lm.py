"""Language-model batches: random windows of a token stream, drawn from (seed, step).

As in nanoGPT, a training batch is ``batch_size`` windows of ``seq_len + 1`` tokens at
random offsets; the offsets come from ``numpy.random.default_rng((seed, step))``, so
batch ``step`` is the same whether a run is fresh or resumed, and the data position
saved in a checkpoint is simply the step.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class LMBatches:
    """Deterministic next-token batches over tokenised splits.

    Args:
      splits: ``{"train": int32[N], "validation": int32[M]}`` token streams.
      batch_size: windows per batch (global, across all devices).
      seq_len: tokens per window fed to the model.
      seed: the data seed.
    """

    def __init__(self, splits: dict[str, np.ndarray], batch_size: int, seq_len: int, seed: int):
        for split, ids in splits.items():
            if len(ids) <= seq_len + 1:
                raise ValueError(f"split '{split}' has {len(ids)} tokens, fewer than a window of {seq_len + 1}.")
        self.splits = splits
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed

    def _windows(self, split: str, offsets: np.ndarray) -> dict[str, np.ndarray]:
        ids = self.splits[split]
        idx = offsets[:, None] + np.arange(self.seq_len + 1)[None, :]
        chunk = ids[idx]
        return {"inputs": chunk[:, :-1].astype(np.int32), "targets": chunk[:, 1:].astype(np.int32)}

    def train_batch(self, step: int, rows: slice | None = None) -> dict[str, np.ndarray]:
        """Batch number ``step``: ``{"inputs", "targets"}``, each ``int32[batch, seq_len]``.

        With ``rows``, only those rows of the batch are read (one process's share of a
        multi-process run); they are the same windows as in the whole batch.
        """
        rng = np.random.default_rng((self.seed, int(step)))
        high = len(self.splits["train"]) - self.seq_len - 1
        return self._windows("train", rng.integers(0, high, size=self.batch_size)[rows or slice(None)])

    def eval_batches(self, num_batches: int, split: str = "validation",
                     rows: slice | None = None) -> Iterator[dict[str, np.ndarray]]:
        """``num_batches`` fixed batches of ``split`` (the same ones at every evaluation); ``rows`` as above."""
        rng = np.random.default_rng((self.seed, 2**31 - 1))
        high = len(self.splits[split]) - self.seq_len - 1
        for _ in range(num_batches):
            yield self._windows(split, rng.integers(0, high, size=self.batch_size)[rows or slice(None)])
