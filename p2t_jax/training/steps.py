"""Pure train and eval steps built from a chapter's loss function.

A loss function has the signature::

    loss_fn(params, model_state, batch, rng, train) -> (loss, (metrics, new_model_state))

``metrics`` is a dict of scalars (averaged over evaluation batches, weighted by their
rows); ``new_model_state`` holds updated mutable collections (``{}`` when the model has none).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from p2t_jax.training.state import TrainState

LossFn = Callable[[Any, Any, dict, jax.Array, bool], tuple[jax.Array, tuple[dict, Any]]]
# (grads, loss, metrics, new_model_state) -> the same, e.g. averaged across devices.
Reduce = Callable[[Any, jax.Array, dict, Any], tuple[Any, jax.Array, dict, Any]]


def _is_injected(node: Any) -> bool:
    return hasattr(node, "hyperparams") and hasattr(node, "inner_state") and isinstance(node.hyperparams, dict)


def injected_hyperparams(opt_state: Any) -> dict[str, jax.Array]:
    """The scalar hyperparameters held in ``opt_state`` by ``optax.inject_hyperparams`` (the
    values the last update used), as float32 scalars: ``{"learning_rate": ..., "b1": ...}``.

    A name met a second time (two injected transforms with a ``learning_rate``) gets a
    suffix: ``learning_rate_2``. Works for any chain, including a user's own ``tx``.
    """
    found: dict[str, jax.Array] = {}
    for node in jax.tree.leaves(opt_state, is_leaf=_is_injected):
        if not _is_injected(node):
            continue
        for name, value in node.hyperparams.items():
            if not hasattr(value, "dtype") or jnp.size(value) != 1 or not jnp.issubdtype(value.dtype, jnp.number):
                continue
            key, n = name, 1
            while key in found:
                n += 1
                key = f"{name}_{n}"
            found[key] = jnp.asarray(value, jnp.float32).reshape(())
    return found


def make_train_step(loss_fn: LossFn, schedule: optax.Schedule | None = None, *, reduce: Reduce | None = None,
                    grad_metrics: Callable[[Any], dict] | None = None, skip_nonfinite: bool = False) -> Callable:
    """Returns ``train_step(state, batch) -> (state, metrics)``, pure and ready for ``jax.jit``.

    The step's PRNG key is ``fold_in(state.rng, state.step)``. Besides the loss's own
    metrics it measures ``grad_norm``, ``param_norm``, ``update_norm``, ``nonfinite`` (1.0
    when the loss or a gradient is NaN or infinite, else 0.0; the loop stops on it), when
    ``schedule`` is given ``learning_rate``, and when ``grad_metrics`` is given the scalars it
    computes from the gradients (e.g. one norm per layer).

    Args:
      loss_fn: see the module docstring.
      schedule: the learning rate per step, for the ``learning_rate`` metric.
      reduce: applied to ``(grads, loss, metrics, new_model_state)`` before the update (the
        ``pmap`` step of :mod:`p2t_jax.training.pmap_step` averages them across devices here).
      grad_metrics: ``grads -> {name: scalar}``, added to the metrics.
      skip_nonfinite: on a non-finite step keep params, optimiser and model state as they
        were (the step counter and the key still advance), instead of applying the update.
    """

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        step_rng = jax.random.fold_in(state.rng, state.step)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (metrics, new_model_state)), grads = grad_fn(state.params, state.model_state, batch, step_rng, True)
        if reduce is not None:
            grads, loss, metrics, new_model_state = reduce(grads, loss, metrics, new_model_state)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        model_state = new_model_state if new_model_state is not None else state.model_state
        if skip_nonfinite:
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
            params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
            model_state = keep(model_state, state.model_state)
        metrics = dict(metrics, loss=loss, grad_norm=grad_norm, param_norm=optax.tree.norm(params),
                       update_norm=optax.tree.norm(updates), nonfinite=1.0 - finite.astype(jnp.float32))
        for name, value in injected_hyperparams(opt_state).items():
            metrics.setdefault(name if name not in metrics else f"hp_{name}", value)
        if schedule is not None:
            metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
        if grad_metrics is not None:
            metrics.update(grad_metrics(grads))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state)
        return new_state, metrics

    return train_step


def make_eval_step(loss_fn: LossFn) -> Callable:
    """Returns ``eval_step(state, batch) -> metrics`` (deterministic: ``train=False``)."""

    def eval_step(state: TrainState, batch: dict) -> dict:
        loss, (metrics, _) = loss_fn(state.params, state.model_state, batch, state.rng, False)
        return dict(metrics, loss=loss)

    return eval_step
