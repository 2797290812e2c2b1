"""Chapter 7's measurements: per-layer series read back from a run's metrics, the first step's.

The loop logs, for the deep models, ``grad_norm/<layer>`` (each kernel's gradient norm) and
``preact_mean/<layer>``, ``preact_std/<layer>`` (each ReLU input's statistics) as training
metrics (means over each logging interval). These helpers turn them into ``[T, L]`` arrays,
and measure the very first step (the gradients at initialisation) with the loop's own step:
for one run (:func:`first_step_metrics`), or for the chapter's four nets over many seeds in
one compiled call (:func:`first_step_of_nets`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax.core import meta as flax_meta

from p2t_jax.optim.chains import make_optimizer
from p2t_jax.training.loop import Task, create_state
from p2t_jax.training.metrics import to_floats
from p2t_jax.training.steps import make_train_step

# The chapter's four nets: name -> (model.residual, model.batch_norm).
NETS = {"plain": (False, False), "residual": (True, False), "plain+BN": (False, True), "residual+BN": (True, True)}


def net_config(config: ml_collections.ConfigDict, net: str, depth: int) -> ml_collections.ConfigDict:
    """A copy of the ``deep_mlp`` ``config`` for the net ``net`` (one of :data:`NETS`) of ``depth`` layers."""
    if net not in NETS:
        raise KeyError(f"unknown net '{net}'; the nets are {', '.join(NETS)}.")
    c = copy.deepcopy(config)
    c.model.residual, c.model.batch_norm = NETS[net]
    c.model.depth = depth
    return c


def layer_names(record: dict, prefix: str) -> list[str]:
    """The ``<layer>`` of every ``prefix/<layer>`` key of ``record``, in layer order (``head`` last)."""
    names = [k[len(prefix) + 1:] for k in record if k.startswith(prefix + "/")]
    return sorted(names, key=lambda n: (n == "head", n))


def layer_series(records: Sequence[dict], prefix: str, names: Sequence[str] | None = None) -> np.ndarray:
    """``[T, L]``: metric ``prefix/<layer>`` of each record (rows) for each layer (columns, in layer order)."""
    names = layer_names(records[0], prefix) if names is None else names
    return np.asarray([[r[f"{prefix}/{n}"] for n in names] for r in records], np.float64)


def first_step_metrics(task: Task, config: ml_collections.ConfigDict, batch: dict | None = None) -> dict[str, float]:
    """The metrics of the loop's first training step: the loop's own step, on the state a fresh
    run starts from (``config.seed``) and training batch 0 (or ``batch``). Its gradients are
    those at initialisation. (Pass the step-resolved config :func:`image_classification.build` returns.)"""
    state = create_state(task.init_variables, config)
    _, schedule = make_optimizer(config.optim, config.train.num_steps)
    step = jax.jit(make_train_step(task.loss_fn, schedule, grad_metrics=task.grad_metrics))
    _, metrics = step(state, task.train_batch(0) if batch is None else batch)
    return to_floats(metrics)


# The one-step measurement is a few small matmuls: XLA's CPU backend compiles it with LLVM's
# optimisations off, in about a third of the time (a depth-30 net: 2.7 s of CPU instead of 8.5 s).
QUICK_COMPILE = {"xla_backend_optimization_level": 0}


def first_step_of_nets(tasks: Mapping[str, Task]) -> Callable:
    """``measure(seeds[S], batch) -> {net: {metric: [S]}}``, jitted: the metrics of the first
    training step (:func:`first_step_metrics`) for every net of ``tasks`` and every seed, in one
    compiled call.

    Each seed ``s`` starts from the variables a run with ``config.seed = s`` starts from (the
    key split of :func:`p2t_jax.training.loop.create_state`, the step key of
    :func:`p2t_jax.training.steps.make_train_step`) and measures what that step measures before
    it updates anything: ``loss``, the task's own metrics (``preact_mean/<layer>``,
    ``preact_std/<layer>``, ``accuracy``, ...) and its ``grad_metrics`` (``grad_norm/<layer>``),
    on ``batch`` (``{"image": [B, H, W, C], "label": [B]}``), ``vmap``-ped over the seeds. New
    seeds or another batch of the same shapes reuse the compiled call; the nets (their depth)
    are fixed by ``tasks``.

    Args:
      tasks: net name -> its Task (e.g. the four :data:`NETS` at one depth), each with ``grad_metrics``.
    """

    def one_net(task: Task) -> Callable:
        def one_seed(seed, batch):
            init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
            variables = flax_meta.unbox(task.init_variables(init_rng))
            params = variables["params"]
            model_state = {k: v for k, v in variables.items() if k != "params"}
            step_rng = jax.random.fold_in(state_rng, 0)  # the first step's key
            (loss, (metrics, _)), grads = jax.value_and_grad(task.loss_fn, has_aux=True)(
                params, model_state, batch, step_rng, True)
            return dict(metrics, loss=loss, **task.grad_metrics(grads))

        return jax.vmap(one_seed, in_axes=(0, None))

    nets = {net: one_net(task) for net, task in tasks.items()}

    def measure(seeds_S: jax.Array, batch: dict) -> dict[str, dict[str, jax.Array]]:
        seeds_S = jnp.asarray(seeds_S, jnp.int32)
        return {net: fn(seeds_S, batch) for net, fn in nets.items()}

    return jax.jit(measure, compiler_options=QUICK_COMPILE)


def seed_rows(metrics: Mapping[str, np.ndarray]) -> list[dict[str, float]]:
    """``{metric: [S]}`` (one net's part of :func:`first_step_of_nets`) as one record per seed, for
    :func:`layer_series`."""
    values = {k: np.asarray(v) for k, v in metrics.items()}
    size = len(next(iter(values.values())))
    return [{k: float(v[s]) for k, v in values.items()} for s in range(size)]


def out_of_band(mean_TL: np.ndarray, std_TL: np.ndarray, mean_tolerance: float,
                std_range: tuple[float, float]) -> np.ndarray:
    """``bool[T, L]``: where a layer's pre-activations are not near N(0, 1): ``|mean| > mean_tolerance``
    or the std outside ``std_range``."""
    low, high = std_range
    return (np.abs(mean_TL) > mean_tolerance) | (std_TL < low) | (std_TL > high)
