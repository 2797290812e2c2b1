"""Deep networks of configurable depth, plain or residual, with or without batch normalisation.

Two families, for chapter 7:

* :class:`DeepMLP`: ``depth`` Dense layers of one width on flattened images (MNIST).
* :class:`ResNet`: the CIFAR-10 ResNet of He et al. 2016 (section 4.2): ``depth = 6n + 2``
  layers (ResNet-20: n = 3, 269,722 parameters), or its plain twin without the skips.

Both are written in the terms the chapter measures: every value that enters a ReLU
(after batch norm, when there is one) is sown into the ``intermediates`` collection
(``relu_01``, ... in the MLP; ``relu_stem``, ``<block>/relu_a``, ``<block>/relu_b`` in the
ResNet), so a loss function can log each layer's mean and standard deviation; the kernels
(``dense_01``, ...; ``conv_stem``, ``<block>/conv_a``, ...) give per-layer gradient norms.

Shapes: B batch, D input features, W width, H x W' pixels, C channels, K classes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

BN_MOMENTUM = 0.9  # running averages: new = 0.9 * old + 0.1 * batch (Flax's ImageNet example uses 0.9)


def layer_index(index: int, depth: int) -> str:
    """``"01"``, ``"02"``, ...: ``index`` zero-padded to two digits (more when ``depth`` needs them)."""
    return f"{index:0{max(2, len(str(depth)))}d}"


class DeepMLP(nn.Module):
    """``x[B, ...] -> logits[B, K]``: ``depth`` Dense layers of width ``width``.

    Layer 1 maps the flattened input to ``width``; each later layer ``l`` reads the ReLU of
    the (batch-normalised) output of layer ``l - 1``::

        x_1 = Dense_1(x)                                   (parameters dense_01, ...)
        plain:    x_l = Dense_l(relu(BN_{l-1}(x_{l-1})))
        residual: x_l = x_{l-1} + Dense_l(relu(BN_{l-1}(x_{l-1})))      (l = 2 .. depth)
        logits = Dense_head(relu(BN_depth(x_depth)))

    (``BN`` is the identity without batch norm.) The residual form is the pre-activation
    block of He et al. 2016b with one Dense layer per branch: the path from the loss back to
    layer 1 through the skips has no weights on it. Every kernel starts LeCun-normal
    (variance ``1 / fan_in``, Flax's default), except that with ``scale_residual_init`` each
    residual branch starts ``1 / sqrt(depth)`` smaller (variance ``1 / (fan_in * depth)``), as
    GPT-2 and this repository's Transformer do: ``depth`` branches added to one stream then
    grow its variance by ``(1 + 1 / (2 depth))`` per layer (about ``e^0.5`` in all) instead of
    ``1.5``x per layer (``1.5^29`` at depth 30).

    Attributes:
      depth: Dense layers before the output layer (>= 1).
      width: width W of every layer.
      num_classes: K.
      residual: add each layer's output to its input (layers 2 .. depth).
      batch_norm: batch-normalise each layer's output before its ReLU (running statistics in
        the ``batch_stats`` collection; ``train=True`` uses and updates the batch's).
      scale_residual_init: see above (residual nets only).
    """

    depth: int
    width: int = 128
    num_classes: int = 10
    residual: bool = False
    batch_norm: bool = False
    scale_residual_init: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Args: ``x`` ``[B, ...]`` (flattened to ``[B, D]``); ``train``: batch statistics (and
        their update) in batch norm. Returns ``[B, K]``."""
        if self.depth < 1:
            raise ValueError(f"DeepMLP needs depth >= 1, got {self.depth}.")
        x_BW = nn.Dense(self.width, name=f"dense_{layer_index(1, self.depth)}")(x.reshape(x.shape[0], -1))
        branch_init = nn.initializers.lecun_normal()
        if self.residual and self.scale_residual_init:
            branch_init = nn.initializers.variance_scaling(1.0 / self.depth, "fan_in", "truncated_normal")
        for layer in range(1, self.depth + 1):
            z_BW = self._pre_activation(x_BW, layer, train)
            if layer == self.depth:
                return nn.Dense(self.num_classes, name="head")(nn.relu(z_BW))
            h_BW = nn.Dense(self.width, kernel_init=branch_init,
                            name=f"dense_{layer_index(layer + 1, self.depth)}")(nn.relu(z_BW))
            x_BW = x_BW + h_BW if self.residual else h_BW

    def _pre_activation(self, x_BW: jax.Array, layer: int, train: bool) -> jax.Array:
        """What the ReLU after ``layer`` sees: ``BN(x)`` or ``x``; sown as ``relu_<layer>``."""
        index = layer_index(layer, self.depth)
        if self.batch_norm:
            x_BW = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, name=f"bn_{index}")(x_BW)
        self.sow("intermediates", f"relu_{index}", x_BW)
        return x_BW


def shortcut_a(x_BHWC: jax.Array, channels: int, stride: int) -> jax.Array:
    """He et al.'s option A shortcut: subsample by ``stride``, zero-pad the channels up to ``channels``
    (no parameters). ``[B, H, W, C] -> [B, H / stride, W / stride, channels]``."""
    x_BHWC = x_BHWC[:, ::stride, ::stride, :]
    extra = channels - x_BHWC.shape[-1]
    return jnp.pad(x_BHWC, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2))) if extra else x_BHWC


def conv_bn(x: jax.Array, channels: int, stride: int, batch_norm: bool, train: bool, name: str) -> jax.Array:
    """A 3x3 conv named ``conv_<name>`` (no bias when batch norm follows), then batch norm ``bn_<name>``.

    Call it inside a compact module's ``__call__``: the layers are that module's children.
    """
    x = nn.Conv(channels, (3, 3), strides=(stride, stride), padding="SAME", use_bias=not batch_norm,
                kernel_init=nn.initializers.he_normal(), name=f"conv_{name}")(x)
    if batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, name=f"bn_{name}")(x)
    return x


class BasicBlock(nn.Module):
    """Two 3x3 conv layers: ``relu(BN(conv_b(relu(BN(conv_a(x))))) + shortcut(x))`` (shortcut
    dropped in the plain net). ``[B, H, W, C] -> [B, H / stride, W / stride, channels]``.

    The inputs of its two ReLUs are sown as ``intermediates`` ``relu_a`` and ``relu_b``.
    """

    channels: int
    stride: int = 1
    residual: bool = True
    batch_norm: bool = True

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        z = conv_bn(x, self.channels, self.stride, self.batch_norm, train, "a")
        self.sow("intermediates", "relu_a", z)
        z = conv_bn(nn.relu(z), self.channels, 1, self.batch_norm, train, "b")
        if self.residual:
            z = z + shortcut_a(x, self.channels, self.stride)
        self.sow("intermediates", "relu_b", z)
        return nn.relu(z)


class ResNet(nn.Module):
    """The CIFAR ResNet: ``image[B, H, W, C] -> logits[B, K]``, ``depth = 6n + 2`` layers.

    A 3x3 conv to ``width`` channels; three stages of ``n`` basic blocks at ``width``,
    ``2 width`` and ``4 width`` channels (the first block of stages 2 and 3 halves H and W
    with stride 2; the shortcut subsamples and zero-pads, option A); global average pooling
    and a Dense output layer. Kernels start He-normal, as in the paper. ``ResNet(20)`` is
    ResNet-20 (269,722 parameters with batch norm); ``residual=False`` is its plain twin.

    Attributes:
      depth: 6n + 2 (8, 14, 20, 32, 44, 56, 110, ...).
      width: channels of the first stage (16 in the paper).
      num_classes: K.
      residual: the skip connections.
      batch_norm: batch norm after every conv.
    """

    depth: int = 20
    width: int = 16
    num_classes: int = 10
    residual: bool = True
    batch_norm: bool = True

    @nn.compact
    def __call__(self, x_BHWC: jax.Array, *, train: bool = False) -> jax.Array:
        if self.depth < 8 or (self.depth - 2) % 6:
            raise ValueError(f"ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {self.depth}.")
        n = (self.depth - 2) // 6
        x = conv_bn(x_BHWC, self.width, 1, self.batch_norm, train, "stem")
        self.sow("intermediates", "relu_stem", x)
        x = nn.relu(x)
        for stage in range(3):
            for b in range(n):
                stride = 2 if stage > 0 and b == 0 else 1
                x = BasicBlock(self.width * 2 ** stage, stride, self.residual, self.batch_norm,
                               name=f"stage{stage + 1}_block{b + 1}")(x, train=train)
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.num_classes, name="head")(x)
