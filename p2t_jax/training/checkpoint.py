"""Orbax checkpoints of a TrainState: one folder of saves per run, each verified on restore.

Layout inside a workdir::

    checkpoints/<step>/state/     the arrays (written asynchronously)
    checkpoints/<step>/meta/      JSON: run facts, early-stopping counters, a checksum per array
    checkpoints/<step>/metrics/   the eval loss at that step, when the step was evaluated

One Orbax ``CheckpointManager`` keeps the latest ``keep`` saves *and* the save with the
lowest finite eval loss (its preservation policies ``LatestN`` or ``BestN``), so each state
is written once. Runs saved before this layout hold their best save under ``best/<step>/``,
which ``best=True`` still reads.

**Integrity.** Each save records a checksum of every array (:func:`checksums`: two 32-bit
sums over the array's bits, computed on the devices, so they are the same whatever mesh
the array is sharded over). A restore recomputes them and refuses a mismatch: a flipped
bit in a data file is an error, not a silently different model.

**Fallback.** A restore without an explicit step tries the newest save first and, when it
cannot be read or fails its checksums, warns and tries the next newest (``on_skip``); the
training loop then moves the unreadable saves aside to ``unreadable/`` so new saves can take
their step numbers. Nothing is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
import pathlib
import re
import shutil
import time
from collections.abc import Callable, Coroutine
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies
from orbax.checkpoint._src import asyncio_utils

from p2t_jax.configuration import ConfigError
from p2t_jax.training.stopping import SaveFailed

TMP_MARKER = ".orbax-checkpoint-tmp"


class _OrbaxLogFilter(logging.Filter):
    """Drops Orbax's own log records, and asyncio's reports of its failed write tasks (a
    failed save logs its traceback dozens of times, from several threads); failures reach
    the user as one sentence instead (SaveFailed, CheckpointError). ``P2T_ORBAX_LOGS=1``
    keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL:
            return True
        if record.name == "asyncio":
            return f"{os.sep}orbax{os.sep}" not in record.getMessage()
        return f"{os.sep}orbax{os.sep}" not in record.pathname


def _quiet_orbax_logs() -> None:
    if os.environ.get("P2T_ORBAX_LOGS", "") not in ("", "0"):
        return
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _OrbaxLogFilter) for f in logger.filters):
            logger.addFilter(_OrbaxLogFilter())


def _run_sync_closing_the_loop_cleanly(coro: Coroutine[Any, Any, Any]) -> Any:
    """Orbax's ``asyncio_utils._run_sync_via_new_loop`` (each save, restore and commit runs its
    coroutine in a fresh event loop), ending as ``asyncio.run`` ends: the loop's unfinished tasks
    are cancelled and awaited and its async generators shut down before it is closed.

    Orbax closes the loop at once. When one read or write of an ``asyncio.gather`` fails (a
    truncated file, a shape the save does not have, a full disk), its siblings are still in
    flight: their TensorStore callbacks then find the loop closed (``RuntimeError: Event loop
    is closed``, raised where nothing can catch it) and their coroutines and ``reserved_bytes``
    generators are finalised later by the garbage collector, in whatever test or command runs
    then. Successful calls are unchanged; only the tasks of this loop are touched.
    """
    loop = asyncio.new_event_loop()
    failed = True
    try:
        asyncio.set_event_loop(loop)
        result = loop.run_until_complete(coro)
        failed = False
        return result
    finally:
        try:
            with contextlib.suppress(Exception):  # never in place of the call's own result or error
                pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            if failed:  # TensorStore may still call back from its own threads: keep the loop open for them
                _RETIRED_LOOPS.append(loop)
            else:
                loop.close()


# Loops of calls that failed part-way. A cancelled task does not stop the TensorStore read or
# write it awaited; when that finishes, TensorStore's thread schedules its callback on the loop
# (``call_soon_threadsafe``), which raises where nothing can catch it if the loop is closed. An
# open loop just queues the callback. Only failed calls leave a loop here, so the list stays short.
_RETIRED_LOOPS: list[asyncio.AbstractEventLoop] = []


def _close_orbax_loops_cleanly() -> None:
    """Installs :func:`_run_sync_closing_the_loop_cleanly` in place of Orbax's own (once; an Orbax
    without that function is left as it is)."""
    if getattr(asyncio_utils, "_run_sync_via_new_loop", None) not in (None, _run_sync_closing_the_loop_cleanly):
        asyncio_utils._run_sync_via_new_loop = _run_sync_closing_the_loop_cleanly


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found or read; the message is one sentence for the user."""


class ConfigMismatch(ConfigError):
    """A readable checkpoint whose arrays are not those the config builds (another width, task or
    optimiser): the config is at fault, not the checkpoint, so no older save is tried."""


def _short(e: BaseException) -> str:
    """One short clause for an exception: the operating system's reason when it names one
    (``No space left on device``), else its type and the start of its first line."""
    text = str(e).strip()
    code = re.search(r"os_error_code='?(\d+)", text)
    if code:
        return os.strerror(int(code.group(1)))
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    store = re.search(r"\b([A-Z_]{4,}): .*?Error reading \"([^\"/]+)", text)
    if store:  # TensorStore's chain of drivers, addresses and bound methods: the status and the array
        return f"the data of {store.group(2)} is cut short or damaged, {store.group(1)}"
    text = text.split(" [source locations=")[0].split("See full TensorStore details")[0].strip()
    first = text.splitlines()[0][:200] if text else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


# ---- checksums ------------------------------------------------------------------------------

def _fingerprint(x: jax.Array) -> jax.Array:
    """``uint32[2]``: sums of the array's bits (as uint32 words), weighted by position.

    Integer sums wrap modulo 2**32 and do not depend on the order of addition, so the
    result is the same however the array is sharded or reduced. A single flipped bit changes
    the first sum (each word's weight ``2i + 1`` is odd, hence invertible modulo 2**32).
    """
    if x.dtype == jnp.bool_:
        words = x.astype(jnp.uint32).ravel()
    else:
        unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
        words = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).ravel()
    i = jnp.arange(words.size, dtype=jnp.uint32)
    first = jnp.sum(words * (2 * i + 1), dtype=jnp.uint32)
    second = jnp.sum((words ^ (words >> 15)) * jnp.uint32(2654435761) + i, dtype=jnp.uint32)
    return jnp.stack([first, second])


# One program per state layout, as before the per-shape variant tried for chapter 7's many nets: that one (many small
# programs dispatched per save, sharded states among them) aborted a test worker once in the full suite.
_fingerprints = jax.jit(lambda tree: jax.tree.map(_fingerprint, tree))


def _to_host(x: jax.Array) -> np.ndarray:
    return np.asarray(x if x.is_fully_addressable else x.addressable_data(0))


def checksums(items: Any) -> dict[str, str]:
    """``{"params/block_0/...": "xxxxxxxx-xxxxxxxx"}`` for every array of ``items``."""
    prints = _fingerprints(items)
    return {jax.tree_util.keystr(path, simple=True, separator="/"): "-".join(f"{int(v):08x}" for v in _to_host(fp))
            for path, fp in jax.tree_util.tree_flatten_with_path(prints)[0]}


def verify(items: Any, expected: dict[str, str] | None) -> None:
    """Raises CheckpointError naming the first array whose checksum differs from ``expected``."""
    if not expected:  # saved before checksums were recorded
        return
    for name, value in checksums(items).items():
        if expected.get(name) != value:
            raise CheckpointError(f"checksum mismatch in {name}")


# ---- the manager ----------------------------------------------------------------------------

def _manager(directory: pathlib.Path, *, keep: int | None, metric: str, write: bool) -> ocp.CheckpointManager:
    preservation = None
    if write:
        preservation = policies.AnyPreservationPolicy([
            policies.LatestN(n=keep),
            policies.BestN(get_metric_fn=lambda m: m.get(metric, math.inf), reverse=True, n=1,
                           keep_checkpoints_without_metrics=False)])
    options = ocp.CheckpointManagerOptions(
        create=write, read_only=not write, cleanup_tmp_directories=write, enable_async_checkpointing=True,
        best_fn=lambda m: m.get(metric, math.inf), best_mode="min", preservation_policy=preservation,
        # Several managers may save in one multi-process run: each needs its own barrier names.
        multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=directory.name))
    return ocp.CheckpointManager(directory.absolute(), options=options, item_names=("state", "meta"))


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
    return {jax.tree_util.keystr(path, simple=True, separator="/"): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _difference(directory: pathlib.Path, abstract: Any) -> str | None:
    """The first way the arrays saved in ``directory`` (read from their metadata) differ from
    ``abstract``'s, in words; None when they agree or the metadata cannot be read (the save
    itself is then at fault). Asked only after a restore failed."""
    handler = ocp.StandardCheckpointHandler()
    try:
        saved = _shapes(handler.metadata(directory))
    except Exception:
        return None
    finally:
        handler.close()
    wanted = _shapes(abstract)
    for name in sorted(set(saved) | set(wanted), key=lambda n: (not n.startswith("params"), n)):
        if name not in wanted:
            return f"'{name}' is saved but the config builds no such array"
        if name not in saved:
            return f"the config builds '{name}', which is not saved"
        if saved[name] != wanted[name]:
            return f"'{name}' is saved with shape {saved[name]} and built with shape {wanted[name]}"
    return None


@dataclasses.dataclass
class Restored:
    """A restored checkpoint: the ``checkpoint_items()`` tree, its meta dict, its step and
    the newer steps that were skipped as unreadable (``{step: reason}``)."""

    items: Any
    meta: dict
    step: int
    skipped: dict[int, str]


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
      keep: how many of the latest saves to keep (the best one is kept besides).
      best_metric: the eval metric (lower is better) whose best save is kept.
      write: open for saving (creates ``checkpoints/``, removes temporary folders left by an
        interrupted save); False opens read-only and never writes.
    """

    def __init__(self, workdir: str | pathlib.Path, keep: int = 3, best_metric: str = "loss", *, write: bool = True):
        _quiet_orbax_logs()
        _close_orbax_loops_cleanly()
        self.workdir = pathlib.Path(workdir)
        self.directory = self.workdir / "checkpoints"
        self.metric = best_metric
        self.write = write
        self._unconfirmed = False  # a save was started and its outcome not yet checked
        self._save_failed = False  # a save failed: close() removes what its threads left behind
        if write:
            remove_temporary(self.directory)
        exists = write or self.directory.is_dir()
        self.manager = _manager(self.directory, keep=keep, metric=best_metric, write=write) if exists else None
        legacy = self.workdir / "best"
        try:
            self.legacy_best = (_manager(legacy, keep=None, metric=best_metric, write=False)
                                if not write and legacy.is_dir() else None)
        except BaseException:
            if self.manager is not None:
                self.manager.close()
            raise

    # ---- what is there --------------------------------------------------------------------

    def steps(self) -> list[int]:
        """Saved steps, oldest first."""
        return sorted(self.manager.all_steps()) if self.manager is not None else []

    def latest_step(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def best_step(self) -> int | None:
        """The saved step with the lowest finite eval metric, or None."""
        scored = []
        for step in self.steps():
            value = (self.manager.metrics(step) or {}).get(self.metric)
            if value is not None and math.isfinite(value):
                scored.append((value, step))
        return min(scored)[1] if scored else None

    # ---- saving ---------------------------------------------------------------------------

    def save(self, step: int, items: Any, meta: dict, *, eval_loss: float | None = None) -> bool:
        """Saves ``items`` at ``step`` (asynchronously) unless that step is saved already.

        ``eval_loss`` (when finite) ranks the save for the best one kept. Returns whether a
        save started.

        Raises:
          SaveFailed: the save could not start, or an earlier asynchronous save failed.
        """
        self.check()
        if step in self.manager.all_steps():
            return False
        metrics = {self.metric: float(eval_loss)} if eval_loss is not None and math.isfinite(eval_loss) else {}
        meta = dict(meta, checksums=checksums(items))
        args = ocp.args.Composite(state=ocp.args.StandardSave(items), meta=ocp.args.JsonSave(meta))
        try:
            self.manager.save(step, args=args, metrics=metrics, force=True)
        except Exception as e:
            self._failed(f"could not save a checkpoint in {self.directory} ({_short(e)})", e)
        self._unconfirmed = True
        return True

    def check(self) -> None:
        """Raises SaveFailed if an asynchronous save has failed; cheap enough to call every step."""
        try:
            self.manager.check_for_errors()
            if self._unconfirmed and not self.manager.is_saving_in_progress():
                self._unconfirmed = False
                self.manager.wait_until_finished()  # returns at once, raising if that save failed
        except Exception as e:
            self._failed(f"a checkpoint could not be written to {self.directory} ({_short(e)})", e)

    def wait(self) -> None:
        """Blocks until pending saves are on disk (SaveFailed if one failed)."""
        self._unconfirmed = False
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            self._failed(f"a checkpoint could not be written to {self.directory} ({_short(e)})", e)
        self.check()

    def last_good(self) -> str:
        """'step N' for the newest finished checkpoint on disk, else 'none' (Orbax's own list also
        holds a step whose save is in flight or has failed)."""
        steps = sorted(int(p.name) for p in self.directory.iterdir() if p.name.isdigit() and p.is_dir())
        return f"step {steps[-1]}" if steps else "none"

    def _failed(self, message: str, error: Exception) -> None:
        self._save_failed = True  # close() clears what the save's other threads write after this
        remove_temporary(self.directory)
        raise SaveFailed(f"{message}; the last good checkpoint is {self.last_good()}.") from error

    def close(self) -> None:
        """Waits for pending saves (SaveFailed if one failed), then releases the managers."""
        try:
            if self.manager is not None and self.write:
                self.wait()
        finally:  # each manager is closed even when closing the other fails
            try:
                if self.manager is not None:
                    self.manager.close()  # joins the save's threads
            finally:
                if self.legacy_best is not None:
                    self.legacy_best.close()
                if self._save_failed:
                    remove_temporary(self.directory)

    # ---- restoring ------------------------------------------------------------------------

    def _read(self, manager: ocp.CheckpointManager, step: int, abstract: Any) -> tuple[Any, dict]:
        try:
            restored = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
            verify(restored.state, (restored.meta or {}).get("checksums"))
        except CheckpointError:
            raise
        except Exception as e:
            difference = _difference(pathlib.Path(manager.directory) / str(step) / "state", abstract)
            if difference is not None:
                raise ConfigMismatch(
                    f"the checkpoint at step {step} in {manager.directory} holds another model or optimiser than "
                    f"the config builds ({difference}): the config or the run's config.json was changed since "
                    f"the run was saved; use the config it was trained with, or choose another --workdir.") from None
            raise CheckpointError(_short(e)) from e
        return restored.state, dict(restored.meta or {})

    def restore(self, abstract_items: Any, step: int | None = None, *, best: bool = False,
                on_skip: Callable[[int, str], None] | None = None) -> Restored:
        """Restores the save at ``step``, or the best (``best=True``), or the newest readable one.

        ``abstract_items`` gives the tree structure, shapes, dtypes and shardings to restore
        into (e.g. ``jax.eval_shape`` of the state): a checkpoint saved on one mesh restores
        onto the shardings given here, and leaves without a sharding land on this process's
        first device. Without ``step`` and ``best``, a save that cannot be read or fails its
        checksums is reported to ``on_skip(step, reason)`` and the next newest is tried.

        Raises:
          CheckpointError: nothing to restore, or nothing readable (one sentence).
          ConfigMismatch: a readable save whose arrays differ from ``abstract_items`` (a
            config error; older saves are not tried).
        """
        abstract = jax.tree.map(_restore_target, abstract_items)
        where = self.directory
        if best:
            manager, step = self.manager, self.best_step()
            if step is None and self.legacy_best is not None:
                manager, step, where = self.legacy_best, self.legacy_best.best_step(), self.workdir / "best"
            if step is None:
                raise CheckpointError(f"no evaluated checkpoint (for --best) found in {self.directory}.")
            candidates = [(manager, step)]
        elif step is not None:
            candidates = [(self.manager, step)]
        else:
            candidates = [(self.manager, s) for s in reversed(self.steps())]
        if not candidates or candidates[0][0] is None:
            raise CheckpointError(f"no checkpoint found in {self.directory}.")
        skipped: dict[int, str] = {}
        for manager, s in candidates:
            try:
                items, meta = self._read(manager, s, abstract)
            except CheckpointError as e:
                if len(candidates) == 1:
                    raise CheckpointError(f"the checkpoint at step {s} in {where} cannot be read ({e}).") from e
                skipped[s] = str(e)
                if on_skip is not None:
                    on_skip(s, str(e))
                continue
            return Restored(items, meta, s, skipped)
        raise CheckpointError(f"none of the {len(candidates)} checkpoints in {where} can be read (newest, step "
                              f"{candidates[0][1]}: {skipped[candidates[0][1]]}).")

    def newest_meta(self) -> dict:
        """The meta dict of the newest save whose meta can be read ({} if none): facts fixed
        for the whole run, such as the schedule's horizon, read before the state is restored."""
        for step in reversed(self.steps()):
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
                return dict(restored.meta or {})
            except Exception:  # noqa: BLE001 - an unreadable save: try the one before
                continue
        return {}

    def set_aside(self, steps: list[int]) -> pathlib.Path | None:
        """Moves the saves at ``steps`` to ``unreadable/`` in the workdir (kept, not deleted).

        Call it on every process of a run (only process 0 moves; all reload their view).
        """
        if not steps:
            return None
        target = self.workdir / "unreadable"
        if jax.process_index() == 0:
            target.mkdir(exist_ok=True)
            for step in steps:
                source = self.directory / str(step)
                if source.exists():
                    shutil.move(str(source), str(target / f"checkpoint-{step}-{time.strftime('%Y%m%d-%H%M%S')}"))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("p2t_set_aside_checkpoints")
        self.manager.reload()
        return target


def remove_temporary(directory: pathlib.Path) -> list[str]:
    """Deletes the temporary folders an interrupted or failed Orbax save left in ``directory``."""
    removed = []
    if jax.process_index() == 0 and directory.is_dir():
        for path in directory.iterdir():
            if TMP_MARKER in path.name:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
    return removed
