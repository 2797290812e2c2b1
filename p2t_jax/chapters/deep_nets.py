"""Chapter 7's measurements: per-layer series read back from a run's metrics, the first step's.

The loop logs, for the deep models, ``grad_norm/<layer>`` (each kernel's gradient norm) and
``preact_mean/<layer>``, ``preact_std/<layer>`` (each ReLU input's statistics) as training
metrics (means over each logging interval). These helpers turn them into ``[T, L]`` arrays,
and measure the very first step (the gradients at initialisation) with the loop's own step.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from p2t_jax.optim.chains import make_optimizer
from p2t_jax.training.loop import Task, create_state
from p2t_jax.training.metrics import to_floats
from p2t_jax.training.steps import make_train_step


def layer_names(record: dict, prefix: str) -> list[str]:
    """The ``<layer>`` of every ``prefix/<layer>`` key of ``record``, in layer order (``head`` last)."""
    names = [k[len(prefix) + 1:] for k in record if k.startswith(prefix + "/")]
    return sorted(names, key=lambda n: (n == "head", n))


def layer_series(records: Sequence[dict], prefix: str, names: Sequence[str] | None = None) -> np.ndarray:
    """``[T, L]``: metric ``prefix/<layer>`` of each record (rows) for each layer (columns, in layer order)."""
    names = layer_names(records[0], prefix) if names is None else names
    return np.asarray([[r[f"{prefix}/{n}"] for n in names] for r in records], np.float64)


def first_step_metrics(task: Task, config: ml_collections.ConfigDict) -> dict[str, float]:
    """The metrics of the loop's first training step: the loop's own step, on the state a fresh
    run starts from (``config.seed``) and training batch 0. Its gradients are those at
    initialisation. (Pass the step-resolved config :func:`image_classification.build` returns.)"""
    state = create_state(task.init_variables, config)
    _, schedule = make_optimizer(config.optim, config.train.num_steps)
    step = jax.jit(make_train_step(task.loss_fn, schedule, grad_metrics=task.grad_metrics))
    _, metrics = step(state, task.train_batch(0))
    return to_floats(metrics)


def out_of_band(mean_TL: np.ndarray, std_TL: np.ndarray, mean_tolerance: float,
                std_range: tuple[float, float]) -> np.ndarray:
    """``bool[T, L]``: where a layer's pre-activations are not near N(0, 1): ``|mean| > mean_tolerance``
    or the std outside ``std_range``."""
    low, high = std_range
    return (np.abs(mean_TL) > mean_tolerance) | (std_TL < low) | (std_TL > high)
