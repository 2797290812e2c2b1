"""Orbax checkpoints of a TrainState: periodic saves, the last N, and the best by a metric.

Layout inside a workdir::

    checkpoints/<step>/   the latest ``keep`` saves (async; the newest is resumed)
    best/<step>/          the single best save by ``best_metric`` (lower is better)
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found or read; the message is one sentence for the user."""


def _manager(directory: pathlib.Path, *, keep: int, best_metric: str | None, create: bool,
             async_save: bool = True) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=create, enable_async_checkpointing=async_save,
        best_fn=(lambda m: m[best_metric]) if best_metric else None, best_mode="min",
        # Multi-process runs: the latest and best managers may save the same step at once,
        # so each needs its own barrier names.
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=directory.name))
    return ocp.CheckpointManager(directory.absolute(), options=options, item_names=("state", "meta"))


def _restore_target(x: Any) -> Any:
    """Shape, dtype and sharding to restore ``x`` into (one local device when ``x`` has no sharding)."""
    target = ocp.utils.to_shape_dtype_struct(x)
    if isinstance(target, jax.ShapeDtypeStruct) and target.sharding is None:
        device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.ShapeDtypeStruct(target.shape, target.dtype, sharding=device)
    return target


class Checkpoints:
    """Saves and restores ``TrainState.checkpoint_items()`` plus a JSON ``meta`` dict.

    Args:
      workdir: the run folder.
      keep: how many of the latest saves to keep.
      best_metric: evaluation metric whose lowest value is kept under ``best/``; None: no best.
    """

    def __init__(self, workdir: str | pathlib.Path, keep: int = 3, best_metric: str | None = "loss",
                 create: bool = True):
        self.workdir = pathlib.Path(workdir)
        self.best_metric = best_metric
        self.latest = _manager(self.workdir / "checkpoints", keep=keep, best_metric=None, create=create)
        self.best = (_manager(self.workdir / "best", keep=1, best_metric=best_metric, create=create)
                     if best_metric else None)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def save(self, step: int, items: Any, meta: dict, *, eval_metrics: dict | None = None,
             force: bool = False) -> None:
        """Saves ``items`` at ``step`` (asynchronously); with ``eval_metrics``, also offers it as best."""
        args = ocp.args.Composite(state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta))
        if self.latest.latest_step() != step:
            self.latest.save(step, args=args, force=force)
        if self.best is not None and eval_metrics is not None and self.best_metric in eval_metrics:
            metrics = {self.best_metric: float(eval_metrics[self.best_metric])}
            if self.best.latest_step() != step:
                self.best.save(step, args=args, metrics=metrics, force=True)

    def restore(self, abstract_items: Any, step: int | None = None, *, best: bool = False) -> tuple[Any, dict]:
        """Restores (items, meta) at ``step`` (default: the latest, or the best with ``best=True``).

        ``abstract_items`` gives the tree structure, shapes, dtypes and shardings to restore
        into (e.g. ``jax.eval_shape`` of the state, or the state itself): a checkpoint saved
        on one mesh restores onto the shardings given here, and leaves without a sharding
        land on this process's first device, whatever mesh saved them.
        """
        manager = self.best if best else self.latest
        if manager is None:
            raise CheckpointError(f"no best checkpoint is kept in {self.workdir}.")
        if step is None:
            step = manager.best_step() if best else manager.latest_step()
        if step is None:
            raise CheckpointError(f"no checkpoint found in {manager.directory}.")
        abstract = jax.tree.map(_restore_target, abstract_items)
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        except Exception as e:
            raise CheckpointError(f"the checkpoint at step {step} in {manager.directory} cannot be read "
                                  f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}).") from e
        return restored.state, restored.meta

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self.latest.wait_until_finished()
        if self.best is not None:
            self.best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.latest.close()
        if self.best is not None:
            self.best.close()
