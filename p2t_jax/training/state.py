"""TrainState: everything a run needs to continue exactly, as one pytree."""

from __future__ import annotations

from typing import Any

import jax
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
    """Parameters, optimiser state, step, PRNG key and mutable model state.

    Attributes:
      step: int32 scalar, the number of updates applied (also the data position).
      params: the model's ``params`` collection.
      opt_state: the Optax state for ``params``.
      rng: the run's base PRNG key (raw ``uint32[2]``); step keys are ``fold_in(rng, step)``.
      model_state: other mutable collections, e.g. ``{"batch_stats": ...}``; ``{}`` if none.
      tx: the optimiser (static: part of the step's compiled code, not of its data).
    """

    step: jax.Array
    params: Any
    opt_state: Any
    rng: jax.Array
    model_state: Any
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, variables: dict, tx: optax.GradientTransformation, rng: jax.Array) -> TrainState:
        """Builds the state from ``variables`` (``{"params": ..., other collections}``)."""
        params = variables["params"]
        model_state = {k: v for k, v in variables.items() if k != "params"}
        return cls(step=jax.numpy.zeros((), jax.numpy.int32), params=params, opt_state=tx.init(params),
                   rng=rng, model_state=model_state, tx=tx)

    def checkpoint_items(self) -> dict:
        """The pytree that checkpoints save and restore (no static fields)."""
        return {"step": self.step, "params": self.params, "opt_state": self.opt_state,
                "rng": self.rng, "model_state": self.model_state}

    def replace_items(self, items: dict) -> TrainState:
        """The state with the values of a restored ``checkpoint_items()`` tree."""
        return self.replace(**items)
