"""Chapter 6's measurements: parameter counts, first-layer weights, feature maps.

Pure functions of a model, its variables and its config; the training itself is the one
loop's (through :func:`p2t_jax.tasks.image_classification.train_or_reuse`).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import linen as nn

from p2t_jax.tasks import image_models


def parameter_counts(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> dict[str, int]:
    """``{"parameters": all trainable numbers, "first_layer_weights": the first layer's kernel}`` of
    the network ``config.model`` names on images of ``image_shape`` (computed abstractly)."""
    model = image_models.make_model(config)
    shapes = jax.eval_shape(lambda rng: model.init(rng, jax.numpy.zeros((1,) + tuple(image_shape)),
                                                   **image_models.mode_kwargs(model, False)),
                            jax.random.PRNGKey(0))["params"]
    first = shapes[image_models.first_layer(config)]["kernel"]
    return {"parameters": sum(math.prod(x.shape) for x in jax.tree.leaves(shapes)),
            "first_layer_weights": math.prod(first.shape)}


@functools.partial(jax.jit, static_argnums=0)
def _apply_sown(model: nn.Module, variables: dict, x_BHWC: jax.Array) -> tuple[jax.Array, Any]:
    """``(logits [B, K], sown intermediates)``; one compilation per model and input shape."""
    logits, state = model.apply(variables, x_BHWC, mutable=["intermediates"])
    return logits, state["intermediates"]


def logits_and_maps(model: nn.Module, variables: dict, image_HWC: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One image through the CNN: its logits ``[K]`` and every map the CNN sows, in the order computed.

    Args:
      model: a :class:`p2t_jax.models.cnn.CNN`.
      variables: ``{"params": ...}``.
      image_HWC: one image ``[H, W, C]`` scaled to [0, 1].

    Returns:
      ``(logits, maps)`` with maps ``{"relu_0": [H, W, F_0], "pool_0": [H/2, W/2, F_0], "relu_1": ...}``
      (each conv's ReLU output and the pooled maps). Compiled once per model and image shape.
    """
    logits, sown = _apply_sown(model, variables, np.asarray(image_HWC, np.float32)[None])
    order = sorted(sown, key=lambda name: (int(name.rsplit("_", 1)[1]), name.startswith("pool")))  # relu_0, pool_0, ...
    return np.asarray(logits[0]), {name: np.asarray(sown[name][0][0]) for name in order}


def feature_maps(model: nn.Module, variables: dict, image_HWC: np.ndarray) -> dict[str, np.ndarray]:
    """The maps of :func:`logits_and_maps`."""
    return logits_and_maps(model, variables, image_HWC)[1]


def summarise_seeds(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max of per-seed results."""
    a = np.asarray(values, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max()), "n": int(len(a))}
