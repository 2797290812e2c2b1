"""The standard optimiser: ``clip_by_global_norm -> adamw`` on a warm-up + cosine schedule."""

from __future__ import annotations

import jax
import ml_collections
import optax


def decay_mask(params) -> dict:
    """True for matrices and embeddings (ndim >= 2), False for biases and norm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``optim.learning_rate`` over ``optim.warmup_steps``, then
    cosine decay to ``optim.end_learning_rate`` at ``optim.decay_steps`` (0 or less: ``num_steps``)."""
    decay_steps = optim.decay_steps if optim.decay_steps > 0 else num_steps
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=optim.learning_rate, warmup_steps=optim.warmup_steps,
        decay_steps=max(decay_steps, optim.warmup_steps + 1), end_value=optim.end_learning_rate)


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Builds the chain described by ``optim`` (fields: see ``configs/shakespeare.py``).

    Returns:
      (the transformation, the learning-rate schedule it follows, for logging).
    """
    schedule = make_schedule(optim, num_steps)
    parts = []
    if optim.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim.grad_clip_norm))
    parts.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                             weight_decay=optim.weight_decay, mask=decay_mask))
    return optax.chain(*parts), schedule
