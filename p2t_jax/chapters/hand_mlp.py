"""Chapter 2's two facts about stacked layers, as pure functions on MLP parameters.

1. Without an activation, stacked Dense layers are one Dense layer: ``(x W1 + b1) W2 + b2
   = x (W1 W2) + (b1 W2 + b2)``. :func:`collapse_linear` computes that single layer.
2. With a sigmoid between them, two layers solve XOR: hidden unit 1 is OR, hidden unit 2
   is AND, and the output fires for "OR and not AND". :func:`xor_params` sets those
   weights by hand in the layout of ``MLP(features=(2, 1), activation="sigmoid")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from p2t_jax.chapters.backprop import num_layers
from p2t_jax.models.mlp import MLP


def collapse_linear(params: dict) -> tuple[jax.Array, jax.Array]:
    """The single layer equal to a stack of activation-free Dense layers.

    Args:
      params: MLP parameters ``{"dense_i": {"kernel": [F_{i-1}, F_i], "bias": [F_i]}}``.

    Returns:
      ``(W, b)``: ``[D, K]`` and ``[K]`` with ``MLP(activation="linear")(x) == x W + b``.
    """
    kernel, bias = None, None
    for i in range(num_layers(params)):
        layer = params[f"dense_{i}"]
        if kernel is None:
            kernel, bias = layer["kernel"], layer["bias"]
        else:
            kernel, bias = kernel @ layer["kernel"], bias @ layer["kernel"] + layer["bias"]
    return kernel, bias


def random_params(key: jax.Array, widths: Sequence[int], dtype=jnp.float32) -> dict:
    """MLP parameters for ``widths = (D, F_0, ..., K)`` with every entry ``N(0, 1/fan_in)``.

    All numbers come from one ``jax.random.normal`` draw (cheap to compile for any shape).
    """
    shapes = [(din, dout) for din, dout in zip(widths[:-1], widths[1:])]
    flat = jax.random.normal(key, (sum(din * dout + dout for din, dout in shapes),), dtype)
    params, start = {}, 0
    for i, (din, dout) in enumerate(shapes):
        kernel = flat[start:start + din * dout].reshape(din, dout) / jnp.sqrt(din).astype(dtype)
        start += din * dout
        bias = flat[start:start + dout] / jnp.sqrt(din).astype(dtype)
        start += dout
        params[f"dense_{i}"] = {"kernel": kernel, "bias": bias}
    return params


@partial(jax.jit, static_argnums=(1, 2, 3))
def collapse_check(key: jax.Array, widths: Sequence[int], batch_size: int, nonlinear: str = "tanh") -> dict:
    """A random stack of linear layers and how exactly it equals one layer.

    Args:
      key: PRNG key for the weights and the inputs.
      widths: ``(D, F_0, ..., K)``: input width, then every layer's width (at least two
        layers); a tuple (static: one compile per shape).
      batch_size: B random inputs ``x ~ N(0, 1)`` of shape ``[B, D]``.
      nonlinear: an activation for the contrast: the same weights with it between the layers.

    Returns:
      ``{"linear_error": [] max |stack(x) - (x W + b)| / max |stack(x)|, "x": [B, D] the
      inputs, "nonlinear": [B, K] the nonlinear stack's outputs}`` (see
      :func:`linear_fit_residual` for how far the latter is from any linear map).
    """
    if len(widths) < 3:
        raise ValueError(f"collapse_check needs at least two layers, got widths {tuple(widths)}.")
    features = tuple(widths[1:])
    k_init, k_x = jax.random.split(key)
    x = jax.random.normal(k_x, (batch_size, widths[0]))
    params = random_params(k_init, widths)
    stacked = MLP(features=features, activation="linear").apply({"params": params}, x)
    kernel, bias = collapse_linear(params)
    error = jnp.max(jnp.abs(stacked - (x @ kernel + bias))) / jnp.max(jnp.abs(stacked))
    return {"linear_error": error, "x": x,
            "nonlinear": MLP(features=features, activation=nonlinear).apply({"params": params}, x)}


def linear_fit_residual(x: np.ndarray, y: np.ndarray) -> float:
    """How far ``y`` ``[B, K]`` is from the best affine map of ``x`` ``[B, D]`` (least squares, float64).

    Returns:
      ``||y - fit|| / ||y - mean(y)||``: 0 when ``y`` is exactly affine in ``x``.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    x1 = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    fit, *_ = np.linalg.lstsq(x1, y, rcond=None)
    return float(np.linalg.norm(y - x1 @ fit) / np.linalg.norm(y - y.mean(0)))


def xor_params(scale: float = 20.0, dtype=jnp.float32) -> dict:
    """Hand-set weights of a 2-2-1 sigmoid network that computes XOR.

    With ``s = scale``: ``h_or = sigmoid(s x1 + s x2 - s/2)``, ``h_and = sigmoid(s x1 + s x2 - 3s/2)``,
    output logit ``s h_or - s h_and - s/2``. Each unit's line sits halfway between the
    inputs it must separate, so every logit is at least ``s/2`` away from 0 (up to the
    sigmoid's tails) and the larger ``s``, the closer the outputs are to exact 0 and 1.

    Returns:
      MLP parameters: ``dense_0`` kernel ``[2, 2]``, bias ``[2]``; ``dense_1`` kernel ``[2, 1]``, bias ``[1]``.
    """
    s = scale
    return {
        "dense_0": {"kernel": jnp.array([[s, s], [s, s]], dtype), "bias": jnp.array([-s / 2, -3 * s / 2], dtype)},
        "dense_1": {"kernel": jnp.array([[s], [-s]], dtype), "bias": jnp.array([-s / 2], dtype)},
    }


def hidden_lines(params: dict) -> list[tuple[float, float, float]]:
    """Each first-layer unit's decision line ``a x1 + b x2 + c = 0`` as ``(a, b, c)``."""
    kernel, bias = params["dense_0"]["kernel"], params["dense_0"]["bias"]
    return [(float(kernel[0, j]), float(kernel[1, j]), float(bias[j])) for j in range(kernel.shape[1])]
