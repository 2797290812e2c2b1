"""A small convolutional network for images: (conv -> ReLU -> max-pool) per stage, then Dense layers.

Shapes: B batch, H x W pixels, C input channels, F_i the channels of stage i, K classes.
Each stage is a ``kernel_size x kernel_size`` convolution with ``SAME`` padding (so it
keeps H x W), a ReLU, and a 2x2 max-pool with stride 2 (which halves H and W, rounding
down). With two stages a 28x28 digit becomes ``[B, 7, 7, F_1]``, flattened for the Dense
head.

A convolution's kernel ``[k, k, C_in, F]`` is shared by every position of the image, so
the first layer of ``CNN(features=(32, 64))`` holds ``3 * 3 * 1 * 32 = 288`` weights where
a 784-128 Dense layer holds 100,352.

Layers are named ``conv_0 ... conv_{S-1}`` and ``dense_0 ... dense_{L-1}`` (the last one
the output layer). The activations of every stage are sown into the ``intermediates``
collection as ``relu_i`` (after the ReLU, ``[B, H_i, W_i, F_i]``) and ``pool_i`` (after
the pooling), for drawing feature maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from flax import linen as nn


def max_pool_2x2(x_BHWC: jax.Array) -> jax.Array:
    """2x2 max-pooling with stride 2: ``[B, H, W, C] -> [B, H // 2, W // 2, C]`` (an odd last row or
    column is dropped, as ``nn.max_pool`` with ``VALID`` padding does).

    Written as a reshape and a max over the two window axes, not as ``nn.max_pool``'s
    ``reduce_window``: the same values, but the backward pass is an elementwise mask instead of
    XLA's ``select_and_scatter``, which makes the whole training step of chapter 6's CNN about
    1.45x faster on CPU (``bench/cnn_step.py --no-torch``: 38 vs 26 ms/step on 2 cores). Where a
    window holds several equal maxima the gradient is shared equally between them (``reduce_window`` gives it all to one); after a
    ReLU such ties are zeros, whose gradient the ReLU stops anyway.
    """
    B, H, W, C = x_BHWC.shape
    x = x_BHWC[:, :H // 2 * 2, :W // 2 * 2, :]
    return x.reshape(B, H // 2, 2, W // 2, 2, C).max(axis=(2, 4))


def pooled_size(size: int, stages: int) -> int:
    """Height (or width) after ``stages`` 2x2 max-pools of stride 2 (each rounds down)."""
    for _ in range(stages):
        size //= 2
    return size


class CNN(nn.Module):
    """``image[B, H, W, C] -> logits[B, K]``.

    Attributes:
      features: the output channels of each conv stage, e.g. ``(32, 64)``.
      num_classes: K, the output width.
      hidden: widths of Dense layers (each followed by a ReLU) between the flattened last
        stage and the output layer; ``()`` means the flattened maps feed the output directly.
      kernel_size: side of every (square) convolution kernel.
    """

    features: Sequence[int] = (32, 64)
    num_classes: int = 10
    hidden: Sequence[int] = ()
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x_BHWC: jax.Array, *, train: bool = False) -> jax.Array:
        """Args: ``x`` ``[B, H, W, C]``; ``train`` is unused (no dropout or batch norm here).

        Returns ``[B, K]`` logits.
        """
        del train
        x = x_BHWC
        for i, width in enumerate(self.features):
            x = nn.Conv(width, (self.kernel_size, self.kernel_size), padding="SAME", name=f"conv_{i}")(x)
            x = nn.relu(x)
            self.sow("intermediates", f"relu_{i}", x)
            x = max_pool_2x2(x)
            self.sow("intermediates", f"pool_{i}", x)
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(tuple(self.hidden) + (self.num_classes,)):
            x = nn.Dense(width, name=f"dense_{i}")(x)
            if i < len(self.hidden):
                x = nn.relu(x)
        return x
