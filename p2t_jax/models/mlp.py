"""A multi-layer perceptron: a stack of Dense layers with a chosen activation between them.

Shapes: B batch, D input features, F_i the width of layer i, K = ``features[-1]`` the
output width. The last layer has no activation: the module returns logits (or raw
regression outputs) and the loss decides what to do with them.

Layers are named ``dense_0 ... dense_{L-1}`` so that weights can be read or set by hand
(``{"params": {"dense_0": {"kernel": [D, F_0], "bias": [F_0]}, ...}}``); the hidden
activations are sown into the ``intermediates`` collection as ``hidden_i``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn


def _gelu(x: jax.Array) -> jax.Array:
    return jax.nn.gelu(x, approximate=False)


def _linear(x: jax.Array) -> jax.Array:
    return x


# Name -> elementwise function. ``linear`` (no activation) is there to show that stacked
# linear layers collapse into one.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": _gelu,
    "linear": _linear,
}


def activation_fn(name: str) -> Callable[[jax.Array], jax.Array]:
    """The elementwise function called ``name`` (one of :data:`ACTIVATIONS`).

    Raises:
      ValueError: for an unknown name, listing the known ones.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation '{name}'; choose one of {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


class MLP(nn.Module):
    """``x[B, D] -> [B, K]``: ``len(features)`` Dense layers, ``activation`` between them.

    Attributes:
      features: the width of every layer, the output layer last, e.g. ``(4, 1)`` for a
        2-4-1 network on 2 inputs or ``(512, 512, 10)`` for an MNIST classifier.
      activation: the hidden activation: ``sigmoid``, ``tanh``, ``relu``, ``gelu`` or
        ``linear``.
      dropout_rate: dropout after each hidden activation (needs a ``dropout`` RNG when
        ``deterministic`` is False).
      use_bias: biases in every Dense layer.
      flatten: reshape the input ``[B, ...]`` to ``[B, prod(...)]`` first (for images).
      kernel_init: initializer of every kernel.
      bias_init: initializer of every bias.
    """

    features: Sequence[int]
    activation: str = "relu"
    dropout_rate: float = 0.0
    use_bias: bool = True
    flatten: bool = False
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
        """Args: ``x`` ``[B, D]`` (or ``[B, ...]`` with ``flatten``). Returns ``[B, K]``."""
        if len(self.features) == 0:
            raise ValueError("MLP needs at least one layer in 'features'.")
        act = activation_fn(self.activation)
        if self.flatten:
            x = x.reshape(x.shape[0], -1)
        last = len(self.features) - 1
        for i, width in enumerate(self.features):
            x = nn.Dense(width, use_bias=self.use_bias, kernel_init=self.kernel_init, bias_init=self.bias_init,
                         name=f"dense_{i}")(x)
            if i < last:
                x = act(x)
                self.sow("intermediates", f"hidden_{i}", x)
                if self.dropout_rate > 0.0:
                    x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        return x
