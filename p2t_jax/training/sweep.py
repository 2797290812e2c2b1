"""Many seeds of one task trained at once: the loop's own train step, ``jax.vmap``-ed over stacked states.

:func:`train_seeds` is for experiments that need several seeds of a small model: one
compiled step updates every seed (each its own initialisation, PRNG key and data), where
:func:`p2t_jax.training.loop.train_and_evaluate` trains one. Each seed's state starts as
``create_state`` would start it for ``config.seed = seed`` and steps with
``make_train_step``'s step, so seed ``s`` of the sweep follows the one-seed run of seed
``s`` (tested). There are no checkpoints, evaluations or early stops here: a sweep is
short and is simply run again. An experiment keeps its trained parameters (every seed,
stacked) with :func:`save_params`, for readers such as the playground (:func:`load_params`).
"""

from __future__ import annotations

import copy
import os
import pathlib
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import serialization

from p2t_jax.optim.chains import make_optimizer
from p2t_jax.training.checkpoint import CheckpointError
from p2t_jax.training.loop import Task, create_state
from p2t_jax.training.state import TrainState
from p2t_jax.training.steps import make_train_step


def unstack(tree, index: int):
    """Seed ``index`` of a stacked tree."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def seed_config(config: ml_collections.ConfigDict, seed: int) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``seed``."""
    config = copy.deepcopy(config)
    config.seed = seed
    return config


def seed_tasks(build: Callable[[ml_collections.ConfigDict], Task], config: ml_collections.ConfigDict,
               seeds: Sequence[int]) -> list[Task]:
    """``build(config with seed s)`` for each seed: each seed draws its own data."""
    return [build(seed_config(config, int(s))) for s in seeds]


def initial_states(task: Task, config: ml_collections.ConfigDict, seeds: Sequence[int]) -> TrainState:
    """For each seed, the loop's :func:`~p2t_jax.training.loop.create_state` for ``config.seed = seed``,
    stacked ``[S, ...]`` (static fields from the first seed's state).

    One state per seed, not a ``vmap`` over seeds: XLA-CPU compiles a vmapped PRNG several
    times slower, and a task whose ``init_variables`` is jitted compiles it once for all seeds.
    """
    states = [create_state(task.init_variables, seed_config(config, int(s))) for s in seeds]
    treedef = jax.tree.structure(states[0])
    return jax.tree.unflatten(treedef, [jnp.stack(leaves) for leaves in zip(*map(jax.tree.leaves, states))])


def train_seeds(build: Callable[[ml_collections.ConfigDict], Task], config: ml_collections.ConfigDict,
                seeds: Sequence[int], *, log: Callable[[str], None] | None = print,
                states: TrainState | None = None) -> tuple[TrainState, dict]:
    """Trains the task of ``config`` for every seed in ``seeds`` at once, ``config.train.num_steps`` steps.

    Args:
      build: ``config -> Task`` (a task module's builder); called once per seed with
        ``config.seed`` set, so each seed draws its own data.
      config: the run's config (``optim.*``, ``train.num_steps``, ``train.log_every``).
      seeds: S seeds.
      log: a line every ``train.log_every`` steps (None: silent).
      states: stacked states to start from (donated); default :func:`initial_states`.

    Returns:
      ``(states, summary)``: the final TrainState with every leaf stacked ``[S, ...]``, and
      ``{"seeds", "steps": [...], "loss": [[S] per logged step], <each metric likewise>,
      "compile_s", "ms_per_step"}``, metrics averaged over each logging interval.
    """
    seeds = [int(s) for s in seeds]
    tasks = seed_tasks(build, config, seeds)
    states = initial_states(tasks[0], config, seeds) if states is None else states
    _, schedule = make_optimizer(config.optim, config.train.num_steps)
    step_fn = jax.jit(jax.vmap(make_train_step(tasks[0].loss_fn, schedule)), donate_argnums=0)

    def batch(step: int) -> dict:
        return jax.tree.map(lambda *rows: np.stack(rows), *[t.train_batch(step) for t in tasks])

    t0 = time.perf_counter()
    step_fn = step_fn.lower(states, batch(0)).compile()
    summary: dict = {"seeds": seeds, "steps": [], "compile_s": time.perf_counter() - t0}
    interval, intervals_ms, t_start = [], [], time.perf_counter()
    num_steps, log_every = config.train.num_steps, config.train.log_every
    for step in range(num_steps):
        states, metrics = step_fn(states, batch(step))
        interval.append(metrics)
        if (step + 1) % log_every == 0 or step + 1 == num_steps:
            means = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *jax.device_get(interval))
            intervals_ms.append(1000 * (time.perf_counter() - t_start) / len(interval))
            summary["steps"].append(step + 1)
            for name, value in means.items():
                summary.setdefault(name, []).append(value.tolist())
            if log is not None:
                log(f"  step {step + 1:>6}  loss " + " ".join(f"{v:.4f}" for v in means["loss"]))
            interval, t_start = [], time.perf_counter()
    summary["ms_per_step"] = statistics.median(intervals_ms) if intervals_ms else None
    return states, summary


PARAMS_FILE = "params.msgpack"  # an experiment's trained parameters, in each model's folder


def save_params(path: pathlib.Path, params_S) -> pathlib.Path:
    """Writes stacked parameters (every leaf ``[S, ...]``) to ``path`` as Flax msgpack, atomically."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(serialization.msgpack_serialize(jax.device_get(params_S)))
    os.replace(partial, path)
    return path


def load_params(path: pathlib.Path, like=None):
    """The parameter tree written by :func:`save_params` (NumPy leaves, ``[S, ...]``).

    ``like``: one seed's parameters (arrays or ``jax.ShapeDtypeStruct``, e.g. ``jax.eval_shape``
    of the model's init), which every loaded leaf must match after its leading seed axis.

    Raises:
      CheckpointError: if ``path`` is missing, not such a file, or (with ``like``) holds
        parameters of another shape (one sentence naming the file and the first difference).
    """
    path = pathlib.Path(path)
    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(f"'{path}' does not exist.") from None
    except Exception as e:  # noqa: BLE001 - any decoding failure: the file is not saved parameters
        raise CheckpointError(f"'{path}' is not a parameter file ({type(e).__name__}).") from None
    if not isinstance(tree, dict) or not tree:
        raise CheckpointError(f"'{path}' holds no parameters.")
    if like is not None:
        def shapes(t, drop: int) -> dict[str, tuple]:
            return {jax.tree_util.keystr(k, simple=True, separator="/"): tuple(np.shape(leaf))[drop:]
                    for k, leaf in jax.tree_util.tree_flatten_with_path(t)[0]}

        saved, wanted = shapes(tree, 1), shapes(like, 0)
        for name in sorted(set(saved) | set(wanted)):
            if saved.get(name) != wanted.get(name):
                found = "missing" if name not in saved else f"of shape {saved[name]} per seed"
                expected = "no such array" if name not in wanted else f"shape {wanted[name]}"
                raise CheckpointError(f"'{path}' holds parameters of another model: '{name}' is {found}, "
                                      f"the model needs {expected}.")
    return tree
