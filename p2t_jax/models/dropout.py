"""Dropout whose rate may be a traced value: a sweep's members each train with their own rate
inside one compiled step (:mod:`p2t_jax.training.sweep`).

``flax.linen.Dropout`` decides on its rate in Python (``rate == 0`` returns the input), so a
traced rate cannot reach it. :class:`Dropout` takes the same attributes and, for a Python
number, runs exactly Flax's code (same key, same mask, same numbers); for a traced rate it
draws the mask with the traced keep-probability ``1 - rate``, so ``rate == 0`` keeps every
unit and divides by 1: the identity, exactly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn


def is_zero(rate) -> bool:
    """True for a Python (or concrete) rate of 0; False for a nonzero or traced rate."""
    return not isinstance(rate, jax.core.Tracer) and float(rate) == 0.0


class Dropout(nn.Module):
    """Inverted dropout, ``[...] -> [...]`` (same shape), with ``rate`` a number or a traced scalar.

    Named like ``nn.Dropout`` (``Dropout_0``, ...), so it draws the same keys from the
    ``dropout`` collection as the module it replaces.
    """

    rate: float | jax.Array
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, inputs: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or is_zero(self.rate):
            return inputs
        if not isinstance(self.rate, jax.core.Tracer):  # Flax's nn.Dropout, line for line
            if self.rate == 1.0:
                return jnp.zeros_like(inputs)
            keep_prob = 1.0 - self.rate
            mask = jax.random.bernoulli(self.make_rng(self.rng_collection), p=keep_prob, shape=inputs.shape)
            return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))
        keep_prob = 1.0 - jnp.asarray(self.rate, jnp.float32)
        mask = jax.random.bernoulli(self.make_rng(self.rng_collection), p=keep_prob, shape=inputs.shape)
        # times the reciprocal: what XLA makes of Flax's division by a constant, so the numbers agree
        return jax.lax.select(mask, inputs * (1.0 / keep_prob).astype(inputs.dtype), jnp.zeros_like(inputs))
