"""Optimisers written out by hand as ``optax.GradientTransformation`` s.

Each is a pair of pure functions, ``init(params) -> state`` and
``update(grads, state, params) -> (updates, state)``; the parameters move by
``params + updates``. Notation: ``g`` the gradient, ``t`` the number of updates already
applied (``state.count``), ``lr(t)`` the learning rate (a number or an Optax schedule).

=========  ===============================================================================
sgd        ``u = -lr g``
momentum   ``v = g + beta v``;  ``u = -lr v``
nesterov   ``v = g + beta v``;  ``u = -lr (g + beta v)``  (look ahead along the new velocity)
rmsprop    ``s = rho s + (1 - rho) g^2``;  ``u = -lr g / sqrt(s + eps)``
adam       ``m = b1 m + (1 - b1) g``;  ``v = b2 v + (1 - b2) g^2``;
           ``m^ = m / (1 - b1^(t+1))``;  ``v^ = v / (1 - b2^(t+1))``  (bias correction);
           ``u = -lr m^ / (sqrt(v^) + eps)``
adamw      Adam plus decoupled decay: ``u = -lr (m^ / (sqrt(v^) + eps) + wd p)``; the decay
           never passes through the moment estimates (unlike an L2 term in the loss)
lion       ``c = b1 m + (1 - b1) g``;  ``u = -lr (sign(c) + wd p)``;  ``m = b2 m + (1 - b2) g``
=========  ===============================================================================

Every one takes the same arguments as its Optax counterpart (:data:`OPTAX_COUNTERPARTS`),
matches it step for step (``tests/test_optimizers.py``) and composes with Optax, e.g.
``optax.chain(optax.clip_by_global_norm(1.0), adam(optax.cosine_decay_schedule(...)))``.
The arithmetic is written in the same order as Optax's so that float32 results agree
to rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

ScalarOrSchedule = float | Callable[[jax.Array], jax.Array]


class CountState(NamedTuple):
    """``count``: int32 scalar, the updates applied so far (indexes the schedule)."""

    count: jax.Array


class MomentumState(NamedTuple):
    count: jax.Array
    velocity: Any  # a params-shaped tree


class RMSPropState(NamedTuple):
    count: jax.Array
    mean_square: Any  # EMA of g^2


class AdamState(NamedTuple):
    count: jax.Array
    mu: Any  # EMA of g (first moment)
    nu: Any  # EMA of g^2 (second moment)


class LionState(NamedTuple):
    count: jax.Array
    mu: Any  # EMA of g with rate b2


def _zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


def _step_down(learning_rate: ScalarOrSchedule, count: jax.Array, directions: Any) -> Any:
    """``-lr(count) * direction`` for every leaf (the final 'descend' of every optimiser)."""
    if callable(learning_rate):
        lr = learning_rate(count)
        return jax.tree.map(lambda d: jnp.array(-lr, dtype=d.dtype) * d, directions)
    return jax.tree.map(lambda d: -learning_rate * d, directions)


def _decay_mask(mask: Any, params: Any) -> Any:
    """A params-shaped tree of booleans: where decoupled weight decay applies."""
    if mask is None:
        return jax.tree.map(lambda _: True, params)
    return mask(params) if callable(mask) else mask


def _add_decay(directions: Any, params: Any, weight_decay: float, mask: Any) -> Any:
    """``d + wd * p`` where the mask is True, ``d`` elsewhere (``wd`` a number or a traced scalar, as in a sweep)."""
    if isinstance(weight_decay, (int, float)) and weight_decay == 0.0:
        return directions
    keep = _decay_mask(mask, params)
    return jax.tree.map(lambda d, p, k: d + weight_decay * p if k else d, directions, params, keep)


def sgd(learning_rate: ScalarOrSchedule) -> optax.GradientTransformation:
    """Plain stochastic gradient descent: ``u = -lr g``."""

    def init(params):
        del params
        return CountState(count=_zero_count())

    def update(grads, state, params=None):
        del params
        return _step_down(learning_rate, state.count, grads), CountState(count=state.count + 1)

    return optax.GradientTransformation(init, update)


def _momentum(learning_rate: ScalarOrSchedule, beta: float, look_ahead: bool) -> optax.GradientTransformation:
    def init(params):
        return MomentumState(count=_zero_count(), velocity=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        velocity = jax.tree.map(lambda g, v: g + beta * v, grads, state.velocity)
        if look_ahead:
            direction = jax.tree.map(lambda g, v: g + beta * v, grads, velocity)
        else:
            direction = velocity
        return (_step_down(learning_rate, state.count, direction),
                MomentumState(count=state.count + 1, velocity=velocity))

    return optax.GradientTransformation(init, update)


def momentum(learning_rate: ScalarOrSchedule, momentum: float = 0.9,
             nesterov: bool = False) -> optax.GradientTransformation:
    """Heavy-ball momentum (``nesterov=False``) or Nesterov's look-ahead form.

    The velocity sums past gradients with weight ``momentum^k`` (no ``1 - momentum``
    damping), as in Optax and PyTorch: at a steady gradient it moves ``1 / (1 - momentum)``
    times as far per step as SGD.
    """
    return _momentum(learning_rate, momentum, nesterov)


def nesterov(learning_rate: ScalarOrSchedule, momentum: float = 0.9) -> optax.GradientTransformation:
    """Nesterov momentum: ``v = g + beta v``, ``u = -lr (g + beta v)``."""
    return _momentum(learning_rate, momentum, True)


def rmsprop(learning_rate: ScalarOrSchedule, decay: float = 0.9, eps: float = 1e-8) -> optax.GradientTransformation:
    """RMSProp: divide by the root of an EMA of squared gradients (``eps`` inside the root, as in Optax)."""

    def init(params):
        return RMSPropState(count=_zero_count(), mean_square=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        mean_square = jax.tree.map(lambda g, s: (1 - decay) * (g**2) + decay * s, grads, state.mean_square)
        direction = jax.tree.map(lambda g, s: jax.lax.rsqrt(s + eps) * g, grads, mean_square)
        return (_step_down(learning_rate, state.count, direction),
                RMSPropState(count=state.count + 1, mean_square=mean_square))

    return optax.GradientTransformation(init, update)


def _adam_direction(grads, state: AdamState, b1: float, b2: float, eps: float):
    """Adam's step direction ``m^ / (sqrt(v^) + eps)`` and the new moments."""
    mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, grads, state.mu)
    nu = jax.tree.map(lambda g, v: (1 - b2) * (g**2) + b2 * v, grads, state.nu)
    t = state.count + 1
    # Bias correction: the moments start at 0, so early on they underestimate E[g], E[g^2]
    # by the factors 1 - b^t; dividing by them removes that bias.
    correction1, correction2 = 1 - b1**t, 1 - b2**t
    mu_hat = jax.tree.map(lambda m: m / correction1.astype(m.dtype), mu)
    nu_hat = jax.tree.map(lambda v: v / correction2.astype(v.dtype), nu)
    direction = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu_hat, nu_hat)
    return direction, mu, nu


def adam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam with bias correction (Kingma & Ba, 2015)."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamState(count=_zero_count(), mu=zeros, nu=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        del params
        direction, mu, nu = _adam_direction(grads, state, b1, b2, eps)
        return _step_down(learning_rate, state.count, direction), AdamState(count=state.count + 1, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def adamw(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 1e-4, mask: Any = None) -> optax.GradientTransformation:
    """AdamW: Adam plus decoupled weight decay (Loshchilov & Hutter, 2019).

    Args:
      mask: a params-shaped tree of booleans, or ``params -> tree``: where decay applies
        (None: everywhere).
    """

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AdamState(count=_zero_count(), mu=zeros, nu=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("adamw needs params in update() for its weight decay.")
        direction, mu, nu = _adam_direction(grads, state, b1, b2, eps)
        direction = _add_decay(direction, params, weight_decay, mask)
        return _step_down(learning_rate, state.count, direction), AdamState(count=state.count + 1, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def lion(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.99, weight_decay: float = 1e-3,
         mask: Any = None) -> optax.GradientTransformation:
    """Lion (Chen et al., 2023): the sign of an interpolated momentum, so every coordinate moves by ``lr``."""

    def init(params):
        return LionState(count=_zero_count(), mu=jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        if params is None:
            raise ValueError("lion needs params in update() for its weight decay.")
        direction = jax.tree.map(lambda g, m: jnp.sign((1.0 - b1) * g + b1 * m), grads, state.mu)
        mu = jax.tree.map(lambda g, m: (1 - b2) * g + b2 * m, grads, state.mu)
        direction = _add_decay(direction, params, weight_decay, mask)
        return _step_down(learning_rate, state.count, direction), LionState(count=state.count + 1, mu=mu)

    return optax.GradientTransformation(init, update)


# Name -> the hand-written constructor.
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": sgd, "momentum": momentum, "nesterov": nesterov, "rmsprop": rmsprop,
    "adam": adam, "adamw": adamw, "lion": lion,
}


def _optax_momentum(learning_rate, momentum=0.9, nesterov=False):
    return optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)


def _optax_nesterov(learning_rate, momentum=0.9):
    return optax.sgd(learning_rate, momentum=momentum, nesterov=True)


# Name -> the Optax constructor taking the same arguments.
OPTAX_COUNTERPARTS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": optax.sgd, "momentum": _optax_momentum, "nesterov": _optax_nesterov, "rmsprop": optax.rmsprop,
    "adam": optax.adam, "adamw": optax.adamw, "lion": optax.lion,
}
