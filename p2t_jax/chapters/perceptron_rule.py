"""Rosenblatt's learning rule as pure functions; examples and epochs are ``lax.scan`` loops.

For one example ``(x, y)``: ``y_hat = step(x . w + b)``, then ``w += lr (y - y_hat) x`` and
``b += lr (y - y_hat)``. The weights move only on a mistake. Shapes: N examples, D inputs,
E epochs.

Novikoff's theorem: if some unit vector ``u`` separates the data with margin ``gamma``
(``y_pm (u . x) >= gamma`` for every example, ``y_pm = 2y - 1``) and every ``|x| <= R``, a
perceptron started from zero makes at most ``(R / gamma)^2`` updates, whatever ``lr`` and
the order of the examples. The bias is handled by appending a constant 1 to every input.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from p2t_jax.models.perceptron import init_params, predict


class History(NamedTuple):
    """What :func:`train` records per epoch.

    Attributes:
      mistakes: ``[E]`` updates made during the epoch (examples it got wrong on the way).
      errors: ``[E]`` examples misclassified by the weights at the end of the epoch.
      w: ``[E, D]`` weights at the end of each epoch.
      b: ``[E]`` bias at the end of each epoch.
    """

    mistakes: jax.Array
    errors: jax.Array
    w: jax.Array
    b: jax.Array


def update(params: dict, x: jax.Array, y: jax.Array, lr: float) -> tuple[dict, jax.Array]:
    """One application of the rule to one example ``x`` ``[D]``, label ``y`` ``[]`` in {0, 1}.

    Returns:
      ``(params, mistake)``: the new parameters and 1 if the example was misclassified.
    """
    delta = y - predict(params, x)
    new = {"w": params["w"] + lr * delta * x, "b": params["b"] + lr * delta}
    return new, (delta != 0).astype(jnp.int32)


def num_errors(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    """How many of ``x`` ``[N, D]`` the perceptron gets wrong (an int32 scalar)."""
    return jnp.sum(predict(params, x) != y).astype(jnp.int32)


def train_epoch(params: dict, x: jax.Array, y: jax.Array, order: jax.Array, lr: float) -> tuple[dict, jax.Array]:
    """One pass over the examples in ``order`` ``[N]`` (indices into ``x`` ``[N, D]``, ``y`` ``[N]``).

    Returns:
      ``(params, mistakes)``: parameters after the pass and the number of updates made.
    """

    def one(p, i):
        return update(p, x[i], y[i], lr)

    params, mistakes = jax.lax.scan(one, params, order)
    return params, jnp.sum(mistakes)


@partial(jax.jit, static_argnames=("num_epochs", "shuffle"))
def train(params: dict, x: jax.Array, y: jax.Array, key: jax.Array, *, lr: float, num_epochs: int,
          shuffle: bool = True) -> tuple[dict, History]:
    """Rosenblatt's rule, epoch after epoch, as a ``lax.scan`` over epochs.

    Args:
      params: ``{"w": [D], "b": []}`` to start from.
      x: inputs ``[N, D]``.
      y: labels ``[N]`` in {0, 1}.
      key: PRNG key for the example order (epoch e uses ``fold_in(key, e)``).
      lr: the learning rate.
      num_epochs: E.
      shuffle: a fresh random order each epoch; otherwise the order of ``x``.

    Returns:
      ``(params, history)``: final parameters and the per-epoch :class:`History`.
    """
    n = x.shape[0]

    def epoch(p, e):
        order = jax.random.permutation(jax.random.fold_in(key, e), n) if shuffle else jnp.arange(n)
        p, mistakes = train_epoch(p, x, y, order, lr)
        return p, History(mistakes, num_errors(p, x, y), p["w"], p["b"])

    return jax.lax.scan(epoch, params, jnp.arange(num_epochs))


@partial(jax.jit, static_argnames=("num_epochs", "shuffle"))
def train_many(x: jax.Array, ys: jax.Array, keys: jax.Array, *, lr: float, init_scale: float, num_epochs: int,
               shuffle: bool = True) -> History:
    """Every target set times every seed in one compiled call (``vmap`` over both).

    Args:
      x: inputs ``[N, D]``, shared by every run.
      ys: G sets of labels ``[G, N]`` in {0, 1} (e.g. one truth table per gate).
      keys: ``[S, 2]``, one PRNG key per seed: split into the initial weights'
        (``N(0, init_scale^2)``, :func:`p2t_jax.models.perceptron.init_params`) and the example order's.
      lr, init_scale: traced scalars (one compilation serves every value).
      num_epochs, shuffle: as in :func:`train`.

    Returns:
      :class:`History` with leading ``[G, S]``.
    """

    def one(y, seed_key):
        k_init, k_order = jax.random.split(seed_key)
        params = init_params(k_init, x.shape[1], init_scale)
        _, history = train(params, x, y, k_order, lr=lr, num_epochs=num_epochs, shuffle=shuffle)
        return history

    return jax.vmap(jax.vmap(one, in_axes=(None, 0)), in_axes=(0, None))(ys, keys)


def first_zero(errors: jax.Array | np.ndarray) -> jax.Array | np.ndarray:
    """Index of the first epoch with zero errors, or -1 if none: ``errors`` ``[..., E]`` -> ``[...]``.

    NumPy in, NumPy out (no compile); JAX arrays and tracers use ``jax.numpy``.
    """
    xp = np if isinstance(errors, np.ndarray) else jnp
    hit = errors == 0
    return xp.where(xp.any(hit, axis=-1), xp.argmax(hit, axis=-1), -1)


def convergence_bound(x: jax.Array, y: jax.Array, w: jax.Array, b: jax.Array) -> dict[str, jax.Array]:
    """Novikoff's bound for data ``x`` ``[N, D]``, ``y`` ``[N]`` separated by the plane ``(w, b)``.

    The perceptron learns a bias, so the inputs are augmented to ``(x, 1)`` and the
    separator to ``u = (w, b) / |(w, b)|``.

    Returns:
      ``{"R": max |(x, 1)|, "gamma": min y_pm (u . (x, 1)), "bound": (R / gamma)^2}``.
      ``gamma <= 0`` means the plane does not separate the data (the bound is then inf).
    """
    x_aug = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1)
    u = jnp.concatenate([w, jnp.reshape(b, (1,))])
    u = u / jnp.linalg.norm(u)
    gamma = jnp.min((2.0 * y - 1.0) * (x_aug @ u))
    radius = jnp.max(jnp.linalg.norm(x_aug, axis=1))
    bound = jnp.where(gamma > 0, (radius / gamma) ** 2, jnp.inf)
    return {"R": radius, "gamma": gamma, "bound": bound}
