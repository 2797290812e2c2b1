"""Tiny datasets for the first chapters: logic-gate truth tables and separable points.

Shapes: N points, D input dimensions. Labels are 0 or 1.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

# The four input rows of every two-input gate, in this order.
GATE_INPUTS = ((0, 0), (0, 1), (1, 0), (1, 1))

# Gate name -> its output for each row of GATE_INPUTS.
GATES: dict[str, tuple[int, int, int, int]] = {
    "AND": (0, 0, 0, 1),
    "OR": (0, 1, 1, 1),
    "NAND": (1, 1, 1, 0),
    "NOR": (1, 0, 0, 0),
    "XOR": (0, 1, 1, 0),
    "XNOR": (1, 0, 0, 1),
}


def truth_table(gate: str, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """The truth table of a two-input gate.

    Args:
      gate: one of :data:`GATES` (case-insensitive).
      dtype: dtype of both arrays.

    Returns:
      ``(x, y)``: inputs ``[4, 2]`` and targets ``[4]``, both 0/1.

    Raises:
      ValueError: for an unknown gate, listing the known ones.
    """
    name = gate.upper()
    if name not in GATES:
        raise ValueError(f"unknown gate '{gate}'; choose one of {', '.join(GATES)}.")
    return jnp.asarray(GATE_INPUTS, dtype), jnp.asarray(GATES[name], dtype)


@partial(jax.jit, static_argnums=(1, 2))
def separable_points(key: jax.Array, num_points: int, dim: int = 2, margin: float = 0.1,
                     max_offset: float = 0.5) -> dict[str, jax.Array]:
    """Points in ``[-1, 1]^D`` split by a random hyperplane, none closer to it than ``margin``.

    A unit normal ``w`` and an offset ``b`` in ``[-max_offset, max_offset]`` are drawn, points
    are drawn uniformly in the cube, and any point nearer than ``margin`` to the plane
    ``w.x + b = 0`` is pushed straight away from it to exactly ``margin``. So the margin is
    known: the smallest distance of any point to the plane is ``margin`` (to float precision).

    Args:
      key: PRNG key.
      num_points: N (static).
      dim: D (static).
      margin: the guaranteed gap gamma between the plane and the nearest point.
      max_offset: the largest ``|b|`` drawn.

    Returns:
      ``{"x": [N, D], "y": [N] (1 where w.x + b > 0), "w": [D] unit normal, "b": [] offset,
      "distance": [N] signed distance of each point to the plane}``.
    """
    k_w, k_b, k_x = jax.random.split(key, 3)
    w = jax.random.normal(k_w, (dim,))
    w = w / jnp.linalg.norm(w)
    b = jax.random.uniform(k_b, (), minval=-max_offset, maxval=max_offset)
    x = jax.random.uniform(k_x, (num_points, dim), minval=-1.0, maxval=1.0)
    s = x @ w + b
    side = jnp.where(s >= 0, 1.0, -1.0)
    push = jnp.maximum(margin - jnp.abs(s), 0.0) * side
    x = x + push[:, None] * w[None, :]
    s = x @ w + b
    return {"x": x, "y": (s > 0).astype(x.dtype), "w": w, "b": b, "distance": s}
