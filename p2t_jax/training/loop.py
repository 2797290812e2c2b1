"""The one training loop every chapter uses.

A chapter supplies a :class:`Task` (model, loss, data); the loop does the rest: state
creation, the jitted step with the state donated, evaluation, metrics (JSON lines and
TensorBoard), a progress bar, Orbax checkpoints and exact resume.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import statistics
import time
from typing import Any, Callable, Iterable

import jax
import ml_collections
from flax.core import meta
from tqdm.auto import tqdm

from p2t_jax.configuration import ConfigError
from p2t_jax.host_memory import keep_freed_host_memory
from p2t_jax.optim.chains import make_optimizer
from p2t_jax.parallel.partitioning import make_partitioner
from p2t_jax.training.checkpoint import Checkpoints
from p2t_jax.training.metrics import MetricsWriter, mean_metrics, to_floats, write_json
from p2t_jax.training.state import TrainState
from p2t_jax.training.steps import LossFn, make_eval_step, make_train_step

# Config groups that may change when a run is resumed: how long and how often (``train``)
# and on which devices (``parallel``). Everything else (seed, model, data, optim, loss, ...)
# must match the run's saved config.json.
RESUME_MAY_CHANGE = ("train", "parallel", "variant")


@dataclasses.dataclass
class Task:
    """What a chapter hands to the loop.

    Attributes:
      apply_fn: the model's ``apply``.
      init_variables: ``rng -> variables`` (``{"params": ..., other collections}``), plain or
        boxed with logical axis names (``nn.with_logical_partitioning``), which the loop unboxes.
      loss_fn: see :mod:`p2t_jax.training.steps`.
      train_batch: ``step -> batch``, deterministic in the step (the data position).
      eval_batches: ``() -> iterable of batches`` for one evaluation pass.
      items_per_batch: tokens or examples in a training batch, for throughput.
      items_name: what ``items_per_batch`` counts (``"tokens"``, ``"examples"``).
      batch_rows: ``train_batch`` and ``eval_batches`` take ``rows=slice`` and read only those
        rows of each global batch (so each process of a multi-process run reads its own).
      save_assets: ``workdir -> None``, writes what sampling or evaluation needs later
        (e.g. the tokenizer).
      meta: JSON-ready facts saved with each checkpoint (data source, ...).
      grad_metrics: ``grads -> {name: scalar}``, measured by the train step and logged with
        the training metrics (e.g. each layer's gradient norm); None: none.
    """

    apply_fn: Callable
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


def create_state(apply_fn: Callable, init_variables: Callable, config: ml_collections.ConfigDict) -> TrainState:
    """A fresh TrainState from ``config.seed``, ``init_variables(rng)`` and ``config.optim``."""
    tx, _ = make_optimizer(config.optim, config.train.num_steps)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = meta.unbox(init_variables(init_rng))
    return TrainState.create(apply_fn=apply_fn, variables=variables, tx=tx, rng=state_rng)


def restore_state(apply_fn: Callable, init_variables: Callable, config: ml_collections.ConfigDict,
                  workdir: str | pathlib.Path, *, best: bool = False) -> tuple[TrainState, dict]:
    """The TrainState saved in ``workdir`` (latest, or best by eval loss), and its meta dict.

    Nothing is initialised for real: the state's shapes come from ``jax.eval_shape``.

    Raises:
      CheckpointError: no checkpoint, or one that cannot be read.
    """
    abstract = jax.eval_shape(lambda: create_state(apply_fn, init_variables, config))
    checkpoints = Checkpoints(workdir, keep=config.train.keep_checkpoints, create=False)
    try:
        items, meta = checkpoints.restore(abstract.checkpoint_items(), best=best)
    finally:
        checkpoints.close()
    return abstract.replace_items(items), meta


def _check_resumable(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
    saved_path = workdir / "config.json"
    if not saved_path.exists():
        return
    saved, now = json.loads(saved_path.read_text()), json.loads(config.to_json())
    for key in sorted(set(saved) | set(now)):
        if key not in RESUME_MAY_CHANGE and not _saved_fields_match(saved.get(key), now.get(key)):
            raise ConfigError(f"workdir {workdir} holds a run with a different '{key}' config; resume it with the "
                              f"same config or choose a new --workdir.")


def _saved_fields_match(saved: Any, now: Any) -> bool:
    """True when every field of ``saved`` equals ``now``'s (fields added since the run was saved are ignored)."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return all(k in now and _saved_fields_match(v, now[k]) for k, v in saved.items())
    return saved == now


def evaluate(eval_step: Callable, state: TrainState, batches: Iterable[dict]) -> dict[str, float]:
    """Mean of ``eval_step`` metrics over ``batches``."""
    return mean_metrics([to_floats(eval_step(state, batch)) for batch in batches])


def train_and_evaluate(task: Task, config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       *, progress: bool = True) -> dict:
    """Trains ``task`` for ``config.train.num_steps`` steps in ``workdir``, resuming if it holds a checkpoint.

    Config fields used: ``seed``, ``optim.*`` (see :func:`p2t_jax.optim.chains.make_optimizer`),
    ``train.num_steps``, ``train.log_every``, ``train.eval_every``, ``train.checkpoint_every``,
    ``train.keep_checkpoints``; optional ``train.early_stop_patience`` (stop once the eval
    loss has not improved for that many evaluations; missing or 0: never).

    Returns:
      The run summary (also written to ``workdir/summary.json``): final step, last train and
      eval metrics, compile seconds, median ms/step, items/s, the step of an early stop (or None).
    """
    workdir = pathlib.Path(workdir)
    _check_resumable(workdir, config)
    keep_freed_host_memory()  # see p2t_jax.host_memory: up to 1.5x faster steps on CPU
    partitioner = make_partitioner(config, task.init_variables)  # None without config.parallel
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    if is_main:
        (workdir / "config.json").write_text(config.to_json(indent=2))
        if task.save_assets is not None:
            task.save_assets(workdir)

    tc = config.train
    _, schedule = make_optimizer(config.optim, tc.num_steps)
    make_state = lambda: create_state(task.apply_fn, task.init_variables, config)  # noqa: E731
    state = make_state() if partitioner is None else partitioner.init_state(make_state)
    checkpoints = Checkpoints(workdir, keep=tc.keep_checkpoints, best_metric="loss")
    resumed_from = checkpoints.latest_step()
    saved_meta: dict = {}
    if resumed_from is not None:
        items, saved_meta = checkpoints.restore(state.checkpoint_items())
        state = state.replace_items(items)
    start = int(state.step)

    if partitioner is None:
        train_step = jax.jit(make_train_step(task.loss_fn, schedule, grad_metrics=task.grad_metrics),
                             donate_argnums=0)
        eval_step = jax.jit(make_eval_step(task.loss_fn))
        train_batch, eval_batches = task.train_batch, task.eval_batches
    else:  # the same steps, with explicit shardings on the mesh
        train_step = partitioner.jit_train_step(make_train_step(task.loss_fn, schedule,
                                                                grad_metrics=task.grad_metrics), state)
        eval_step = partitioner.jit_eval_step(make_eval_step(task.loss_fn), state)
        train_batch, eval_batches = partitioner.batch_readers(task)
    writer = MetricsWriter(workdir)
    meta = dict(task.meta)

    summary: dict[str, Any] = {"resumed_from": resumed_from, "start_step": start,
                               "mesh": partitioner.describe() if partitioner is not None else None}
    patience = tc.get("early_stop_patience", 0)
    best_eval_loss, evals_since_best, early_stopped_at = float("inf"), 0, None
    if saved_meta.get("early_stop"):  # the counters travel with the checkpoint, so a resumed run stops alike
        saved_best = saved_meta["early_stop"]["best_eval_loss"]
        best_eval_loss = float("inf") if saved_best is None else saved_best
        evals_since_best = saved_meta["early_stop"]["evals_since_best"]

    def checkpoint_meta() -> dict:
        finite_best = None if best_eval_loss == float("inf") else best_eval_loss
        return dict(meta, step=step, early_stop={"best_eval_loss": finite_best, "evals_since_best": evals_since_best})
    interval_ms: list[float] = []
    eval_metrics: dict[str, float] = {}
    train_metrics: dict[str, float] = {}
    compile_s = None
    bar = tqdm(total=tc.num_steps, initial=start, disable=not (progress and is_main), dynamic_ncols=True,
               desc="train", unit="step")
    say = bar.write if is_main else (lambda text: None)  # only process 0 logs
    if partitioner is not None:
        say(f"mesh: {partitioner.describe()}")
    history: list[dict] = []
    t_interval, steps_in_interval = time.perf_counter(), 0
    step = start
    if patience and evals_since_best >= patience:
        early_stopped_at = start
        say(f"this run stopped early at step {start}; nothing to train (raise train.early_stop_patience to go on).")
    try:
        while step < tc.num_steps and early_stopped_at is None:
            batch = train_batch(step)
            if compile_s is None:
                t0 = time.perf_counter()
                compiled = train_step.lower(state, batch).compile()
                compile_s = time.perf_counter() - t0
                train_step = compiled
                t_interval = time.perf_counter()
            state, metrics = train_step(state, batch)
            history.append(metrics)
            step += 1
            steps_in_interval += 1
            bar.update(1)
            last = step == tc.num_steps
            if step % tc.log_every == 0 or last:
                train_metrics = mean_metrics([to_floats(m) for m in history])
                elapsed = time.perf_counter() - t_interval
                ms = 1000 * elapsed / steps_in_interval
                interval_ms.append(ms)
                train_metrics.update(ms_per_step=ms, **{f"{task.items_name}_per_s": 1000 * task.items_per_batch / ms})
                writer.write(step, "train", train_metrics)
                bar.set_postfix(loss=f"{train_metrics['loss']:.4f}",
                                **{f"{task.items_name}/s": f"{train_metrics[f'{task.items_name}_per_s']:,.0f}"})
                history.clear()
            do_eval = step % tc.eval_every == 0 or last
            if do_eval:
                eval_metrics = evaluate(eval_step, state, eval_batches())
                writer.write(step, "eval", eval_metrics)
                if eval_metrics["loss"] < best_eval_loss:
                    best_eval_loss, evals_since_best = eval_metrics["loss"], 0
                else:
                    evals_since_best += 1
                say(f"step {step:>6}  train loss {train_metrics.get('loss', float('nan')):.4f}  "
                          f"eval loss {eval_metrics['loss']:.4f}")
            if step % tc.checkpoint_every == 0 or last or do_eval:
                checkpoints.save(step, state.checkpoint_items(), checkpoint_meta(),
                                 eval_metrics=eval_metrics if do_eval else None)
            if step % tc.log_every == 0 or do_eval or last:
                t_interval, steps_in_interval = time.perf_counter(), 0
            if patience and evals_since_best >= patience:
                early_stopped_at = step
                say(f"early stop at step {step}: eval loss has not improved for {patience} evaluations.")
                break
    except KeyboardInterrupt:
        say(f"interrupted at step {step}; saving a checkpoint to resume from.")
        try:
            checkpoints.save(step, state.checkpoint_items(), checkpoint_meta(), force=True)
        except Exception as e:  # the state may have been donated to an interrupted step
            say(f"could not save at step {step} ({type(e).__name__}); the last saved checkpoint stands.")
        checkpoints.close()
        raise
    finally:
        bar.close()
        writer.close()
    checkpoints.close()

    previous = workdir / "summary.json"
    if step == start and previous.exists():  # nothing left to train: the finished run's summary stands
        summary = dict(json.loads(previous.read_text()), resumed_from=resumed_from, start_step=start)
    else:
        summary.update(final_step=step, train=train_metrics, eval=eval_metrics, compile_s=compile_s,
                       early_stopped_at=early_stopped_at,
                       ms_per_step_median=statistics.median(interval_ms) if interval_ms else None)
        if summary["ms_per_step_median"]:
            summary[f"{task.items_name}_per_s"] = 1000 * task.items_per_batch / summary["ms_per_step_median"]
        if is_main:
            write_json(previous, summary)
    summary["state"] = state
    return summary
