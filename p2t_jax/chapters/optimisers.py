"""Chapter 4's 2-D loss surfaces and optimiser paths across them.

Two classic test functions of a point ``xy = [x, y]``:

* Rosenbrock ``(1 - x)^2 + 100 (y - x^2)^2``: a curved, flat-bottomed valley with its
  minimum 0 at ``(1, 1)``; gradient descent crawls along the valley floor.
* an ill-conditioned quadratic ``0.5 (x^2 + kappa y^2)`` (condition number ``kappa``): plain
  SGD must keep its step below ``2 / kappa`` and then crawls along ``x``.

:func:`trajectory` runs any ``optax.GradientTransformation`` on such a function as one
``lax.scan`` and returns the whole path; :func:`make_trajectory` compiles one hand-written
optimiser's path once for every learning rate.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from p2t_jax.optim import chains, scratch


def rosenbrock(xy: jax.Array, a: float = 1.0, b: float = 100.0) -> jax.Array:
    """``(a - x)^2 + b (y - x^2)^2`` for ``xy`` ``[..., 2]``; minimum 0 at ``(a, a^2)``."""
    x, y = xy[..., 0], xy[..., 1]
    return (a - x) ** 2 + b * (y - x**2) ** 2


def ill_conditioned_quadratic(xy: jax.Array, kappa: float = 25.0) -> jax.Array:
    """``0.5 (x^2 + kappa y^2)`` for ``xy`` ``[..., 2]``; minimum 0 at the origin."""
    x, y = xy[..., 0], xy[..., 1]
    return 0.5 * (x**2 + kappa * y**2)


SURFACES: dict[str, tuple[Callable[[jax.Array], jax.Array], tuple[float, float], tuple[float, float]]] = {
    # name -> (function, start point, minimiser)
    "rosenbrock": (rosenbrock, (-1.2, 1.0), (1.0, 1.0)),
    "quadratic": (ill_conditioned_quadratic, (-4.0, 1.5), (0.0, 0.0)),
}

# The window each surface is drawn in: name -> ((x_min, x_max), (y_min, y_max)).
WINDOWS: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "rosenbrock": ((-2.0, 2.0), (-1.0, 3.0)), "quadratic": ((-4.5, 4.5), (-2.0, 2.0))}


def trajectory(tx: optax.GradientTransformation, fn: Callable[[jax.Array], jax.Array], start: jax.Array,
               num_steps: int) -> tuple[jax.Array, jax.Array]:
    """Minimises ``fn`` from ``start`` with ``tx`` for ``num_steps`` steps.

    Args:
      tx: the optimiser.
      fn: ``xy[2] -> scalar``.
      start: ``float32[2]``.
      num_steps: updates to apply.

    Returns:
      (points ``float32[num_steps + 1, 2]`` from ``start`` on, losses ``float32[num_steps + 1]``).
    """
    start = jnp.asarray(start, jnp.float32)

    def step(carry, _):
        xy, opt_state = carry
        grad = jax.grad(fn)(xy)
        updates, opt_state = tx.update(grad, opt_state, xy)
        xy = optax.apply_updates(xy, updates)
        return (xy, opt_state), xy

    _, path = jax.lax.scan(step, (start, tx.init(start)), None, length=num_steps)
    points = jnp.concatenate([start[None], path], axis=0)
    return points, jax.vmap(fn)(points)


@functools.cache
def make_trajectory(name: str, surface: str, num_steps: int,
                    weight_decay: float = 0.0) -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """``path(lr) -> (points [num_steps + 1, 2], losses [num_steps + 1])``, jitted with ``lr`` traced.

    :func:`trajectory` of the hand-written optimiser ``name`` (:data:`p2t_jax.optim.scratch.OPTIMIZERS`)
    on ``surface`` (a key of :data:`SURFACES`) from its start point; ``weight_decay`` is the
    decoupled decay of the optimisers that have one (:data:`p2t_jax.optim.chains.WITH_WEIGHT_DECAY`)
    and ignored by the others. Cached: the same arguments return the same function, so every
    learning rate runs through one compilation.
    """
    fn, start, _ = SURFACES[surface]
    build = scratch.OPTIMIZERS[name]
    kwargs = {"weight_decay": weight_decay} if name in chains.WITH_WEIGHT_DECAY else {}
    return jax.jit(lambda lr: trajectory(build(lr, **kwargs), fn, jnp.asarray(start), num_steps))
