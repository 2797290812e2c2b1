"""The optimiser chains built from ``config.optim``.

The default (``optim.name`` missing or ``"adamw"``, ``optim.implementation`` missing or
``"optax"``) is the standard ``clip_by_global_norm -> adamw`` on a warm-up + cosine
schedule. ``optim.name`` picks another optimiser (:data:`OPTIMIZERS`),
``optim.implementation`` picks Optax's version or the hand-written one in
:mod:`p2t_jax.optim.scratch`, and ``optim.schedule`` picks ``"warmup_cosine"`` (default)
or ``"constant"``.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

from p2t_jax.configuration import ConfigError, require, require_choice
from p2t_jax.optim import scratch

OPTIMIZERS = tuple(scratch.OPTIMIZERS)  # sgd, momentum, nesterov, rmsprop, adam, adamw, lion
IMPLEMENTATIONS = ("optax", "scratch")
SCHEDULES = ("warmup_cosine", "constant")
WITH_WEIGHT_DECAY = ("adamw", "lion")  # optimisers whose update carries decoupled weight decay


def validate_optim(config: ml_collections.ConfigDict) -> None:
    """The checks of ``config.optim`` that every task with the standard chain shares (ConfigError)."""
    o = config.optim
    require_choice(config, "optim.name", OPTIMIZERS)
    require_choice(config, "optim.implementation", IMPLEMENTATIONS)
    require_choice(config, "optim.schedule", SCHEDULES)
    require(o.grad_clip_norm >= 0 and o.weight_decay >= 0 and o.warmup_steps >= 0,
            "config keys 'optim.grad_clip_norm', 'optim.weight_decay' and 'optim.warmup_steps' must be >= 0.")
    require(o.weight_decay == 0 or o.name in WITH_WEIGHT_DECAY,
            f"config key 'optim.weight_decay' is used by {' and '.join(WITH_WEIGHT_DECAY)} only; "
            f"set it to 0 for {o.name}.")
    require(0 <= o.b1 < 1 and 0 <= o.b2 < 1, "config keys 'optim.b1' and 'optim.b2' must be in [0, 1).")


def decay_mask(params) -> dict:
    """True for matrices and embeddings (ndim >= 2), False for biases and norm scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """The learning rate per step.

    ``optim.schedule == "constant"``: ``optim.learning_rate`` throughout. Otherwise (the
    default) linear warm-up from 0 to ``optim.learning_rate`` over ``optim.warmup_steps``,
    then cosine decay to ``optim.end_learning_rate`` at ``optim.decay_steps`` (0 or less:
    ``num_steps``).
    """
    kind = optim.get("schedule", "warmup_cosine")
    if kind not in SCHEDULES:
        raise ConfigError(f"config key 'optim.schedule' must be one of {', '.join(SCHEDULES)}, got {kind!r}.")
    if kind == "constant":
        return optax.constant_schedule(optim.learning_rate)
    decay_steps = optim.decay_steps if optim.decay_steps > 0 else num_steps
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=optim.learning_rate, warmup_steps=optim.warmup_steps,
        decay_steps=max(decay_steps, optim.warmup_steps + 1), end_value=optim.end_learning_rate)


def _core(optim: ml_collections.ConfigDict, schedule: optax.Schedule) -> optax.GradientTransformation:
    """The optimiser named by ``optim.name`` from the chosen implementation, on ``schedule``."""
    name = optim.get("name", "adamw")
    impl = optim.get("implementation", "optax")
    if name not in OPTIMIZERS:
        raise ConfigError(f"config key 'optim.name' must be one of {', '.join(OPTIMIZERS)}, got {name!r}.")
    if impl not in IMPLEMENTATIONS:
        raise ConfigError(f"config key 'optim.implementation' must be one of {', '.join(IMPLEMENTATIONS)}, "
                          f"got {impl!r}.")
    weight_decay = optim.get("weight_decay", 0.0)
    if name not in WITH_WEIGHT_DECAY and weight_decay:  # in this order: a swept (traced) weight decay is no bool
        raise ConfigError(f"config key 'optim.weight_decay' is used by {' and '.join(WITH_WEIGHT_DECAY)} only; "
                          f"set it to 0 for {name} (an L2 penalty belongs in the loss).")
    build = (scratch.OPTIMIZERS if impl == "scratch" else scratch.OPTAX_COUNTERPARTS)[name]
    if name == "sgd":
        return build(schedule)
    if name in ("momentum", "nesterov"):
        return build(schedule, momentum=optim.get("momentum", 0.9))
    if name == "rmsprop":
        return build(schedule, decay=optim.get("rms_decay", 0.9), eps=optim.eps)
    if name == "adam":
        return build(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps)
    if name == "adamw":
        return build(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=weight_decay, mask=decay_mask)
    return build(schedule, b1=optim.b1, b2=optim.b2, weight_decay=weight_decay, mask=decay_mask)  # lion


def make_optimizer(optim: ml_collections.ConfigDict, num_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Builds the chain described by ``optim`` (fields: see ``configs/shakespeare.py`` and
    ``configs/mnist_optimizers.py``): optional ``clip_by_global_norm``, then the optimiser.

    Returns:
      (the transformation, the learning-rate schedule it follows, for logging).
    """
    schedule = make_schedule(optim, num_steps)
    parts = []
    if optim.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(optim.grad_clip_norm))
    parts.append(_core(optim, schedule))
    return optax.chain(*parts), schedule
