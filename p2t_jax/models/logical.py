"""Logical axis names: one set for parameters, another for activations.

Parameters name their axes ``vocab``, ``embed``, ``mlp``, ``heads`` and ``kv``; activations
have names of their own (``activation_batch``, ``activation_length``, ``activation_embed``,
...), as in MaxText, so a rule for a parameter's ``embed`` (e.g. FSDP) never decides how the
``[B, T, D]`` activations shard. ``parallel.logical_axis_rules`` maps both onto the mesh
(:data:`p2t_jax.parallel.partitioning.DEFAULT_RULES`). Without a mesh the names cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import linen as nn

# activation axes, by the shape suffix they name
BATCH, LENGTH, EMBED = "activation_batch", "activation_length", "activation_embed"
MLP, HEADS, KV, VOCAB = "activation_mlp", "activation_heads", "activation_kv", "activation_vocab"
BTD = (BATCH, LENGTH, EMBED)
BTF = (BATCH, LENGTH, MLP)
BTHK = (BATCH, LENGTH, HEADS, KV)
BTV = (BATCH, LENGTH, VOCAB)

ACTIVATION_OF = {"batch": BATCH, "length": LENGTH, "embed": EMBED, "mlp": MLP, "heads": HEADS, "kv": KV,
                 "vocab": VOCAB}  # the shared name each activation name replaced (for rules written before)


def param(init: Callable, axes: tuple) -> Callable:
    """``init`` with the parameter's logical axis names (``None`` for an axis never sharded).

    Every parameter initialiser of the models goes through here. ``rules=()``: the names shard
    the parameter through :mod:`p2t_jax.parallel` (which places the initialised state); flax must
    not also constrain the raw init value with whatever rules are in context.
    """
    return nn.with_logical_partitioning(init, axes, rules=())


def constrain(x: jax.Array, axes: tuple) -> jax.Array:
    """``x`` constrained to the sharding of its activation axis names (:data:`BTD`, ...)."""
    return nn.with_logical_constraint(x, axes)
