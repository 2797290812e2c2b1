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
from tqdm.auto import tqdm

from p2t_jax.configuration import ConfigError
from p2t_jax.optim.chains import make_optimizer
from p2t_jax.training.checkpoint import Checkpoints
from p2t_jax.training.metrics import MetricsWriter, mean_metrics, to_floats
from p2t_jax.training.state import TrainState
from p2t_jax.training.steps import LossFn, make_eval_step, make_train_step

# Config groups that must match to resume a run; ``train.*`` (steps, logging, saving) may change.
RESUME_MUST_MATCH = ("seed", "model", "data", "optim")


@dataclasses.dataclass
class Task:
    """What a chapter hands to the loop.

    Attributes:
      apply_fn: the model's ``apply``.
      init_variables: ``rng -> variables`` (``{"params": ..., other collections}``), unboxed.
      loss_fn: see :mod:`p2t_jax.training.steps`.
      train_batch: ``step -> batch``, deterministic in the step (the data position).
      eval_batches: ``() -> iterable of batches`` for one evaluation pass.
      items_per_batch: tokens or examples in a training batch, for throughput.
      items_name: what ``items_per_batch`` counts (``"tokens"``, ``"examples"``).
      save_assets: ``workdir -> None``, writes what sampling or evaluation needs later
        (e.g. the tokenizer).
      meta: JSON-ready facts saved with each checkpoint (data source, ...).
    """

    apply_fn: Callable
    init_variables: Callable[[jax.Array], dict]
    loss_fn: LossFn
    train_batch: Callable[[int], dict]
    eval_batches: Callable[[], Iterable[dict]]
    items_per_batch: int
    items_name: str = "tokens"
    save_assets: Callable[[pathlib.Path], None] | None = None
    meta: dict = dataclasses.field(default_factory=dict)


def create_state(apply_fn: Callable, init_variables: Callable, config: ml_collections.ConfigDict) -> TrainState:
    """A fresh TrainState from ``config.seed``, ``init_variables(rng)`` and ``config.optim``."""
    tx, _ = make_optimizer(config.optim, config.train.num_steps)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    return TrainState.create(apply_fn=apply_fn, variables=init_variables(init_rng), tx=tx, rng=state_rng)


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
    for key in RESUME_MUST_MATCH:
        if saved.get(key) != now.get(key):
            raise ConfigError(f"workdir {workdir} holds a run with a different '{key}' config; resume it with the "
                              f"same config or choose a new --workdir.")


def _write_json(path: pathlib.Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)


def evaluate(eval_step: Callable, state: TrainState, batches: Iterable[dict]) -> dict[str, float]:
    """Mean of ``eval_step`` metrics over ``batches``."""
    return mean_metrics([to_floats(eval_step(state, batch)) for batch in batches])


def train_and_evaluate(task: Task, config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                       *, progress: bool = True) -> dict:
    """Trains ``task`` for ``config.train.num_steps`` steps in ``workdir``, resuming if it holds a checkpoint.

    Config fields used: ``seed``, ``optim.*`` (see :func:`p2t_jax.optim.chains.make_optimizer`),
    ``train.num_steps``, ``train.log_every``, ``train.eval_every``, ``train.checkpoint_every``,
    ``train.keep_checkpoints``.

    Returns:
      The run summary (also written to ``workdir/summary.json``): final step, last train and
      eval metrics, compile seconds, median ms/step, items/s.
    """
    workdir = pathlib.Path(workdir)
    _check_resumable(workdir, config)
    workdir.mkdir(parents=True, exist_ok=True)
    is_main = jax.process_index() == 0
    if is_main:
        (workdir / "config.json").write_text(config.to_json(indent=2))
        if task.save_assets is not None:
            task.save_assets(workdir)

    tc = config.train
    _, schedule = make_optimizer(config.optim, tc.num_steps)
    state = create_state(task.apply_fn, task.init_variables, config)
    checkpoints = Checkpoints(workdir, keep=tc.keep_checkpoints, best_metric="loss")
    resumed_from = checkpoints.latest_step()
    if resumed_from is not None:
        items, _ = checkpoints.restore(state.checkpoint_items())
        state = state.replace_items(items)
    start = int(state.step)

    train_step = jax.jit(make_train_step(task.loss_fn, schedule), donate_argnums=0)
    eval_step = jax.jit(make_eval_step(task.loss_fn))
    writer = MetricsWriter(workdir)
    meta = dict(task.meta)

    summary: dict[str, Any] = {"resumed_from": resumed_from, "start_step": start}
    interval_ms: list[float] = []
    eval_metrics: dict[str, float] = {}
    train_metrics: dict[str, float] = {}
    compile_s = None
    bar = tqdm(total=tc.num_steps, initial=start, disable=not (progress and is_main), dynamic_ncols=True,
               desc="train", unit="step")
    history: list[dict] = []
    t_interval, steps_in_interval = time.perf_counter(), 0
    step = start
    try:
        while step < tc.num_steps:
            batch = task.train_batch(step)
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
                eval_metrics = evaluate(eval_step, state, task.eval_batches())
                writer.write(step, "eval", eval_metrics)
                bar.write(f"step {step:>6}  train loss {train_metrics.get('loss', float('nan')):.4f}  "
                          f"eval loss {eval_metrics['loss']:.4f}")
            if step % tc.checkpoint_every == 0 or last or do_eval:
                checkpoints.save(step, state.checkpoint_items(), dict(meta, step=step),
                                 eval_metrics=eval_metrics if do_eval else None)
            if step % tc.log_every == 0 or do_eval or last:
                t_interval, steps_in_interval = time.perf_counter(), 0
    except KeyboardInterrupt:
        bar.write(f"interrupted at step {step}; saving a checkpoint to resume from.")
        try:
            checkpoints.save(step, state.checkpoint_items(), dict(meta, step=step), force=True)
        except Exception as e:  # the state may have been donated to an interrupted step
            bar.write(f"could not save at step {step} ({type(e).__name__}); the last saved checkpoint stands.")
        checkpoints.close()
        raise
    finally:
        bar.close()
        writer.close()
    checkpoints.close()

    summary.update(final_step=step, train=train_metrics, eval=eval_metrics, compile_s=compile_s,
                   ms_per_step_median=statistics.median(interval_ms) if interval_ms else None)
    if summary["ms_per_step_median"]:
        summary[f"{task.items_name}_per_s"] = 1000 * task.items_per_batch / summary["ms_per_step_median"]
    if is_main:
        _write_json(workdir / "summary.json", summary)
    summary["state"] = state
    return summary
