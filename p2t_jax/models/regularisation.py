"""Chapter 5's regularisers as pure functions.

* :func:`dropout` — inverted dropout: keep each unit with probability ``1 - rate`` and
  scale the kept ones by ``1 / (1 - rate)``, so the expected activation is unchanged and
  evaluation needs no rescaling (it is the identity there).
* :func:`l2_penalty` — ``0.5 * sum(w^2)`` over the weight matrices, added to the loss
  times a coefficient ``lambda``; its gradient is ``lambda * w``. With plain SGD this is the
  same update as decoupled weight decay; with Adam it is not, because the ``lambda * w``
  term is divided by Adam's per-coordinate scale, while AdamW's decay is not.
* :func:`smooth_labels` / :func:`cross_entropy` — label smoothing: the target puts
  ``1 - alpha`` on the true class and spreads ``alpha`` evenly over all ``K`` classes.
* Early stopping is the loop's ``train.early_stop_patience`` (see :mod:`p2t_jax.training.loop`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def dropout(x: jax.Array, rate: float, rng: jax.Array | None, *, train: bool = True) -> jax.Array:
    """Inverted dropout.

    Args:
      x: activations, any shape.
      rate: probability of zeroing each unit, in ``[0, 1)``.
      rng: PRNG key (only used when ``train`` and ``rate > 0``).
      train: False is evaluation mode: ``x`` unchanged.

    Returns:
      ``x * mask / (1 - rate)`` with ``mask ~ Bernoulli(1 - rate)``, same shape as ``x``.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1), got {rate}.")
    if not train or rate == 0.0:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


def weight_matrices(params: Any) -> list[jax.Array]:
    """The leaves with ``ndim >= 2`` (kernels), the ones L2 and weight decay act on."""
    return [p for p in jax.tree.leaves(params) if p.ndim >= 2]


def l2_penalty(params: Any) -> jax.Array:
    """``0.5 * sum(w^2)`` over the weight matrices (biases are left alone); float32 scalar."""
    return 0.5 * sum(jnp.sum(jnp.square(w)) for w in weight_matrices(params))


def smooth_labels(one_hot_BK: jax.Array, alpha: float) -> jax.Array:
    """``(1 - alpha) * one_hot + alpha / K``: the label-smoothed targets, ``[B, K]``."""
    if not isinstance(alpha, jax.core.Tracer) and not 0.0 <= alpha < 1.0:  # a sweep's alpha is traced
        raise ValueError(f"label smoothing must be in [0, 1), got {alpha}.")
    num_classes = one_hot_BK.shape[-1]
    return (1.0 - alpha) * one_hot_BK + alpha / num_classes


def cross_entropy(logits_BK: jax.Array, labels_B: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Mean cross-entropy of ``logits`` ``[B, K]`` against integer ``labels`` ``[B]``, smoothed by ``alpha``."""
    targets_BK = smooth_labels(jax.nn.one_hot(labels_B, logits_BK.shape[-1], dtype=logits_BK.dtype),
                               label_smoothing)
    return -jnp.mean(jnp.sum(targets_BK * jax.nn.log_softmax(logits_BK), axis=-1))

