"""Rosenblatt's perceptron: a weighted sum, a bias and a step.

``y_hat = step(x . w + b)`` with ``step(z) = 1 if z > 0 else 0``. Shapes: B batch, D inputs.
Parameters are ``{"w": [D], "b": []}``; the pure functions below take that dict directly
(the learning rule in :mod:`p2t_jax.chapters.perceptron_rule` updates it by hand), and the
linen :class:`Perceptron` wraps the same functions for code that wants a module.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn


def step(z: jax.Array) -> jax.Array:
    """Heaviside step: 1 where ``z > 0``, else 0 (same dtype as ``z``)."""
    return (z > 0).astype(z.dtype)


def weighted_sum(params: dict, x: jax.Array) -> jax.Array:
    """``x . w + b``: ``x`` ``[..., D]`` -> ``[...]``."""
    return x @ params["w"] + params["b"]


def predict(params: dict, x: jax.Array) -> jax.Array:
    """The perceptron's 0/1 output: ``x`` ``[..., D]`` -> ``[...]``."""
    return step(weighted_sum(params, x))


def init_params(key: jax.Array, dim: int, scale: float = 0.0, dtype=jnp.float32) -> dict:
    """``{"w": [D], "b": []}`` drawn from ``N(0, scale^2)``; ``scale=0`` gives zeros."""
    k_w, k_b = jax.random.split(key)
    return {"w": scale * jax.random.normal(k_w, (dim,), dtype), "b": scale * jax.random.normal(k_b, (), dtype)}


class Perceptron(nn.Module):
    """``x[B, D] -> {0, 1}[B]``; parameters ``w`` ``[D]`` and ``b`` ``[]`` (zeros by default).

    Attributes:
      w_init: initializer of the weights.
      b_init: initializer of the bias.
    """

    w_init: Callable = nn.initializers.zeros
    b_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        params = {"w": self.param("w", self.w_init, (x.shape[-1],)), "b": self.param("b", self.b_init, ())}
        return predict(params, x)
