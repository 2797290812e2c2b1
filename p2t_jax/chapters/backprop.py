"""Backpropagation written out by hand for :class:`p2t_jax.models.mlp.MLP`.

The network: ``a_0 = x``, ``z_i = a_i W_i + b_i``, ``a_{i+1} = f(z_i)`` for the hidden
layers, and the last ``z`` is the output logit. The prediction is ``p = sigmoid(z)``.
Two losses, both means over every output element (B batch, K outputs):

* ``bce``: binary cross-entropy ``-[y log p + (1 - y) log(1 - p)]``; ``dL/dz = (p - y) / (B K)``.
* ``mse``: squared error ``(p - y)^2``; ``dL/dz = 2 (p - y) p (1 - p) / (B K)``.

The backward pass is the chain rule, layer by layer, from the output back:
``dW_i = a_i^T dz_i``, ``db_i = sum_B dz_i``, ``da_i = dz_i W_i^T``, ``dz_{i-1} = da_i * f'(z_{i-1})``.
Parameters use the MLP's layout (``{"dense_i": {"kernel": [F_{i-1}, F_i], "bias": [F_i]}}``),
so the result can be compared leaf by leaf with ``jax.grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import optax

from p2t_jax.models.mlp import MLP

Params = dict

LOSSES = ("bce", "mse")


def _sigmoid_prime(z: jax.Array) -> jax.Array:
    s = jax.nn.sigmoid(z)
    return s * (1.0 - s)


def _tanh_prime(z: jax.Array) -> jax.Array:
    return 1.0 - jnp.tanh(z) ** 2


def _relu_prime(z: jax.Array) -> jax.Array:
    return (z > 0).astype(z.dtype)


# activation -> (f, f'), both elementwise on the pre-activation z.
DERIVATIVES: dict[str, tuple[Callable, Callable]] = {
    "sigmoid": (jax.nn.sigmoid, _sigmoid_prime),
    "tanh": (jnp.tanh, _tanh_prime),
    "relu": (jax.nn.relu, _relu_prime),
}


def num_layers(params: Params) -> int:
    """L, the number of ``dense_i`` layers in ``params``."""
    return len([k for k in params if k.startswith("dense_")])


def forward(params: Params, x: jax.Array, activation: str) -> tuple[jax.Array, list[tuple[jax.Array, jax.Array]]]:
    """The forward pass, keeping what the backward pass needs.

    Args:
      params: MLP parameters (``dense_0 ... dense_{L-1}``).
      x: inputs ``[B, D]``.
      activation: ``sigmoid``, ``tanh`` or ``relu``.

    Returns:
      ``(z, cache)``: the output logits ``[B, K]`` and, per layer i, ``(a_i, z_i)``: the
      layer's input ``[B, F_{i-1}]`` and its pre-activation ``[B, F_i]``.
    """
    f, _ = DERIVATIVES[activation]
    a, cache = x, []
    L = num_layers(params)
    for i in range(L):
        layer = params[f"dense_{i}"]
        z = a @ layer["kernel"] + layer["bias"]
        cache.append((a, z))
        a = f(z) if i < L - 1 else z
    return a, cache


def loss_and_output_grad(z: jax.Array, y: jax.Array, loss: str) -> tuple[jax.Array, jax.Array]:
    """The loss of logits ``z`` ``[B, K]`` against targets ``y`` ``[B, K]`` in {0, 1}, and ``dL/dz``."""
    n = z.size
    p = jax.nn.sigmoid(z)
    if loss == "bce":
        # -[y log p + (1-y) log(1-p)] = softplus(z) - y z, stable for large |z|.
        value = jnp.mean(jax.nn.softplus(z) - y * z)
        dz = (p - y) / n
    elif loss == "mse":
        value = jnp.mean((p - y) ** 2)
        dz = 2.0 * (p - y) * p * (1.0 - p) / n
    else:
        raise ValueError(f"unknown loss '{loss}'; choose one of {', '.join(LOSSES)}.")
    return value, dz


def backward(params: Params, cache: list[tuple[jax.Array, jax.Array]], dz: jax.Array, activation: str) -> Params:
    """The chain rule from ``dL/dz`` of the output back to every weight and bias.

    Args:
      params: the parameters the forward pass used.
      cache: ``forward``'s per-layer ``(a_i, z_i)``.
      dz: ``dL/dz`` of the output logits, ``[B, K]``.
      activation: the hidden activation the forward pass used.

    Returns:
      Gradients with the structure of ``params``.
    """
    _, f_prime = DERIVATIVES[activation]
    grads = {}
    for i in reversed(range(len(cache))):
        a, _ = cache[i]
        kernel = params[f"dense_{i}"]["kernel"]
        grads[f"dense_{i}"] = {"kernel": a.T @ dz, "bias": jnp.sum(dz, axis=0)}
        if i > 0:
            _, z_prev = cache[i - 1]
            dz = (dz @ kernel.T) * f_prime(z_prev)
    return {k: grads[k] for k in sorted(grads)}


def loss_and_grad(params: Params, x: jax.Array, y: jax.Array, activation: str, loss: str) -> tuple[jax.Array, Params]:
    """Hand-written ``(loss, dL/dparams)`` for an MLP; the same as ``jax.value_and_grad(autodiff_loss)``."""
    z, cache = forward(params, x, activation)
    value, dz = loss_and_output_grad(z, y, loss)
    return value, backward(params, cache, dz, activation)


def autodiff_loss(params: Params, x: jax.Array, y: jax.Array, activation: str, loss: str) -> jax.Array:
    """The same loss written independently (``MLP.apply``, optax's BCE), for ``jax.grad`` to differentiate."""
    features = tuple(params[f"dense_{i}"]["bias"].shape[0] for i in range(num_layers(params)))
    z = MLP(features=features, activation=activation).apply({"params": params}, x)
    if loss == "bce":
        return jnp.mean(optax.sigmoid_binary_cross_entropy(z, y))
    if loss == "mse":
        return jnp.mean(jnp.square(jax.nn.sigmoid(z) - y))
    raise ValueError(f"unknown loss '{loss}'; choose one of {', '.join(LOSSES)}.")


def layer_grad_norms(grads: Params) -> jax.Array:
    """``[L]``: the L2 norm of each layer's kernel gradient, input layer first."""
    return jnp.stack([jnp.linalg.norm(grads[f"dense_{i}"]["kernel"]) for i in range(num_layers(grads))])


def random_problem(key: jax.Array, widths: Sequence[int], batch_size: int,
                   dtype=jnp.float32) -> tuple[Params, jax.Array, jax.Array]:
    """Random MLP parameters for ``widths = (D, F_0, ..., K)``, inputs ``[B, D]`` and 0/1 targets ``[B, K]``.

    Weights are ``N(0, 1/fan_in)`` and biases ``N(0, 0.1^2)``; everything comes from ``key``.
    """
    keys = jax.random.split(key, 2 * (len(widths) - 1) + 2)
    params = {}
    for i, (din, dout) in enumerate(zip(widths[:-1], widths[1:])):
        kernel = jax.random.normal(keys[2 * i], (din, dout), dtype) / jnp.sqrt(din).astype(dtype)
        params[f"dense_{i}"] = {"kernel": kernel, "bias": 0.1 * jax.random.normal(keys[2 * i + 1], (dout,), dtype)}
    x = jax.random.normal(keys[-2], (batch_size, widths[0]), dtype)
    y = jax.random.bernoulli(keys[-1], 0.5, (batch_size, widths[-1])).astype(dtype)
    return params, x, y


@partial(jax.jit, static_argnums=(1, 2))
def gradient_check(key: jax.Array, widths: Sequence[int], batch_size: int) -> dict[str, jax.Array]:
    """The hand-written gradients against ``jax.grad``, for every activation and loss, on one random problem.

    Run it under ``jax.enable_x64(True)`` for a float64 comparison (the dtype follows the
    default float).

    Args:
      key: PRNG key for the problem.
      widths: ``(D, F_0, ..., K)``, a tuple (static).
      batch_size: B (static).

    Returns:
      ``"activation/loss" -> max |hand - jax.grad|`` over every parameter, plus
      ``"activation/loss/loss"`` the difference of the two loss values.
    """
    params, x, y = random_problem(key, widths, batch_size, jnp.asarray(0.0).dtype)
    out = {}
    for activation in DERIVATIVES:
        for loss in LOSSES:
            value, hand = loss_and_grad(params, x, y, activation, loss)
            auto_value, auto = jax.value_and_grad(autodiff_loss)(params, x, y, activation, loss)
            diffs = jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), hand, auto)
            out[f"{activation}/{loss}"] = jnp.max(jnp.stack(jax.tree.leaves(diffs)))
            out[f"{activation}/{loss}/loss"] = jnp.abs(value - auto_value)
    return out
