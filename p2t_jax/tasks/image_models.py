"""The image classifiers a config can name (``model.name``), and their per-layer measurements.

* ``mlp``      :class:`p2t_jax.models.mlp.MLP` on flattened images (chapters 4-5);
* ``cnn``      :class:`p2t_jax.models.cnn.CNN` (chapter 6);
* ``deep_mlp`` :class:`p2t_jax.models.resnet.DeepMLP`, plain or residual, with or without
               batch norm (chapter 7);
* ``resnet``   :class:`p2t_jax.models.resnet.ResNet`, the CIFAR ResNet-(6n+2) (chapter 7).

The deep models sow the input of every ReLU; :func:`preactivation_stats` turns those into
``preact_mean/<layer>`` and ``preact_std/<layer>`` metrics, and :func:`kernel_grad_norms`
gives ``grad_norm/<layer>`` for every kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

from p2t_jax.configuration import require, require_choice
from p2t_jax.models.cnn import CNN, pooled_size
from p2t_jax.models.mlp import ACTIVATIONS, MLP
from p2t_jax.models.resnet import DeepMLP, ResNet, layer_index

MODELS = ("mlp", "cnn", "deep_mlp", "resnet")
DEEP_MODELS = ("deep_mlp", "resnet")  # these log per-layer gradient norms and pre-activation statistics


def add_model_fields(m: ml_collections.ConfigDict) -> None:
    """Every ``model.*`` field at its default (the MLP of chapter 4)."""
    m.name = "mlp"  # mlp, cnn, deep_mlp or resnet
    m.hidden = (128,)  # mlp: hidden widths; cnn: Dense widths between the last pooling and the output
    m.activation = "relu"  # mlp: sigmoid, tanh, relu, gelu or linear
    m.dropout_rate = 0.0  # mlp: dropout after each hidden layer (training only)
    m.num_classes = 10
    m.conv_features = (32, 64)  # cnn: output channels of each conv -> ReLU -> 2x2 max-pool stage
    m.kernel_size = 3  # cnn: side of the square conv kernels
    m.depth = 30  # deep_mlp: Dense layers before the output; resnet: 6n + 2 layers (20: ResNet-20)
    m.width = 128  # deep_mlp: width of every layer; resnet: channels of the first stage (16 in the paper)
    m.residual = False  # deep_mlp, resnet: skip connections
    m.batch_norm = False  # deep_mlp, resnet: batch norm before every ReLU
    m.scale_residual_init = True  # deep_mlp: residual branches start 1/sqrt(depth) smaller (see models/resnet.py)


def validate_model(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> None:
    """Checks ``config.model`` for images of ``image_shape`` (ConfigError, one sentence)."""
    m = config.model
    require_choice(config, "model.name", MODELS)
    require(isinstance(m.num_classes, int) and m.num_classes >= 2,
            f"config key 'model.num_classes' must be an integer >= 2, got {m.num_classes!r}.")
    hidden = tuple(m.hidden)
    if m.name == "mlp":
        require(len(hidden) > 0 and all(isinstance(w, int) and w > 0 for w in hidden),
                f"config key 'model.hidden' must be a non-empty tuple of positive widths, got {hidden!r}.")
        require_choice(config, "model.activation", ACTIVATIONS)
        require(0.0 <= m.dropout_rate < 1.0,
                f"config key 'model.dropout_rate' must be in [0, 1), got {m.dropout_rate}.")
    else:
        require(m.dropout_rate == 0.0,
                f"config key 'model.dropout_rate' is used by the mlp only; set it to 0 for {m.name}.")
    if m.name == "cnn":
        features = tuple(m.conv_features)
        require(len(features) > 0 and all(isinstance(f, int) and f > 0 for f in features),
                f"config key 'model.conv_features' must be a non-empty tuple of positive channel counts, "
                f"got {features!r}.")
        require(all(isinstance(w, int) and w > 0 for w in hidden),
                f"config key 'model.hidden' must hold positive widths, got {hidden!r}.")
        require(isinstance(m.kernel_size, int) and m.kernel_size >= 1,
                f"config key 'model.kernel_size' must be a positive integer, got {m.kernel_size!r}.")
        side = min(image_shape[:2])
        require(pooled_size(side, len(features)) >= 1,
                f"config key 'model.conv_features' has {len(features)} max-pool stages, which shrink "
                f"{image_shape[0]}x{image_shape[1]} images to nothing; use at most {side.bit_length() - 1}.")
    if m.name == "deep_mlp":
        require(isinstance(m.depth, int) and m.depth >= 1,
                f"config key 'model.depth' must be an integer >= 1 for deep_mlp, got {m.depth!r}.")
        require(isinstance(m.width, int) and m.width >= 1,
                f"config key 'model.width' must be a positive integer, got {m.width!r}.")
    if m.name == "resnet":
        require(isinstance(m.depth, int) and m.depth >= 8 and (m.depth - 2) % 6 == 0,
                f"config key 'model.depth' must be 6n + 2 with n >= 1 (8, 14, 20, 32, ...) for resnet, got {m.depth!r}.")
        require(isinstance(m.width, int) and m.width >= 2 and m.width % 2 == 0,
                f"config key 'model.width' must be an even positive integer for resnet, got {m.width!r}.")


def make_model(config: ml_collections.ConfigDict) -> nn.Module:
    """``image[B, H, W, C] -> logits[B, num_classes]``: the module ``config.model`` names."""
    m = config.model
    if m.name == "mlp":
        return MLP(features=tuple(m.hidden) + (m.num_classes,), activation=m.activation,
                   dropout_rate=m.dropout_rate, flatten=True)
    if m.name == "cnn":
        return CNN(features=tuple(m.conv_features), num_classes=m.num_classes, hidden=tuple(m.hidden),
                   kernel_size=m.kernel_size)
    if m.name == "deep_mlp":
        return DeepMLP(depth=m.depth, width=m.width, num_classes=m.num_classes, residual=m.residual,
                       batch_norm=m.batch_norm, scale_residual_init=m.scale_residual_init)
    if m.name == "resnet":
        return ResNet(depth=m.depth, width=m.width, num_classes=m.num_classes, residual=m.residual,
                      batch_norm=m.batch_norm)
    raise ValueError(f"unknown model '{m.name}'; choose one of {', '.join(MODELS)}.")


def mode_kwargs(model: nn.Module, train: bool) -> dict:
    """The keyword that puts ``model`` in training or evaluation mode (the MLP's is ``deterministic``)."""
    return {"deterministic": not train} if isinstance(model, MLP) else {"train": train}


def first_layer(config: ml_collections.ConfigDict) -> str:
    """The parameter name of the layer that reads the image."""
    m = config.model
    return {"mlp": "dense_0", "cnn": "conv_0", "deep_mlp": f"dense_{layer_index(1, m.depth)}",
            "resnet": "conv_stem"}[m.name]


def named_leaves(tree: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``("a/b/c", leaf)`` for every leaf of nested dicts, in the dicts' own order."""
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, dict) or hasattr(value, "items"):
            yield from named_leaves(value, path)
        else:
            yield path, value


def kernel_grad_norms(grads: Any) -> dict[str, jax.Array]:
    """``{"grad_norm/<layer>": ||dL/dkernel||_2}`` for every kernel (``<layer>`` its module path)."""
    return {f"grad_norm/{path[:-len('/kernel')]}": jnp.linalg.norm(g)
            for path, g in named_leaves(grads) if path.endswith("/kernel")}


def preactivation_stats(intermediates: Any) -> dict[str, jax.Array]:
    """Mean and standard deviation (over batch, positions and units) of every sown ReLU input.

    Args:
      intermediates: the ``intermediates`` collection of a deep model's forward pass, whose
        ``relu_*`` entries (``(x[B, ..., W],)``) are the inputs of its ReLUs.

    Returns:
      ``{"preact_mean/<path>": scalar, "preact_std/<path>": scalar}``.
    """
    stats = {}
    for path, values in named_leaves(intermediates):
        if path.rsplit("/", 1)[-1].startswith("relu"):
            x = values[0] if isinstance(values, tuple) else values
            stats[f"preact_mean/{path}"] = jnp.mean(x)
            stats[f"preact_std/{path}"] = jnp.std(x)
    return stats
