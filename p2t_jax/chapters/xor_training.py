"""Training a small MLP on XOR by full-batch gradient descent, with the hand-written backward pass.

Shapes: S seeds, T steps, L layers, B = 4 examples. One run is a ``lax.scan`` over steps;
:func:`make_sweep` ``vmap``s that run over seeds so that hundreds of runs are one compiled
call. The learning rate is an argument, not a constant, so one compile serves every rate.
:func:`output_grid` evaluates a trained network over the input square (the decision band).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from p2t_jax.chapters.backprop import autodiff_loss, forward, layer_grad_norms, loss_and_grad
from p2t_jax.data.logic import truth_table
from p2t_jax.models.mlp import MLP


class Trace(NamedTuple):
    """Per-step measurements of one run (a leading ``[S]`` axis when swept over seeds).

    Attributes:
      loss: ``[T]`` the loss before each step.
      accuracy: ``[T]`` share of the four XOR rows right before each step.
      grad_norms: ``[T, L]`` L2 norm of each layer's kernel gradient.
      final_accuracy: ``[]`` accuracy after the last step.
      final_loss: ``[]`` loss after the last step.
      final_probs: ``[B]`` the network's output ``sigmoid(logit)`` per row after the last step.
    """

    loss: jax.Array
    accuracy: jax.Array
    grad_norms: jax.Array
    final_accuracy: jax.Array
    final_loss: jax.Array
    final_probs: jax.Array


def xor_data(dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """XOR as ``(x [4, 2], y [4, 1])``."""
    x, y = truth_table("XOR", dtype)
    return x, y[:, None]


def init_params(key: jax.Array, features: Sequence[int], activation: str, dtype=jnp.float32) -> dict:
    """Fresh ``MLP(features, activation)`` parameters for 2 inputs (LeCun-normal kernels, zero biases)."""
    params = MLP(features=tuple(features), activation=activation).init(key, jnp.zeros((1, 2), dtype))["params"]
    return jax.tree.map(lambda p: p.astype(dtype), params)


def accuracy(params: dict, x: jax.Array, y: jax.Array, activation: str) -> jax.Array:
    """Share of rows where ``sigmoid(logit) > 0.5`` matches the 0/1 target ``y`` ``[B, 1]``."""
    z, _ = forward(params, x, activation)
    return jnp.mean((z > 0) == (y > 0.5))


def train_gd(params: dict, x: jax.Array, y: jax.Array, lr: jax.Array, *, num_steps: int, activation: str,
             loss: str) -> tuple[dict, Trace]:
    """``num_steps`` full-batch gradient-descent steps ``p -= lr * dL/dp`` (hand-written gradients).

    Args:
      params: MLP parameters to start from.
      x: inputs ``[B, D]``.
      y: targets ``[B, K]`` in {0, 1}.
      lr: learning rate (a scalar, may be traced).
      num_steps: T.
      activation: hidden activation (``sigmoid``, ``tanh``, ``relu``).
      loss: ``bce`` or ``mse`` (see :mod:`p2t_jax.chapters.backprop`).

    Returns:
      ``(params, trace)``: final parameters and the per-step :class:`Trace`.
    """

    def step(p, _):
        value, grads = loss_and_grad(p, x, y, activation, loss)
        acc = accuracy(p, x, y, activation)
        p = jax.tree.map(lambda w, g: w - lr * g, p, grads)
        return p, (value, acc, layer_grad_norms(grads))

    params, (losses, accs, norms) = jax.lax.scan(step, params, None, length=num_steps)
    final_loss, _ = loss_and_grad(params, x, y, activation, loss)
    z, _ = forward(params, x, activation)
    return params, Trace(losses, accs, norms, accuracy(params, x, y, activation), final_loss, jax.nn.sigmoid(z[:, 0]))


def make_run(features: Sequence[int], activation: str, loss: str, num_steps: int) -> Callable:
    """``run(key, lr) -> Trace``: one seed's XOR run, initialised from ``key``, jitted.

    Cached: the same arguments return the same function, so its compiled code is reused.
    """
    return _make_run(tuple(features), activation, loss, num_steps, False)


def make_sweep(features: Sequence[int], activation: str, loss: str, num_steps: int) -> Callable:
    """``sweep(keys [S, 2], lr) -> Trace`` with a leading ``[S]`` axis: every seed in one jitted call.

    Cached like :func:`make_run`.
    """
    return _make_run(tuple(features), activation, loss, num_steps, True)


def make_sweep_with_params(features: Sequence[int], activation: str, loss: str, num_steps: int) -> Callable:
    """``sweep(keys [S, 2], lr) -> (params, Trace)``: :func:`make_sweep` that also returns each
    seed's final parameters (leading ``[S]``). Cached like :func:`make_run`."""
    return _make_run(tuple(features), activation, loss, num_steps, True, True)


@functools.cache
def _make_run(features: tuple[int, ...], activation: str, loss: str, num_steps: int, over_seeds: bool,
              with_params: bool = False) -> Callable:
    x, y = xor_data()

    def run(key, lr):
        params = init_params(key, features, activation)
        params, trace = train_gd(params, x, y, lr, num_steps=num_steps, activation=activation, loss=loss)
        return (params, trace) if with_params else trace

    return jax.jit(jax.vmap(run, in_axes=(0, None)) if over_seeds else run)


GRID_LIMITS = (-0.5, 1.5)  # the square around the four XOR rows that decision figures show


@functools.partial(jax.jit, static_argnames=("activation", "grid_size"))
def output_grid(params: dict, activation: str, grid_size: int) -> jax.Array:
    """The network's output ``sigmoid(logit)`` over the square :data:`GRID_LIMITS`, ``[G, G]``.

    Row i is ``x2 = grid[i]``, column j is ``x1 = grid[j]``, with ``grid = linspace(*GRID_LIMITS, G)``
    (the layout of :func:`p2t_jax.viz.mlp_figures.xor_band`).
    """
    grid = jnp.linspace(*GRID_LIMITS, grid_size)
    gx, gy = jnp.meshgrid(grid, grid)
    z, _ = forward(params, jnp.stack([gx.ravel(), gy.ravel()], axis=1), activation)
    return jax.nn.sigmoid(z[:, 0]).reshape(grid_size, grid_size)


def rise_share(losses: jax.Array, rel_tol: float) -> jax.Array:
    """Share of steps where the loss goes up by more than ``rel_tol`` of its value.

    A measure of oscillation: 0 for a loss that only falls. ``losses`` ``[..., T]`` -> ``[...]``.
    A run whose loss became non-finite counts every step as a rise.
    """
    before, after = losses[..., :-1], losses[..., 1:]
    rises = (after > before * (1.0 + rel_tol)) | ~jnp.isfinite(after)
    return jnp.mean(rises, axis=-1)


def sharpness(params: dict, x: jax.Array, y: jax.Array, activation: str, loss: str) -> jax.Array:
    """The largest eigenvalue of the loss's Hessian at ``params`` (exact; fine for tiny nets).

    Gradient descent on a quadratic is stable only while ``lr < 2 / sharpness``.
    """
    flat, unravel = ravel_pytree(params)
    hessian = jax.hessian(lambda f: autodiff_loss(unravel(f), x, y, activation, loss))(flat)
    return jnp.linalg.eigvalsh(hessian)[-1]


def timed_sweep(features: Sequence[int], activation: str, loss: str, num_steps: int, keys: jax.Array,
                lr: float, *, repeats: int = 1) -> tuple[Trace, dict[str, float]]:
    """The same S runs twice: vmapped in one compiled call, and as a Python loop of a jitted single run.

    Each version is called once first (that call compiles it, unless an earlier call with
    the same arguments did); the timings that follow are the best of ``repeats``.

    Returns:
      The vmapped :class:`Trace` and ``{"first_call_vmap_s", "first_call_single_s", "vmap_s",
      "loop_s", "speedup", "speedup_with_compile", "loop_matches_vmap"}``: the first calls'
      seconds (compile + one run), the timed seconds, ``loop_s / vmap_s``, the same ratio for
      a fresh process (``(first_call_single_s + loop_s) / first_call_vmap_s``), and the share
      of seeds whose final accuracy is the same both ways.
    """
    sweep = make_sweep(features, activation, loss, num_steps)
    single = make_run(features, activation, loss, num_steps)
    t0 = time.perf_counter()
    trace = jax.block_until_ready(sweep(keys, lr))
    first_vmap = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(single(keys[0], lr))
    first_single = time.perf_counter() - t0
    vmap_s, loop_s, finals = float("inf"), float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(sweep(keys, lr))
        vmap_s = min(vmap_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        finals = [jax.block_until_ready(single(k, lr)).final_accuracy for k in keys]
        loop_s = min(loop_s, time.perf_counter() - t0)
    matches = float(jnp.mean(jnp.stack(finals) == trace.final_accuracy))
    return trace, {"first_call_vmap_s": first_vmap, "first_call_single_s": first_single, "vmap_s": vmap_s,
                   "loop_s": loop_s, "speedup": loop_s / vmap_s,
                   "speedup_with_compile": (first_single + loop_s) / first_vmap, "loop_matches_vmap": matches}
