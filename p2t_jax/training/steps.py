"""Pure train and eval steps built from a chapter's loss function.

A loss function has the signature::

    loss_fn(params, model_state, batch, rng, train) -> (loss, (metrics, new_model_state))

``metrics`` is a dict of scalars (averaged over evaluation batches, weighted by their
rows); ``new_model_state`` holds updated mutable collections (``{}`` when the model has none).
A loss that is a mean over a number of items that varies from batch to batch (target
tokens that are not padding) puts that number in its metrics under :data:`LOSS_WEIGHT`, so
that gradient accumulation weighs each microbatch by it; the steps take it out of the
metrics they return.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import linen as nn

from p2t_jax.models import logical
from p2t_jax.training.state import TrainState

LossFn = Callable[[Any, Any, dict, jax.Array, bool], tuple[jax.Array, tuple[dict, Any]]]
# (grads, loss, metrics, new_model_state) -> the same, e.g. averaged across devices.
Reduce = Callable[[Any, jax.Array, dict, Any], tuple[Any, jax.Array, dict, Any]]
LOSS_WEIGHT = "loss_weight"  # metrics key: the items the loss is a mean over (see the module docstring)


def split_microbatches(batch: dict, k: int) -> dict:
    """``batch`` (leaves ``[B, ...]``) as ``k`` microbatches (leaves ``[k, B/k, ...]``).

    Microbatch ``i`` holds rows ``i, i+k, i+2k, ...``: when the rows are sharded over devices in
    contiguous blocks (and each block's size is a multiple of ``k``), every microbatch keeps
    rows on every device, so accumulating moves no data between devices.
    """
    def split(x):
        rows = x.shape[0]
        x = jnp.moveaxis(x.reshape(rows // k, k, *x.shape[1:]), 1, 0)
        return nn.with_logical_constraint(x, (None, logical.BATCH) + (None,) * (x.ndim - 2))
    return jax.tree.map(split, batch)


def accumulated_gradients(loss_fn: LossFn, grad_accum_steps: int = 1) -> Callable:
    """``(params, model_state, batch, rng) -> (loss, metrics, new_model_state, grads)`` of the training loss.

    With ``grad_accum_steps = k > 1`` the batch is cut into ``k`` microbatches
    (:func:`split_microbatches`) that a ``lax.scan`` runs one after another, so only one
    microbatch's activations are alive at a time. Loss, metrics and gradients are means over
    the microbatches, weighted by each one's :data:`LOSS_WEIGHT` when the loss reports it
    (else equally): the result equals the whole batch's to float tolerance. The model state
    (batch-norm statistics) is threaded through the microbatches in order; microbatch ``i``'s
    key is ``fold_in(rng, i)``.
    """
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    k = grad_accum_steps

    def one(params, model_state, batch, rng):
        (loss, (metrics, new_model_state)), grads = grad_fn(params, model_state, batch, rng, True)
        metrics = dict(metrics)
        weight = jnp.asarray(metrics.pop(LOSS_WEIGHT, 1.0), jnp.float32)
        return loss, metrics, (model_state if new_model_state is None else new_model_state), grads, weight

    if k == 1:
        return lambda params, model_state, batch, rng: one(params, model_state, batch, rng)[:4]

    def accumulate(params, model_state, batch, rng):
        micro = split_microbatches(batch, k)

        def body(carry, xs):
            totals, state = carry
            i, mb = xs
            loss, metrics, state, grads, weight = one(params, state, mb, jax.random.fold_in(rng, i))
            added = jax.tree.map(lambda t, v: t + (weight * v).astype(t.dtype), totals, (loss, metrics, grads, 1.0))
            return (added, state), None

        # sums in float32; the gradients' in the parameters' dtype and sharding
        loss, metrics, *_ = jax.eval_shape(one, params, model_state, jax.tree.map(lambda x: x[0], micro), rng)
        zeros = (jnp.zeros((), jnp.float32), jax.tree.map(lambda _: jnp.zeros((), jnp.float32), metrics),
                 jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32))
        (totals, model_state), _ = jax.lax.scan(body, (zeros, model_state), (jnp.arange(k), micro))
        loss, metrics, grads, weight = totals
        mean = lambda t: jax.tree.map(lambda x: (x / weight).astype(x.dtype), t)  # noqa: E731
        return mean(loss), mean(metrics), model_state, mean(grads)

    return accumulate


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
                    grad_metrics: Callable[[Any], dict] | None = None, skip_nonfinite: bool = False,
                    grad_accum_steps: int = 1) -> Callable:
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
      grad_accum_steps: microbatches per step (:func:`accumulated_gradients`); the batch's
        rows must divide by it. One step is still one optimiser update.
    """
    compute = accumulated_gradients(loss_fn, grad_accum_steps)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        step_rng = jax.random.fold_in(state.rng, state.step)
        loss, metrics, new_model_state, grads = compute(state.params, state.model_state, batch, step_rng)
        if reduce is not None:
            grads, loss, metrics, new_model_state = reduce(grads, loss, metrics, new_model_state)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        model_state = new_model_state
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
        metrics = {k: v for k, v in metrics.items() if k != LOSS_WEIGHT}
        return dict(metrics, loss=loss)

    return eval_step
