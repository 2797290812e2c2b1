"""Pure train and eval steps built from a chapter's loss function.

A loss function has the signature::

    loss_fn(params, model_state, batch, rng, train) -> (loss, (metrics, new_model_state))

``metrics`` is a dict of scalars (averaged over evaluation batches); ``new_model_state``
holds updated mutable collections (``{}`` when the model has none).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from p2t_jax.training.state import TrainState

LossFn = Callable[[Any, Any, dict, jax.Array, bool], tuple[jax.Array, tuple[dict, Any]]]


def make_train_step(loss_fn: LossFn, schedule: optax.Schedule | None = None,
                    axis_name: str | None = None,
                    grad_metrics: Callable[[Any], dict] | None = None) -> Callable:
    """Returns ``train_step(state, batch) -> (state, metrics)``, pure and ready for ``jax.jit``.

    The step's PRNG key is ``fold_in(state.rng, state.step)``. Besides the loss's own
    metrics it measures ``grad_norm``, ``param_norm``, ``update_norm``, when ``schedule``
    is given ``learning_rate``, and when ``grad_metrics`` is given the scalars it computes
    from the gradients (e.g. one norm per layer). With ``axis_name`` (for ``jax.pmap``), each
    device folds its index along that axis into the key (its rows get their own dropout
    masks), and the gradients, loss, metrics and the floating-point leaves of the new model
    state (e.g. batch norm's running averages) are averaged over the axis with ``lax.pmean``.
    """

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        step_rng = jax.random.fold_in(state.rng, state.step)
        if axis_name is not None:
            step_rng = jax.random.fold_in(step_rng, jax.lax.axis_index(axis_name))
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, (metrics, new_model_state)), grads = grad_fn(state.params, state.model_state, batch, step_rng, True)
        if axis_name is not None:
            grads, loss, metrics = jax.lax.pmean((grads, loss, metrics), axis_name)
            new_model_state = jax.tree.map(
                lambda x: jax.lax.pmean(x, axis_name) if jnp.issubdtype(x.dtype, jnp.floating) else x, new_model_state)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params),
                       update_norm=optax.tree.norm(updates))
        if schedule is not None:
            metrics["learning_rate"] = jnp.asarray(schedule(state.step), jnp.float32)
        if grad_metrics is not None:
            metrics.update(grad_metrics(grads))
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                                  model_state=new_model_state if new_model_state is not None else state.model_state)
        return new_state, metrics

    return train_step


def make_eval_step(loss_fn: LossFn) -> Callable:
    """Returns ``eval_step(state, batch) -> metrics`` (deterministic: ``train=False``)."""

    def eval_step(state: TrainState, batch: dict) -> dict:
        loss, (metrics, _) = loss_fn(state.params, state.model_state, batch, state.rng, False)
        return dict(metrics, loss=loss)

    return eval_step
