"""Many runs of one task trained at once: the loop's own train step, ``jax.vmap``-ed over stacked states.

:func:`build_sweep` is what ``p2t sweep`` runs: seeds and numeric optimiser hyperparameters
and the task's numeric model/loss keys that leave shapes unchanged (``Task.hyper_keys``:
the language model's ``model.dropout_rate``, the image task's ``loss.label_smoothing`` and
``loss.l2``), a grid of ``--sweep KEY=V1,V2,...``, every member in one compiled step
(``chunk`` members at a time; without one, the most that fit the free memory), trained by
the one loop
(:func:`p2t_jax.training.loop.train_and_evaluate` with ``members=``): evaluation, metrics
per member, checkpoints of the whole stacked state and exact resume. Member ``i`` equals
the run ``p2t train`` makes with its values (tested). Keys the task turns into shapes or
Python code (other ``model.*`` and ``loss.*`` keys, ``data.*``, ``train.*``) are refused in one sentence,
as are optimiser keys the chain branches on in Python (``optim.grad_clip_norm``). The
optimiser must be one of the named classic ones (``chains.CLASSIC``), whose updates are
linear in the learning rate: each member's rate comes from its own schedule and scales the
updates of a unit-rate chain.

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
import dataclasses
import functools
import itertools
import math
import os
import pathlib
import statistics
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
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
    return stack_trees([create_state(task.init_variables, seed_config(config, int(s))) for s in seeds])


def stack_trees(trees: Sequence):
    """Trees of one structure stacked leaf by leaf along a new leading axis ``[S, ...]``: stacked on the
    host (``np.stack``), so no small program is compiled per leaf shape."""
    treedef = jax.tree.structure(trees[0])
    return jax.tree.unflatten(treedef, [jnp.asarray(np.stack([np.asarray(leaf) for leaf in leaves]))
                                        for leaves in zip(*map(jax.tree.leaves, trees))])


def train_seeds(build: Callable[[ml_collections.ConfigDict], Task], config: ml_collections.ConfigDict,
                seeds: Sequence[int], *, log: Callable[[str], None] | None = print,
                states: TrainState | None = None, vmap: bool = True) -> tuple[TrainState, dict]:
    """Trains the task of ``config`` for every seed in ``seeds`` at once, ``config.train.num_steps`` steps.

    Args:
      build: ``config -> Task`` (a task module's builder); called once per seed with
        ``config.seed`` set, so each seed draws its own data.
      config: the run's config (``optim.*``, ``train.num_steps``, ``train.log_every``).
      seeds: S seeds.
      log: a line every ``train.log_every`` steps (None: silent).
      states: stacked states to start from (donated); default :func:`initial_states`.
      vmap: one compiled step of every seed at once (True), or one compiled step of one seed run for
        each seed in turn (False; the log lines come after the last seed). On XLA:CPU the
        vmapped step of a model whose matmuls are small can cost more than S steps of one seed.

    Returns:
      ``(states, summary)``: the final TrainState with every leaf stacked ``[S, ...]``, and
      ``{"seeds", "steps": [...], "loss": [[S] per logged step], <each metric likewise>,
      "compile_s", "ms_per_step"}``, metrics averaged over each logging interval.
    """
    seeds = [int(s) for s in seeds]
    tasks = seed_tasks(build, config, seeds)
    states = initial_states(tasks[0], config, seeds) if states is None else states
    _, schedule = make_optimizer(config.optim, config.train.num_steps)
    if not vmap:
        return _train_seeds_in_turn(tasks, config, seeds, states, schedule, log)
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


def _train_seeds_in_turn(tasks: Sequence[Task], config: ml_collections.ConfigDict, seeds: list[int],
                         states: TrainState, schedule, log: Callable[[str], None] | None) -> tuple[TrainState, dict]:
    """:func:`train_seeds` with ``vmap=False``: one seed after another through one compiled step."""
    step_fn = jax.jit(make_train_step(tasks[0].loss_fn, schedule), donate_argnums=0)
    num_steps, log_every = config.train.num_steps, config.train.log_every
    t0 = time.perf_counter()
    step_fn = step_fn.lower(unstack(states, 0), tasks[0].train_batch(0)).compile()
    summary: dict = {"seeds": seeds, "steps": [], "compile_s": time.perf_counter() - t0}
    finals, logged, intervals_ms = [], [], []  # logged[seed]: the mean metrics of each interval
    for i, task in enumerate(tasks):
        state, interval, rows, t_start = unstack(states, i), [], [], time.perf_counter()
        for step in range(num_steps):
            state, metrics = step_fn(state, task.train_batch(step))
            interval.append(metrics)
            if (step + 1) % log_every == 0 or step + 1 == num_steps:
                rows.append(jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *jax.device_get(interval)))
                intervals_ms.append(1000 * (time.perf_counter() - t_start) / len(interval))
                interval, t_start = [], time.perf_counter()
        finals.append(state)
        logged.append(rows)
    for k, step in enumerate(s for s in range(1, num_steps + 1) if s % log_every == 0 or s == num_steps):
        means = {name: [float(rows[k][name]) for rows in logged] for name in logged[0][k]}
        summary["steps"].append(step)
        for name, values in means.items():
            summary.setdefault(name, []).append(values)
        if log is not None:
            log(f"  step {step:>6}  loss " + " ".join(f"{v:.4f}" for v in means["loss"]))
    # per step of all seeds, as the vmapped step reports it
    summary["ms_per_step"] = len(tasks) * statistics.median(intervals_ms) if intervals_ms else None
    return stack_trees(finals), summary


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


# ---- sweeps over seeds and numeric optimiser hyperparameters, trained by the loop -----------

# Keys of config.optim that only the learning-rate schedule reads: each member's schedule is
# built from its own values (plain Python numbers) and its updates scaled by it.
SCHEDULE_KEYS = ("learning_rate", "end_learning_rate", "warmup_steps", "decay_steps")
# Groups whose values the task turns into its model, loss and data with Python code when it is
# built, so they cannot vary inside one compiled step.
FIXED_GROUPS = {"model": "the model is built from its values (a width or depth changes the parameters' shapes)",
                "loss": "the task builds its loss from them", "data": "the task loads its data from them",
                "train": "they set the run's shape and length, shared by every member",
                "parallel": "a sweep runs on one device"}
# Groups some of whose keys a task takes as traced values (Task.hyper_keys: e.g. model.dropout_rate);
# build_sweep refuses the others.
HYPER_GROUPS = ("model", "loss")


def parse_axis(spec: str, config: ml_collections.ConfigDict) -> tuple[str, tuple]:
    """``"optim.learning_rate=1e-3,3e-3"`` -> ``("optim.learning_rate", (0.001, 0.003))``.

    Only ``seed`` and numeric keys of ``config.optim`` may be swept: every member must share
    the model's shapes and the task's Python-built code.

    Raises:
      ConfigError: one sentence naming the bad spec, key or value and what is allowed.
    """
    from p2t_jax.configuration import ConfigError

    key, sep, values = spec.partition("=")
    key = key.strip()
    if not sep or not key or not values.strip():
        raise ConfigError(f"--sweep {spec!r} must read KEY=V1,V2,... (e.g. optim.learning_rate=1e-3,3e-3).")
    group = key.split(".", 1)[0]
    if key != "seed" and group in FIXED_GROUPS and group not in HYPER_GROUPS:
        raise ConfigError(f"--sweep key '{key}' cannot vary inside one compiled step: {FIXED_GROUPS[group]}; "
                          f"only seed, numeric optim.* keys and the task's traced model/loss keys can be swept.")
    if key != "seed" and group not in ("optim",) + HYPER_GROUPS:
        raise ConfigError(f"--sweep key '{key}' cannot be swept; only seed, numeric optim.* keys and the task's "
                          f"traced model/loss keys can.")
    try:
        current = config
        for part in key.split("."):
            current = current[part]
    except (KeyError, AttributeError, TypeError):
        raise ConfigError(f"--sweep key '{key}' is not a config key of this task.") from None
    if isinstance(current, bool) or not isinstance(current, (int, float)):
        raise ConfigError(f"--sweep key '{key}' holds {current!r}; only numeric keys can be swept.")
    kind = int if isinstance(current, int) else float
    parsed = []
    for text in values.split(","):
        text = text.strip()
        try:
            value = kind(text) if kind is float else int(text)
        except ValueError:
            raise ConfigError(f"--sweep {key}: {text!r} is not {'an integer' if kind is int else 'a number'}.") from None
        if kind is float and not math.isfinite(value):
            raise ConfigError(f"--sweep {key}: {text!r} is not a finite number.")
        parsed.append(value)
    if len(set(parsed)) != len(parsed):
        raise ConfigError(f"--sweep {key} lists a value twice ({values}).")
    return key, tuple(parsed)


def member_labels(axes: Sequence[tuple[str, Sequence]]) -> list[dict]:
    """Every combination of the axes' values (the first axis varies slowest): ``[{key: value}, ...]``."""
    keys = [k for k, _ in axes]
    return [dict(zip(keys, combo)) for combo in itertools.product(*[v for _, v in axes])]


def member_config(config: ml_collections.ConfigDict, label: dict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with ``label``'s values (the run this member equals)."""
    config = copy.deepcopy(config)
    for key, value in label.items():
        *path, leaf = key.split(".")
        node = config
        for part in path:
            node = node[part]
        node[leaf] = value
    return config


def _traced_optim(optim: ml_collections.ConfigDict, values: dict) -> ml_collections.ConfigDict:
    """``optim`` with traced ``values`` (``{optim key: scalar}``) and a unit constant learning rate."""
    traced = ml_collections.ConfigDict(optim.to_dict(), type_safe=False)
    for key, value in values.items():
        traced[key] = value
    traced.schedule, traced.learning_rate = "constant", 1.0
    return traced


def _chunked(fn: Callable, count: int, chunk: int) -> Callable:
    """``fn`` vmapped over a leading axis of ``count``; with ``chunk < count``, ``chunk`` members at a
    time (``lax.map`` over ``count // chunk`` groups: one compiled body, a group's memory)."""
    vmapped = jax.vmap(fn)
    if chunk >= count:
        return vmapped
    groups = count // chunk

    def split(tree):
        return jax.tree.map(lambda x: x.reshape((groups, chunk) + x.shape[1:]), tree)

    def join(tree):
        return jax.tree.map(lambda x: x.reshape((count,) + x.shape[2:]), tree)

    return lambda *args: join(jax.lax.map(lambda xs: vmapped(*xs), split(args)))


def build_sweep(build: Callable[[ml_collections.ConfigDict], tuple[Task, ml_collections.ConfigDict]],
                validate: Callable[[ml_collections.ConfigDict], None], config: ml_collections.ConfigDict,
                axes: Sequence[tuple[str, Sequence]], *, chunk: int = 0):
    """The loop's Task and :class:`~p2t_jax.training.loop.Members` for a sweep of ``config`` over ``axes``.

    Member ``i`` is the run of ``member_config(config, labels[i])``: its own initial state
    (``create_state`` of its config: seed and optimiser state), its own data (one task is
    built per distinct seed), and its own optimiser hyperparameters, which enter the one
    compiled step as traced scalars (schedule keys through each member's own schedule,
    scaling the updates of a unit-rate chain; the others as values of the chain), and its own
    model/loss keys among the task's ``hyper_keys`` (e.g. ``model.dropout_rate``), which reach
    the loss as traced scalars through ``Task.hyper_loss_fn``. So each member follows the run
    trained alone with that config (tested).

    Args:
      build, validate: the task module's ``build`` and ``validate``.
      config: the base config (``config.sweep`` is set to the axes and written to config.json).
      axes: ``[(key, values), ...]`` from :func:`parse_axis`.
      chunk: members per vmapped group; must divide the member count. 0: the loop tries
        every divisor, largest first, and keeps the first whose compiled step fits in memory.

    Returns:
      ``(task, config, members)``: a Task whose batches are stacked ``[N, B, ...]``, the
      config the loop runs with, and the Members.

    Raises:
      ConfigError: a member's config fails the task's checks, a key the optimiser needs as a
        Python number, a model/loss key the task does not take traced, a bad chunk or an
        unsupported train setting (one sentence each).
    """
    from p2t_jax.configuration import ConfigError
    from p2t_jax.optim.chains import make_optimizer, make_schedule
    from p2t_jax.training.loop import Members, check_run_config
    from p2t_jax.training.steps import make_eval_step

    labels = member_labels(axes)
    count = len(labels)
    if chunk and (not 1 <= chunk <= count or count % chunk):
        raise ConfigError(f"--chunk must divide the {count} members (1..{count}), got {chunk}.")
    # without --chunk: every divisor of the count, largest first; the loop keeps the first that fits
    chunks = (chunk,) if chunk else tuple(c for c in range(count, 0, -1) if count % c == 0)
    if config.train.get("early_stop_patience", 0):
        raise ConfigError("config key 'train.early_stop_patience' must be 0 in a sweep: members stop together.")
    if config.train.get("on_nonfinite", "stop") != "stop":
        raise ConfigError("config key 'train.on_nonfinite' must be 'stop' in a sweep.")
    if config.train.get("grad_accum_steps", 1) != 1:
        raise ConfigError("config key 'train.grad_accum_steps' must be 1 in a sweep.")
    from p2t_jax.optim.chains import CLASSIC

    optim = config.optim
    has = ("optim.chain" if optim.get("chain", ()) else "optim.factory" if optim.get("factory", "")
           else None if optim.get("name", "adamw") in CLASSIC else f"optim.name={optim.get('name')!r}")
    if has is not None:
        raise ConfigError(f"a sweep trains the named optimisers {', '.join(CLASSIC)} (optim.name, no optim.chain "
                          f"or optim.factory), whose updates scale with the learning rate; this config has {has}.")
    configs = []
    for i, label in enumerate(labels):
        member = member_config(config, label)
        try:
            check_run_config(member)
            validate(member)
        except ConfigError as e:
            raise ConfigError(f"sweep member {i} ({', '.join(f'{k}={v}' for k, v in label.items())}): {e}") from None
        configs.append(member)
    seeds = sorted({c.seed for c in configs})
    tasks, built = {}, {}
    for seed in seeds:
        tasks[seed], built[seed] = build(seed_config(config, seed))
    base_task, run_config = tasks[seeds[0]], copy.deepcopy(built[seeds[0]])
    hyper_keys = [k for k, _ in axes if k.split(".", 1)[0] in HYPER_GROUPS]
    for key in hyper_keys:
        if key not in base_task.hyper_keys:
            group = key.split(".", 1)[0]
            takes = (f"this task sweeps {', '.join(base_task.hyper_keys)} among them" if base_task.hyper_keys
                     else "this task sweeps none of them")
            raise ConfigError(f"--sweep key '{key}' cannot vary inside one compiled step: {FIXED_GROUPS[group]}; "
                              f"{takes}.")
    configs = [member_config(built[c.seed], label) for c, label in zip(configs, labels)]
    with run_config.unlocked():  # recorded in config.json: a resume must name the same sweep
        run_config.sweep = ml_collections.ConfigDict({"axes": [[k, list(v)] for k, v in axes]})
    member_seed = [c.seed for c in configs]
    num_steps = run_config.train.num_steps
    traced_keys = sorted({k.split(".", 1)[1] for k, _ in axes if k.startswith("optim.")} - set(SCHEDULE_KEYS))
    values = {k: jnp.asarray([c.optim[k] for c in configs]) for k in traced_keys}
    # the task's traced model/loss keys: one float32 scalar per member, given to Task.hyper_loss_fn
    hyper = {k: jnp.asarray([float(c[k.split(".")[0]][k.split(".", 1)[1]]) for c in configs], jnp.float32)
             for k in hyper_keys}
    index = jnp.arange(count)

    def member_loss_fn(member_hyper: dict):
        return base_task.hyper_loss_fn(member_hyper) if member_hyper else base_task.loss_fn

    def member_tx(i, member_values):
        tx, _ = make_optimizer(_traced_optim(run_config.optim, member_values), num_steps)
        return tx

    for key in traced_keys:  # a key the chain branches on in Python cannot be traced: refused before building
        try:
            jax.eval_shape(jax.vmap(lambda i, v: member_tx(i, v).init({"w": jnp.zeros(2)})), index,
                           {key: values[key]})
        except jax.errors.ConcretizationTypeError:
            raise ConfigError(f"--sweep optim.{key}: the optimiser decides on its value in Python code, so it "
                              f"cannot vary inside one compiled step; sweep it with separate `p2t train` runs.") from None

    def member_step(schedules, state: TrainState, i, member_values, member_hyper, batch):
        lr = jnp.stack([s(state.step) for s in schedules])[i]
        tx = member_tx(i, member_values)
        loss_fn = member_loss_fn(member_hyper)

        def update(grads, opt_state, params=None):
            updates, opt_state = tx.update(grads, opt_state, params)
            return jax.tree.map(lambda u: u * lr.astype(u.dtype), updates), opt_state

        step = make_train_step(loss_fn, lambda _: lr, grad_metrics=base_task.grad_metrics)
        scaled = optax.GradientTransformation(tx.init, update)
        new_state, metrics = step(state.replace(tx=scaled), batch)
        return new_state.replace(tx=state.tx), metrics

    def make_stacked_train_step(skip_nonfinite: bool, chunk: int, schedule_steps: int):
        del skip_nonfinite  # refused above
        # each member's schedule over the horizon of the sweep's first start (the loop's schedule_steps)
        schedules = [make_schedule(c.optim, schedule_steps) for c in configs]
        stepped = _chunked(functools.partial(member_step, schedules), count, chunk)
        return lambda states, batch: stepped(states, index, values, hyper, batch)

    def make_stacked_eval_step(chunk: int):
        stepped = _chunked(lambda state, member_hyper, batch: make_eval_step(member_loss_fn(member_hyper))(
            state, batch), count, chunk)
        return lambda states, batch: stepped(states, hyper, batch)

    def create():
        states = [create_state(tasks[c.seed].init_variables, c) for c in configs]
        treedef = jax.tree.structure(states[0])
        return jax.tree.unflatten(treedef, [jnp.stack(leaves) for leaves in zip(*map(jax.tree.leaves, states))])

    def stack(per_seed: dict) -> dict:
        return jax.tree.map(lambda *rows: np.stack(rows), *[per_seed[s] for s in member_seed])

    def train_batch(step: int) -> dict:
        return stack({s: tasks[s].train_batch(step) for s in seeds})

    def eval_batches():
        for rows in zip(*[tasks[s].eval_batches() for s in seeds]):
            yield stack(dict(zip(seeds, rows)))

    task = dataclasses.replace(base_task, train_batch=train_batch, eval_batches=eval_batches, batch_rows=False,
                               items_per_batch=count * base_task.items_per_batch,
                               meta=dict(base_task.meta, sweep=[dict(member=i, **m) for i, m in enumerate(labels)]))
    members = Members(labels=labels, create_state=create, make_train_step=make_stacked_train_step,
                      make_eval_step=make_stacked_eval_step, chunks=chunks)
    return task, run_config, members
