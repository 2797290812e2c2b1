"""The one training loop every chapter uses.

A chapter supplies a :class:`Task` (model, loss, data); the loop does the rest: state
creation, the jitted step with the state donated, evaluation, metrics (JSON lines and
TensorBoard), a progress bar, Orbax checkpoints and exact resume.

What a run does when things go wrong (``p2t_jax.training.stopping`` has the exit codes):

* One run per workdir: the run holds the workdir's lock (:mod:`p2t_jax.training.workdir_lock`)
  from before it reads the workdir to its end; a second one is refused, naming the first.
* Everything is checked before the workdir is touched: the config (:func:`check_run_config`
  and the task's own checks), the workdir and every path the run writes in it
  (:func:`check_run_paths`), the saved config of a run being resumed (key by key, each
  difference named with both values; ``allow_change`` lets chosen ones through), the
  checkpoint to resume from, every evaluation batch against the mesh, the task's logits
  against its labels (:func:`check_outputs`), and the first step's compilation and memory.
  A failed start leaves the workdir as it was; a run that exists is resumed or refused,
  never started over.
* A non-finite loss or gradient stops the run (``train.on_nonfinite = "stop"``, the
  default) before anything from that step is saved or ranked; ``"skip"`` leaves the state
  unchanged on such steps instead and counts them (the ``nonfinite`` metric).
* SIGINT / SIGTERM / SIGHUP stop the run at the next step boundary, after saving that step.
* A failed save (a full disk) stops the run at once; the last good checkpoint stands.
* After any stop, even ``kill -9``, the same command resumes from the newest readable
  checkpoint and ends exactly where the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from flax.core import meta as flax_meta
from tqdm.auto import tqdm

from p2t_jax import xla_flags
from p2t_jax.configuration import ConfigError, require, upgrade_saved
from p2t_jax.optim.chains import make_optimizer
from p2t_jax.parallel import footprint
from p2t_jax.parallel.partitioning import make_partitioner
from p2t_jax.resources import require_memory
from p2t_jax.training import metrics as metrics_lib
from p2t_jax.training.checkpoint import Checkpoints
from p2t_jax.training.prefetch import Prefetcher
from p2t_jax.training.state import TrainState
from p2t_jax.training.steps import LossFn, make_eval_step, make_train_step
from p2t_jax.training.stopping import Diverged, EarlyStopping, Interrupted, LogFailed, SaveFailed, StopSignals
from p2t_jax.training.workdir_lock import hold

# Config groups that may change when a run is resumed: how long and how often (``train``)
# and on which devices (``parallel``). Everything else (seed, model, data, optim, loss, ...)
# must match the run's saved config.json, unless named in ``allow_change``. More steps keep
# the learning-rate schedule of the first start (:func:`schedule_horizon`).
RESUME_MAY_CHANGE = ("train", "parallel", "variant")
NONFINITE_POLICIES = ("stop", "skip")
INT32_MAX = 2**31 - 1


@dataclasses.dataclass
class Task:
    """What a chapter hands to the loop.

    Attributes:
      init_variables: ``rng -> variables`` (``{"params": ..., other collections}``), plain or
        boxed with logical axis names (``nn.with_logical_partitioning``), which the loop unboxes.
      loss_fn: see :mod:`p2t_jax.training.steps`.
      train_batch: ``step -> batch``, deterministic in the step (the data position).
      eval_batches: ``() -> iterable of batches`` for one evaluation pass; batches may differ
        in rows (a last partial batch): evaluation weighs each by its rows.
      items_per_batch: tokens or examples in a training batch, for throughput.
      items_name: what ``items_per_batch`` counts (``"tokens"``, ``"examples"``).
      batch_rows: ``train_batch`` and ``eval_batches`` take ``rows=slice`` and read only those
        rows of each global batch (so each process of a multi-process run reads its own).
      save_assets: ``workdir -> None``, writes what sampling or evaluation needs later
        (e.g. the tokenizer).
      meta: JSON-ready facts saved with each checkpoint (data source, ...).
      grad_metrics: ``grads -> {name: scalar}``, measured by the train step and logged with
        the training metrics (e.g. each layer's gradient norm); None: none.
      logits_fn: ``(params, model_state, batch) -> logits [..., V]``, the model's output that
        the loss scores against the integer labels ``batch[labels_key]`` (``[...]``). When
        given, the loop checks it once before compiling (:func:`check_outputs`): the rank and
        shape against the labels, and that V exceeds the largest label.
      labels_key: the batch entry holding those labels.
      hyper_loss_fn: ``{config key: traced scalar} -> loss_fn``: the loss with some of
        ``hyper_keys`` given as traced values (the others as in the config), which a sweep
        varies per member inside one compiled step; None: none can vary.
      hyper_keys: the numeric ``model.*`` / ``loss.*`` keys ``hyper_loss_fn`` takes (keys
        that leave every shape unchanged, e.g. ``model.dropout_rate``).
    """

    init_variables: Callable[[jax.Array], dict]
    loss_fn: LossFn
    train_batch: Callable[[int], dict]
    eval_batches: Callable[[], Iterable[dict]]
    items_per_batch: int
    items_name: str = "tokens"
    batch_rows: bool = False
    save_assets: Callable[[pathlib.Path], None] | None = None
    meta: dict = dataclasses.field(default_factory=dict)
    grad_metrics: Callable[[Any], dict] | None = None
    logits_fn: Callable[[Any, Any, dict], jax.Array] | None = None
    labels_key: str = "targets"
    hyper_loss_fn: Callable[[dict], LossFn] | None = None
    hyper_keys: tuple[str, ...] = ()


@dataclasses.dataclass
class Members:
    """Several runs of one task trained as one by the loop: a sweep (:mod:`p2t_jax.training.sweep`).

    The state is one TrainState with every leaf stacked ``[N, ...]`` (one slice per member),
    stepped by one compiled step; the Task's batches are stacked likewise (``[N, B, ...]``).
    The loop checkpoints and resumes the whole stacked state as it does one run's, and logs
    each member's metrics on its own lines (``"member": i``).

    Attributes:
      labels: one dict per member: its swept config keys and their values.
      create_state: ``() -> TrainState``, the stacked initial state.
      make_train_step: ``(skip_nonfinite, chunk, schedule_steps) -> train_step(state, batch) ->
        (state, metrics)``, pure, every metric ``[N]``; ``chunk`` members at a time, each
        member's learning-rate schedule spanning ``schedule_steps`` (fixed at the first start).
      make_eval_step: ``chunk -> eval_step(state, batch) -> metrics``, every metric ``[N]``.
      chunks: the members per vmapped group to try, largest first: the loop compiles the step
        for each in turn and keeps the first whose memory fits (:func:`require_memory`).
    """

    labels: list[dict]
    create_state: Callable[[], TrainState]
    make_train_step: Callable[[bool, int, int], Callable]
    make_eval_step: Callable[[int], Callable]
    chunks: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        return len(self.labels)

    def name(self, member: int) -> str:
        """``member 3 (optim.learning_rate=0.003, seed=1)``."""
        return f"member {member} ({', '.join(f'{k}={v}' for k, v in self.labels[member].items())})"


# ---- checks before anything is built ---------------------------------------------------------

def _numbers(node: Any, prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            yield from _numbers(value, name + ".")
        elif isinstance(value, (tuple, list)):
            yield from ((f"{name}[{i}]", v) for i, v in enumerate(value) if not isinstance(v, (tuple, list)))
        else:
            yield name, value


def check_run_config(config: ml_collections.ConfigDict) -> None:
    """Checks what the loop itself reads, and that every number in ``config`` is usable.

    Every integer must fit int32 and every float be finite (a NaN learning rate or a
    warm-up of 1e10 steps is refused here, not deep inside a compiled step); ``seed`` is in
    ``[0, 2**32)``; the ``train`` step counts are positive.

    Raises:
      ConfigError: one sentence naming the key.
    """
    for key, value in _numbers(config):
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            require(-INT32_MAX - 1 <= value <= INT32_MAX,
                    f"config key '{key}' ({value}) is out of range: integers must fit in 32 bits "
                    f"(at most {INT32_MAX:,}).")
        elif isinstance(value, float):
            require(math.isfinite(value), f"config key '{key}' must be a finite number, got {value}.")
    seed = config.get("seed", 0)
    require(isinstance(seed, int) and 0 <= seed < 2**32, f"config key 'seed' must be an integer >= 0, got {seed!r}.")
    tc = config.train
    for key in ("num_steps", "log_every", "eval_every", "checkpoint_every", "keep_checkpoints"):
        value = tc[key]
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                f"config key 'train.{key}' must be a positive integer, got {value!r}.")
    require(tc.get("early_stop_patience", 0) >= 0,
            f"config key 'train.early_stop_patience' must be >= 0 (0: never stop early), "
            f"got {tc.get('early_stop_patience')}.")
    save_on_eval = tc.get("save_on_eval", True)
    require(isinstance(save_on_eval, bool), f"config key 'train.save_on_eval' must be true or false, got {save_on_eval!r}.")
    policy = tc.get("on_nonfinite", "stop")
    require(policy in NONFINITE_POLICIES,
            f"config key 'train.on_nonfinite' must be one of {', '.join(NONFINITE_POLICIES)}, got {policy!r}.")
    check_large_run_keys(tc)


def check_large_run_keys(tc: ml_collections.ConfigDict) -> None:
    """``train.grad_accum_steps`` (>= 1, dividing ``train.batch_size``) and ``train.prefetch`` (>= 0)."""
    k, depth = tc.get("grad_accum_steps", 1), tc.get("prefetch", 0)
    require(isinstance(k, int) and not isinstance(k, bool) and k >= 1,
            f"config key 'train.grad_accum_steps' must be a positive integer (1: no accumulation), got {k!r}.")
    rows = tc.get("batch_size")
    require(rows is None or rows % k == 0,
            f"config key 'train.grad_accum_steps' ({k}) must divide 'train.batch_size' ({rows}): each step "
            f"splits its batch into that many equal microbatches.")
    require(isinstance(depth, int) and not isinstance(depth, bool) and depth >= 0,
            f"config key 'train.prefetch' must be an integer >= 0 (0: no prefetch), got {depth!r}.")


def check_workdir(workdir: pathlib.Path) -> None:
    """The workdir must be a folder (or not exist yet) that this process can write to."""
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"workdir '{workdir}' exists and is not a folder.")
    existing = workdir if workdir.exists() else next((p for p in workdir.absolute().parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ConfigError(f"workdir '{workdir}' cannot be created: '{existing}' is a file.")


# What a run writes inside its workdir: folders, and files it appends to or replaces.
RUN_FOLDERS = ("checkpoints", "tb")
RUN_FILES = ("metrics.jsonl", "config.json", "summary.json")


def check_run_paths(workdir: pathlib.Path) -> None:
    """Every path the run will write inside ``workdir`` is of the right kind and writable, and a
    run that exists there can be resumed (its ``checkpoints`` folder is there).

    Called before anything is written, so a bad path never costs a rewritten config.json or
    a truncated metrics.jsonl. (A ``checkpoints`` folder without a complete save is a run
    stopped before its first save: it starts again from step 0.)

    Raises:
      ConfigError: one sentence naming the path.
    """
    if not workdir.is_dir():
        return
    for name in RUN_FOLDERS:
        path = workdir / name
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise ConfigError(f"'{path}' is not a folder, so the run cannot write its {name} there; "
                                  f"move it away or choose another --workdir.")
            if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
                raise ConfigError(f"'{path}' cannot be written (permission denied); choose another --workdir.")
    for name in RUN_FILES:
        path = workdir / name
        if path.exists() or path.is_symlink():
            if not path.is_file():
                raise ConfigError(f"'{path}' is not a file; move it away or choose another --workdir.")
            if not os.access(path, os.R_OK | os.W_OK):
                raise ConfigError(f"'{path}' cannot be written (permission denied); choose another --workdir.")
    if (workdir / "config.json").exists() and not (workdir / "checkpoints").exists():
        raise ConfigError(f"workdir '{workdir}' holds a run (config.json) but no checkpoints folder, so it cannot "
                          f"be resumed and is not started over; restore the folder or choose another --workdir.")


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model.emb_dim": 64, ...}``: the leaves of a nested dict under dotted keys."""
    out = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _allowed(key: str, allow_change: Iterable[str]) -> bool:
    return any(key == a or key.startswith(a + ".") for a in allow_change)


def config_changes(saved: dict, now: dict) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved value, new value)}`` for every field of ``saved`` that ``now``
    holds differently, outside :data:`RESUME_MAY_CHANGE` (fields added since the run was saved
    are not compared; a field the config no longer has is ``None`` now)."""
    old, new = _flat(saved), _flat(now)
    changes = {}
    for key, value in old.items():
        if key.split(".")[0] in RESUME_MAY_CHANGE:
            continue
        if key not in new and any(k.startswith(key + ".") for k in new):  # {} saved, a group now
            continue
        current = new.get(key)
        if not _same(value, current):
            changes[key] = (value, current)
    return changes


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _saved_config(workdir: pathlib.Path) -> dict | None:
    saved_path = workdir / "config.json"
    if not saved_path.exists():
        return None
    try:
        saved = json.loads(saved_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"workdir '{workdir}' has a config.json that cannot be read ({type(e).__name__}); "
                          f"choose a new --workdir or restore the file.") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"workdir '{workdir}' has a config.json that does not hold a config; choose a new "
                          f"--workdir or restore the file.")
    return upgrade_saved(saved)  # fields that moved, read in their new place


def _check_resumable(workdir: pathlib.Path, config: ml_collections.ConfigDict,
                     allow_change: Iterable[str] = ()) -> dict[str, tuple[Any, Any]]:
    """Compares the run's saved config.json with ``config`` key by key.

    Returns the differences ``allow_change`` permits (``{key: (saved, new)}``, for the
    metrics' event line). Raises ConfigError naming every other difference with both values.
    """
    saved = _saved_config(workdir)
    if saved is None:
        return {}
    changes = config_changes(saved, json.loads(config.to_json()))
    refused = {k: v for k, v in changes.items() if not _allowed(k, allow_change)}
    if refused:
        listed = "; ".join(f"{k} was {json.dumps(a)}, now {json.dumps(b)}" for k, (a, b) in refused.items())
        flags = " ".join(f"--allow-change {k}" for k in refused)
        raise ConfigError(f"workdir {workdir} holds a run whose config differs: {listed}; resume with the saved "
                          f"values, pass {flags} for changes you mean, or choose a new --workdir.")
    return changes


def check_allow_change(config: ml_collections.ConfigDict, allow_change: Iterable[str]) -> None:
    """Every ``--allow-change`` key must be a config key or group (ConfigError, one sentence)."""
    keys = _flat(json.loads(config.to_json()))
    for key in allow_change:
        require(any(k == key or k.startswith(key + ".") for k in keys),
                f"--allow-change {key!r} is not a config key (such as optim.learning_rate, or a group such as optim).")


def schedule_horizon(config: ml_collections.ConfigDict, saved_meta: dict | None,
                     saved_config: dict | None) -> int:
    """The step count the learning-rate schedule spans, fixed at the run's first start.

    A fresh run: ``train.num_steps``. A resumed run: the horizon its checkpoints recorded
    (``schedule_steps`` in their meta), else (saved before it was recorded) the
    ``train.num_steps`` of its saved config. So raising ``train.num_steps`` on resume
    continues the same schedule; to stretch it, set ``optim.decay_steps`` (with
    ``--allow-change optim.decay_steps``), which overrides the horizon.
    """
    if saved_meta and isinstance(saved_meta.get("schedule_steps"), int):
        return saved_meta["schedule_steps"]
    if saved_config is not None:
        steps = saved_config.get("train", {}).get("num_steps")
        if isinstance(steps, int) and steps > 0:
            return steps
    return config.train.num_steps


# ---- state --------------------------------------------------------------------------------

def create_state(init_variables: Callable, config: ml_collections.ConfigDict,
                 tx: optax.GradientTransformation | None = None) -> TrainState:
    """A fresh TrainState from ``config.seed``, ``init_variables(rng)`` and ``tx`` (default:
    the optimiser ``config.optim`` describes)."""
    if tx is None:
        tx, _ = make_optimizer(config.optim, config.train.num_steps, config=config)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = flax_meta.unbox(init_variables(init_rng))
    return TrainState.create(variables=variables, tx=tx, rng=state_rng)


def state_shapes(abstract_variables: Any, config: ml_collections.ConfigDict,
                 tx: optax.GradientTransformation) -> TrainState:
    """``jax.eval_shape(lambda: create_state(init_variables, config, tx))`` from the abstract
    variables ``jax.eval_shape(init_variables, rng)`` (plain or boxed), without tracing the
    model's initialisation again (for a 30-layer net that trace takes seconds)."""
    def create(variables):
        _, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
        return TrainState.create(variables=flax_meta.unbox(variables), tx=tx, rng=state_rng)
    return jax.eval_shape(create, abstract_variables)


def _warn(text: str) -> None:
    if jax.process_index() == 0:
        print(f"warning: {text}", file=sys.stderr, flush=True)


def _warn_skipped(step: int, reason: str) -> None:
    _warn(f"the checkpoint at step {step} cannot be read ({reason}); trying the one before it.")


def restore_state(init_variables: Callable, config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                  *, best: bool = False, tx: optax.GradientTransformation | None = None) -> tuple[TrainState, dict]:
    """The TrainState saved in ``workdir`` (the newest readable save, or the best by eval loss),
    and its meta dict. Nothing is initialised for real: shapes come from ``jax.eval_shape``.

    Raises:
      CheckpointError: no checkpoint, or none that can be read and passes its checksums.
    """
    abstract = jax.eval_shape(lambda: create_state(init_variables, config, tx))
    checkpoints = Checkpoints(workdir, write=False)
    try:
        restored = checkpoints.restore(abstract.checkpoint_items(), best=best, on_skip=_warn_skipped)
    finally:
        checkpoints.close()
    return abstract.replace_items(restored.items), restored.meta


# ---- the first step ------------------------------------------------------------------------

def _shape(shape: tuple[int, ...]) -> str:
    return f"[{', '.join(map(str, shape))}]"


def check_outputs(task: Task, state: TrainState, batch: dict) -> None:
    """The task's output against its labels, once, before the first step compiles.

    Needs ``task.logits_fn``; the logits' shape comes from ``jax.eval_shape`` (nothing runs).
    Raises ConfigError (one sentence) when the logits are not ``[*labels.shape, V]`` (e.g. a
    pooled ``[B, V]`` output for ``[B, T]`` labels) or when V does not exceed the largest label.
    """
    if task.logits_fn is None or not isinstance(batch, dict) or task.labels_key not in batch:
        return
    labels = batch[task.labels_key]
    logits = jax.eval_shape(task.logits_fn, state.params, state.model_state, batch)
    key = task.labels_key
    if not hasattr(logits, "shape") or tuple(logits.shape[:-1]) != tuple(labels.shape) or len(logits.shape) < 1:
        shape = getattr(logits, "shape", None)
        raise ConfigError(f"the task's model returns logits of shape {_shape(shape) if shape is not None else shape} "
                          f"for labels '{key}' of shape {_shape(labels.shape)}; the loss needs one row of scores per "
                          f"label, logits of shape {_shape((*labels.shape, 'V'))} (a pooled or flattened output "
                          f"drops or merges an axis).")
    if not np.issubdtype(np.dtype(labels.dtype), np.integer):
        return
    classes, largest = int(logits.shape[-1]), int(jax.device_get(jax.numpy.max(labels)))
    require(largest < classes,
            f"the task's model scores {classes} classes (the logits' last axis) but the labels '{key}' reach "
            f"{largest}; its vocabulary or head must have at least {largest + 1} outputs.")


def _compile_first_step(train_step: Any, state: TrainState, batch: dict) -> Any:
    """The compiled train step; a model or loss that cannot be traced on this batch (shapes that
    do not agree) is one sentence, not a traceback."""
    try:
        return train_step.lower(state, batch).compile()
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise ConfigError(f"the task's first training step cannot be traced ({type(e).__name__}: {first}); check "
                          f"that the model's output and the loss's labels agree in shape.") from e


# ---- evaluation ---------------------------------------------------------------------------

def _rows(batch: Any) -> int:
    return int(jax.tree.leaves(batch)[0].shape[0])


def evaluate(eval_step: Callable, state: TrainState, batches: Iterable[dict], *,
             members: Members | None = None) -> dict[str, float] | list[dict[str, float]]:
    """Per-example means of ``eval_step``'s metrics over ``batches``: each batch's metrics
    (means over its rows) weigh by its rows, so uneven or partial batches count right.

    With ``members`` (a sweep: batches ``[N, B, ...]``, metrics ``[N]``), one dict per member.
    """
    if members is not None:
        totals_n: dict[str, np.ndarray] = {}
        rows = 0
        for batch in batches:
            n = int(jax.tree.leaves(batch)[0].shape[1])
            for k, v in jax.device_get(eval_step(state, batch)).items():
                totals_n[k] = totals_n.get(k, 0.0) + np.asarray(v, np.float64) * n
            rows += n
        return [{k: float(v[i]) / rows for k, v in totals_n.items()} if rows else {} for i in range(members.count)]
    totals: dict[str, float] = {}
    rows = 0
    for batch in batches:
        n = _rows(batch)
        for k, v in metrics_lib.to_floats(eval_step(state, batch)).items():
            totals[k] = totals.get(k, 0.0) + v * n
        rows += n
    return {k: v / rows for k, v in totals.items()} if rows else {}


# ---- the loop -----------------------------------------------------------------------------

class _Run:
    """Bookkeeping of one call of :func:`train_and_evaluate` (progress, logs, saves)."""

    def __init__(self, task: Task, config: ml_collections.ConfigDict, workdir: pathlib.Path, progress: bool,
                 start: int, members: Members | None = None):
        self.task, self.config, self.workdir, self.members = task, config, workdir, members
        self.is_main = jax.process_index() == 0
        self.bar = tqdm(total=config.train.num_steps, initial=start, disable=not (progress and self.is_main),
                        dynamic_ncols=True, desc="train", unit="step")
        self.say = self.bar.write if self.is_main else (lambda text: None)
        self.history: list[dict] = []  # train metrics since the last log, device values
        self.checked = 0  # how many of them are known to be finite
        self.interval_ms: list[float] = []
        self.t_interval, self.steps_in_interval = time.perf_counter(), 0

    def first_nonfinite(self, step: int) -> tuple[int, dict] | None:
        """The first unchecked step (1-based) whose loss or gradient was not finite, with its metrics
        (in a sweep: the first such member's, with ``member``)."""
        fresh = self.history[self.checked:]
        flags = jax.device_get([m["nonfinite"] for m in fresh])
        self.checked = len(self.history)
        for i, flag in enumerate(flags):
            if np.any(flag):
                if self.members is None:
                    return step - len(fresh) + i + 1, metrics_lib.to_floats(fresh[i])
                member = int(np.argmax(np.asarray(flag) > 0))
                values = {k: float(v[member]) for k, v in jax.device_get(fresh[i]).items()}
                return step - len(fresh) + i + 1, dict(values, member=member)
        return None

    def log_train(self, writer: metrics_lib.MetricsWriter, step: int) -> dict[str, float] | list[dict[str, float]]:
        task = self.task
        ms = 1000 * (time.perf_counter() - self.t_interval) / self.steps_in_interval
        self.interval_ms.append(ms)
        rates = {"ms_per_step": ms, f"{task.items_name}_per_s": 1000 * task.items_per_batch / ms}
        if self.members is not None:  # one line per member; the rates are the whole sweep's
            means = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *jax.device_get(self.history))
            trains = [dict({k: float(v[i]) for k, v in means.items()}, **rates) for i in range(self.members.count)]
            for i, values in enumerate(trains):
                writer.write(step, "train", values, member=i)
            self.bar.set_postfix(loss=f"{min(t['loss'] for t in trains):.4f} (best member)")
            self.history.clear()
            self.checked = 0
            return trains
        train = metrics_lib.mean_metrics([metrics_lib.to_floats(m) for m in self.history])
        train.update(rates)
        writer.write(step, "train", train)
        self.bar.set_postfix(loss=f"{train['loss']:.4f}",
                             **{f"{task.items_name}/s": f"{train[f'{task.items_name}_per_s']:,.0f}"})
        if train.get("nonfinite"):
            self.say(f"step {step}: skipped {round(train['nonfinite'] * len(self.history))} non-finite step(s) "
                     f"since the last log (train.on_nonfinite=skip).")
        self.history.clear()
        self.checked = 0
        return train

    def restart_clock(self) -> None:
        self.t_interval, self.steps_in_interval = time.perf_counter(), 0


def _diverged(step: int, values: dict, last_saved: int | None, what: str | None = None,
              members: Members | None = None) -> Diverged:
    if what is None:
        loss = values.get("loss", math.nan)
        what = (f"the loss became {loss}" if not math.isfinite(loss)
                else f"the gradient norm became {values.get('grad_norm')}")
    if members is not None and "member" in values:
        what = f"{members.name(values['member'])}: {what}"
    kept = f"the last checkpoint is step {last_saved}" if last_saved is not None else "no checkpoint was saved"
    if step == 1:  # not finite before any update: the model's output and the labels, more likely than the rate
        return Diverged(f"training diverged at step 1, before any update could have: {what}; nothing was saved "
                        f"(the initial model already gives it: check that its output fits the labels, e.g. a "
                        f"vocabulary or head larger than the largest label, which Task.logits_fn lets the loop "
                        f"check, and that the batches hold finite numbers).")
    return Diverged(f"training diverged at step {step}: {what}; nothing from it was saved and {kept} "
                    f"(lower optim.learning_rate, or set train.on_nonfinite=skip to skip such steps).")


def _start_workdir(workdir: pathlib.Path, config: ml_collections.ConfigDict, task: Task,
                   resumed_from: int | None, created: bool) -> None:
    """The first writes of a run, once everything has been checked: the folder, config.json,
    the task's assets, and the clean-up of what a stopped run left (metrics past the
    restored step, unreadable checkpoints moved aside). ``created``: this run created the folder."""
    created = created or not workdir.exists()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        if jax.process_index() == 0:
            (workdir / "checkpoints").mkdir(exist_ok=True)  # before config.json: see check_run_paths
            metrics_lib.write_json(workdir / "config.json", json.loads(config.to_json()))
            if task.save_assets is not None:
                task.save_assets(workdir)
            dropped = metrics_lib.drop_after(workdir, resumed_from or 0)
            if dropped:
                _warn(f"dropped {dropped} line(s) of metrics.jsonl written after the checkpoint at step "
                      f"{resumed_from or 0}, which the run resumes from.")
    except OSError as e:
        if created:
            shutil.rmtree(workdir, ignore_errors=True)
        raise ConfigError(f"workdir '{workdir}' cannot be written ({e.strerror or e}).") from None


def train_and_evaluate(task: Task, config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       *, progress: bool = True, tx: optax.GradientTransformation | None = None,
                       allow_change: Iterable[str] = (), members: Members | None = None,
                       steps: dict | None = None) -> tuple[TrainState, dict]:
    """Trains ``task`` for ``config.train.num_steps`` steps in ``workdir``, resuming if it holds a checkpoint.

    Config fields used: ``seed``, ``optim.*`` (see :func:`p2t_jax.optim.chains.make_optimizer`;
    unused when ``tx`` is given), ``train.num_steps``, ``train.log_every``,
    ``train.eval_every``, ``train.checkpoint_every``, ``train.keep_checkpoints``; optional
    ``train.save_on_eval`` (True, the default: also save at every evaluation, so that the
    best checkpoint by eval loss is kept; False: every ``checkpoint_every`` steps and at the
    end only, unless early stopping needs the best), ``train.early_stop_patience`` (stop once the
    eval loss has not improved for that many
    evaluations; missing or 0: never) and ``train.on_nonfinite`` (``"stop"``, the default, or
    ``"skip"``); ``parallel.*`` when present (:mod:`p2t_jax.parallel`).

    Args:
      task: the chapter's model, loss and data.
      config: the run's config (saved as ``workdir/config.json``).
      workdir: the run folder.
      progress: show a progress bar.
      tx: an Optax transformation to train with instead of the one ``config.optim``
        describes (its learning rate and other hyperparameters are logged when it keeps them
        in its state, i.e. is built with ``optax.inject_hyperparams``).
      allow_change: config keys (or groups) that may differ from the saved config of the run
        being resumed; each change made is written to metrics.jsonl as an event line. The
        learning-rate schedule keeps the horizon fixed at the run's first start
        (:func:`schedule_horizon`).
      members: train several runs at once, stacked (a sweep, :class:`Members`); ``task``'s
        batches are then stacked ``[N, B, ...]``, and the summary's ``train`` and ``eval`` are
        lists, one dict per member.
      steps: a dict that receives the jitted evaluation step the loop used (``"eval"``:
        ``(state, batch) -> metrics``, with this run's shardings), so that the returned state
        can be evaluated further without tracing and compiling another one.

    Returns:
      ``(state, summary)``: the final TrainState and the run summary (plain JSON, also written
      to ``workdir/summary.json``): final step, last train and eval metrics, compile seconds,
      median ms/step, items/s, the step of an early stop (or None), the step resumed from, and
      when this call ran step 1, ``first_step``: that step's train metrics (its gradients are
      those at initialisation).

    Raises:
      ConfigError: bad config or workdir, found before anything was written.
      CheckpointError: no readable checkpoint to resume from.
      Diverged, Interrupted, SaveFailed: see :mod:`p2t_jax.training.stopping`.
    """
    # From the start: a Ctrl-C while compiling ends the run before it writes.
    with StopSignals() as signals, contextlib.ExitStack() as held:
        return _train(task, config, pathlib.Path(workdir), progress, tx, signals, held, tuple(allow_change),
                      members, steps)


def _train(task: Task, config: ml_collections.ConfigDict, workdir: pathlib.Path, progress: bool,
           tx: optax.GradientTransformation | None, signals: StopSignals,
           held: contextlib.ExitStack, allow_change: tuple[str, ...] = (),
           members: Members | None = None, steps: dict | None = None) -> tuple[TrainState, dict]:
    check_run_config(config)
    check_workdir(workdir)
    check_allow_change(config, allow_change)
    # One writer per workdir, for the whole run: taken before the workdir is read (process 0's,
    # for every process of a multi-process run); a refused run has touched nothing.
    created = held.enter_context(hold(workdir, enabled=jax.process_index() == 0))
    check_run_paths(workdir)
    changes = _check_resumable(workdir, config, allow_change)
    tc = config.train
    policy = tc.get("on_nonfinite", "stop")
    # None without config.parallel; a sweep runs on one device (its 'parallel' group is not used)
    partitioner = make_partitioner(config, task.init_variables) if members is None else None

    # Resume from the newest readable checkpoint (reading only), else start afresh.
    reader = Checkpoints(workdir, tc.keep_checkpoints, write=False)
    try:
        resuming = bool(reader.steps())
        horizon = (schedule_horizon(config, reader.newest_meta(), _saved_config(workdir)) if resuming
                   else tc.num_steps)
        schedule = None
        if tx is None:
            tx, schedule = make_optimizer(config.optim, horizon, config=config)
        make_state = lambda: create_state(task.init_variables, config, tx)  # noqa: E731
        if members is not None:
            make_state = members.create_state
        shapes = None  # the state's shapes from the variables' the partitioner traced: one abstract init
        if partitioner is not None and partitioner.abstract_variables is not None:
            shapes = state_shapes(partitioner.abstract_variables, config, tx)
        if resuming:
            abstract = (jax.eval_shape(make_state) if partitioner is None
                        else partitioner.abstract_state(make_state, shapes))
            restored = reader.restore(abstract.checkpoint_items(), on_skip=_warn_skipped)
            state, resumed_from, saved_meta, skipped = (abstract.replace_items(restored.items), restored.step,
                                                        restored.meta, sorted(restored.skipped))
        else:
            state = make_state() if partitioner is None else partitioner.init_state(make_state, shapes)
            resumed_from, saved_meta, skipped = None, {}, []
    finally:
        reader.close()
    start = int(state.step) if members is None else int(np.ravel(jax.device_get(state.step))[0])  # members step together

    train_step_fn = make_train_step(task.loss_fn, schedule, grad_metrics=task.grad_metrics,
                                    skip_nonfinite=policy == "skip", grad_accum_steps=tc.get("grad_accum_steps", 1))
    chunk, chunk_bytes = None, {}
    if members is not None:
        chunks = members.chunks or (members.count,)

        def member_steps(chunk: int) -> tuple[Any, Any]:
            return (jax.jit(members.make_train_step(policy == "skip", chunk, horizon), donate_argnums=0),
                    jax.jit(members.make_eval_step(chunk)))

        chunk = chunks[0] if start < tc.num_steps else chunks[-1]  # evaluating only: the smallest
        train_step, eval_step = member_steps(chunk)
        train_batch, eval_batches = task.train_batch, task.eval_batches
    elif partitioner is None:
        train_step = jax.jit(train_step_fn, donate_argnums=0)
        eval_step = jax.jit(make_eval_step(task.loss_fn))
        train_batch, eval_batches = task.train_batch, task.eval_batches
    else:  # the same steps, with explicit shardings on the mesh
        train_step = partitioner.jit_train_step(train_step_fn, state)
        eval_step = partitioner.jit_eval_step(make_eval_step(task.loss_fn), state)
        train_batch, eval_batches = partitioner.batch_readers(task)
    if steps is not None:
        steps["eval"] = eval_step

    compile_s, batch = None, None
    if start < tc.num_steps and partitioner is not None:  # not at the first evaluation, after steps have run
        partitioner.check_eval_batches(task)
    if start < tc.num_steps:  # compile before writing anything: a step that cannot run fails here
        batch = train_batch(start)
        if members is None:
            check_outputs(task, state, batch)
        else:  # member 0's output against its labels (every member has the same model)
            check_outputs(task, jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), state),
                          jax.tree.map(lambda x: x[0], batch))
        t0 = time.perf_counter()
        if members is None or len(chunks) == 1:
            train_step = _compile_first_step(train_step, state, batch)
            memory = train_step.memory_analysis()
            if memory is not None:
                require_memory(memory.temp_size_in_bytes, "one training step",
                               "lower train.batch_size or the model's size")
        else:  # a sweep without --chunk: the most members at a time whose step fits
            for chunk in chunks:
                train_step, eval_step = member_steps(chunk)
                train_step = _compile_first_step(train_step, state, batch)
                memory = train_step.memory_analysis()
                chunk_bytes[chunk] = memory.temp_size_in_bytes if memory is not None else 0
                try:
                    require_memory(chunk_bytes[chunk], f"one training step of the sweep ({chunk} of its "
                                   f"{members.count} members at a time)", "lower train.batch_size or the model's size")
                    break
                except ConfigError:
                    if chunk == chunks[-1]:
                        raise
        compile_s = time.perf_counter() - t0
    # ahead of each step, its batch onto the devices (the partitioner's readers place batches themselves)
    shardings = train_step.input_shardings[0][1] if batch is not None and partitioner is None else None
    place = (lambda b: b) if shardings is None else (lambda b: jax.device_put(b, shardings))  # noqa: E731
    feed = Prefetcher(train_batch, place, tc.get("prefetch", 0), tc.num_steps)

    # ---- from here on the run has started: the workdir is written ----
    if signals.requested:
        raise Interrupted("interrupted before training started; nothing was written.", signals.signum)
    _start_workdir(workdir, config, task, resumed_from, created)
    checkpoints = Checkpoints(workdir, tc.keep_checkpoints, write=True)
    try:
        checkpoints.set_aside(skipped)
        writer = metrics_lib.MetricsWriter(workdir)
        if members is not None and jax.process_index() == 0:
            metrics_lib.write_json(workdir / "members.json",
                                   [dict(member=i, **m) for i, m in enumerate(members.labels)])
    except BaseException:  # the checkpointer's threads closed on this path too
        with contextlib.suppress(Exception):
            checkpoints.close()
        raise
    run = _Run(task, config, workdir, progress, start, members)
    say = run.say
    early = EarlyStopping.from_meta(tc.get("early_stop_patience", 0), saved_meta.get("early_stop"))
    if partitioner is not None:
        say(f"mesh: {partitioner.describe()}")
    if members is not None:
        said = ", ".join(f"{c}: {b / 2**20:,.1f} MiB" for c, b in chunk_bytes.items())
        say(f"sweep: {members.count} members, {chunk} at a time in one compiled step"
            + (f" (the most that fit the free memory; step scratch memory by chunk: {said})" if said else ""))
    state_footprint = footprint.measure(state.params, state.opt_state,
                                        partitioner.batch_axes if partitioner is not None else ())
    say(footprint.describe(state_footprint))
    for text in footprint.warnings(state_footprint):
        _warn(text)
    if resumed_from and jax.default_backend() == "gpu" and not xla_flags.is_deterministic():
        say(f"resuming from step {resumed_from} on a GPU: the state is restored exactly, but XLA's GPU reductions add "
            f"in no fixed order, so the steps from here match an uninterrupted run's only to rounding "
            f"(--deterministic makes them bit-for-bit, for a slower step).")
    if skipped:
        say(f"resuming from step {resumed_from}: the newer checkpoint(s) at step {', '.join(map(str, skipped))} "
            f"could not be read and were moved to {workdir / 'unreadable'}.")
    summary: dict[str, Any] = {"resumed_from": resumed_from, "start_step": start, "schedule_steps": horizon,
                               "chunk": chunk, "chunk_bytes": chunk_bytes,
                               "mesh": partitioner.describe() if partitioner is not None else None,
                               "deterministic_gpu": xla_flags.is_deterministic()}
    summary["state"] = {"parameters": state_footprint.parameters, "param_bytes_per_device": state_footprint.param_bytes,
                        "opt_state_bytes_per_device": state_footprint.opt_bytes,
                        "unsharded_mesh_axes": [axis for axis, _ in state_footprint.unsharded_axes]}
    eval_metrics: Any = {}  # a dict of floats; in a sweep, a list of them (one per member)
    train_metrics: Any = {}
    early_stopped_at = None
    last_saved = resumed_from
    step = start
    first_step_metrics = None
    # saves at each evaluation rank the checkpoints by eval loss; early stopping keeps the best one
    save_on_eval = tc.get("save_on_eval", True) or bool(tc.get("early_stop_patience", 0))

    def save(at: int, eval_loss: float | None = None) -> None:
        nonlocal last_saved
        meta = dict(task.meta, step=at, early_stop=early.to_meta(), schedule_steps=horizon)
        if checkpoints.save(at, state.checkpoint_items(), meta, eval_loss=eval_loss):
            last_saved = at

    if early.should_stop:
        early_stopped_at = start
        say(f"this run stopped early at step {start}; nothing to train (raise train.early_stop_patience to go on).")
    try:
        if changes:
            writer.write_event(resumed_from or 0, "config_change",
                               {"changes": {k: {"saved": a, "now": b} for k, (a, b) in changes.items()}})
            say(f"resuming with changed config (--allow-change): "
                f"{'; '.join(f'{k} {json.dumps(a)} -> {json.dumps(b)}' for k, (a, b) in changes.items())}.")
        run.restart_clock()
        while step < tc.num_steps and early_stopped_at is None and not signals.requested:
            if batch is None:
                batch = feed.get(step)
            with jax.profiler.StepTraceAnnotation("train", step_num=step):
                state, step_metrics = train_step(state, batch)
            batch = None
            if step == 0:  # the metrics of the very first step: its gradients are those at initialisation
                first_step_metrics = step_metrics
            run.history.append(step_metrics)
            step += 1
            feed.fill(step)  # while the step runs: the next batches, onto the devices
            run.steps_in_interval += 1
            run.bar.update(1)
            checkpoints.check()  # a failed background save stops the run now, not at the next save
            last = step == tc.num_steps
            do_log = step % tc.log_every == 0 or last
            do_eval = step % tc.eval_every == 0 or last
            do_save = step % tc.checkpoint_every == 0 or last or (do_eval and save_on_eval)
            if not (do_log or do_eval or do_save or signals.requested):
                continue
            if policy == "stop":  # nothing from a non-finite step is logged, ranked or saved
                bad = run.first_nonfinite(step)
                if bad is not None:
                    raise _diverged(bad[0], bad[1], last_saved, members=members)
            if do_log:
                train_metrics = run.log_train(writer, step)
            eval_loss = None
            if do_eval and members is not None:  # each member's line; the mean ranks the whole sweep's saves
                eval_metrics = evaluate(eval_step, state, eval_batches(), members=members)
                losses = [m["loss"] for m in eval_metrics]
                bad_member = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
                if bad_member is not None and policy == "stop":
                    raise _diverged(step, {"member": bad_member}, last_saved,
                                    f"the validation loss became {losses[bad_member]}", members)
                for i, values in enumerate(eval_metrics):
                    writer.write(step, "eval", values, member=i)
                eval_loss = float(np.mean(losses))
                best = int(np.nanargmin(losses)) if any(math.isfinite(v) for v in losses) else 0
                say(f"step {step:>6}  eval loss {min(losses):.4f} .. {max(losses):.4f}  "
                    f"(best: {members.name(best)})")
            elif do_eval:
                eval_metrics = evaluate(eval_step, state, eval_batches())
                eval_loss = eval_metrics["loss"]
                if not math.isfinite(eval_loss) and policy == "stop":
                    raise _diverged(step, eval_metrics, last_saved,
                                    f"the validation loss became {eval_loss}")
                writer.write(step, "eval", eval_metrics)
                early.update(eval_loss)
                say(f"step {step:>6}  train loss {train_metrics.get('loss', math.nan):.4f}  "
                    f"eval loss {eval_loss:.4f}")
            if do_save:
                save(step, eval_loss)
            if do_log or do_eval:
                run.restart_clock()
            if early.should_stop:
                early_stopped_at = step
                say(f"early stop at step {step}: eval loss has not improved for {early.patience} evaluations.")
        if signals.requested:
            if policy == "stop":
                bad = run.first_nonfinite(step)
                if bad is not None:
                    raise _diverged(bad[0], bad[1], last_saved, members=members)
            save(step)
            checkpoints.wait()
            kept = (f"saved step {step}" if last_saved == step
                    else f"nothing new to save; the checkpoint at step {last_saved} stands"
                    if last_saved is not None else "nothing trained yet, nothing saved")
            raise Interrupted(f"interrupted at step {step}: {kept}; run the same command to resume.",
                              signals.signum)
    except LogFailed as e:  # a metrics line could not be written: say which checkpoint stands
        checkpoints.wait()  # a save that failed too says so itself
        raise SaveFailed(f"{str(e).rstrip('.')}; the last good checkpoint is {checkpoints.last_good()}.") from e
    except KeyboardInterrupt:  # raised by code, or outside the main thread (no signal handlers there)
        say(f"interrupted at step {step}; saving a checkpoint to resume from.")
        try:
            save(step)
            checkpoints.wait()
        except Exception as e:  # the state may have been donated to an interrupted step
            say(f"could not save at step {step} ({type(e).__name__}); the last saved checkpoint stands.")
        raise
    finally:
        pending = sys.exc_info()[1]  # a stop on its way out is not masked by a failure to close
        run.bar.close()
        failed = None
        for close in (writer.close, checkpoints.close):
            try:
                close()
            except Exception as e:  # e.g. the last TensorBoard events or an async save on a full disk
                failed = failed or e
        if failed is not None and pending is None:
            raise failed

    previous = workdir / "summary.json"
    if step == start and previous.exists():  # nothing left to train: the finished run's summary stands
        summary = dict(json.loads(previous.read_text()), resumed_from=resumed_from, start_step=start)
    else:
        if first_step_metrics is not None:  # a sweep's: one dict per member
            first = jax.device_get(first_step_metrics)
            summary["first_step"] = (metrics_lib.to_floats(first) if members is None else
                                     [{k: float(v[i]) for k, v in first.items()} for i in range(members.count)])
        summary.update(final_step=step, train=train_metrics, eval=eval_metrics, compile_s=compile_s,
                       early_stopped_at=early_stopped_at,
                       ms_per_step_median=statistics.median(run.interval_ms) if run.interval_ms else None)
        if summary["ms_per_step_median"]:
            summary[f"{task.items_name}_per_s"] = 1000 * task.items_per_batch / summary["ms_per_step_median"]
        if run.is_main:
            metrics_lib.write_json(previous, summary)
    return state, summary


def parameter_count(params: Any) -> int:
    """Number of scalars in ``params``."""
    return int(sum(np.size(x) for x in jax.tree.leaves(params)))
