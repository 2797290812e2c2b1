"""Labelled image datasets by name, and the check that a split holds the images it should.

* ``mnist``: TFDS when prepared, else the 5,000 embedded digits (:mod:`p2t_jax.data.mnist`).
* ``fashion_mnist``, ``cifar10``: TFDS only, when prepared in the TFDS data dir
  (``tfds build cifar10``); nothing here downloads.

Every dataset gives ``{"train", "test"}`` :class:`ImageRecords` of ``uint8[N, H, W, C]``
images (shape :data:`IMAGE_SHAPES`) and ``int32[N]`` labels in ``0 .. NUM_CLASSES - 1``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from p2t_jax.configuration import ConfigError
from p2t_jax.data import cache, mnist, tfds_source
from p2t_jax.data.images import ImageRecords

IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": mnist.IMAGE_SHAPE,
    "fashion_mnist": mnist.IMAGE_SHAPE,
    "cifar10": (32, 32, 3),
}
NAMES = tuple(IMAGE_SHAPES)
NUM_CLASSES = 10  # every dataset above has ten classes


def load_splits(source: str = "auto", name: str = "mnist", data_dir: str | None = None
                ) -> tuple[dict[str, ImageRecords], str]:
    """(``{"train", "test"}`` records, the name of the source used) of dataset ``name``.

    Args:
      source: ``"tfds"`` (prepared TFDS only), ``"embedded"`` (MNIST only) or ``"auto"``
        (TFDS when prepared, else the embedded digits for MNIST).
      name: one of :data:`NAMES`.
      data_dir: the TFDS data dir (None: TFDS's default).

    Raises:
      DataUnavailableError: the dataset cannot be had here (one sentence saying what to do).
    """
    if name not in IMAGE_SHAPES:
        raise cache.DataUnavailableError(f"image dataset '{name}' is not one of {', '.join(NAMES)}.")
    if name in mnist.TFDS_NAMES:
        return mnist.load_splits(source, name, data_dir)
    if source == "embedded":
        raise cache.DataUnavailableError(
            f"the embedded source holds MNIST digits only, not {name}; use --config.data.source=tfds with {name} "
            f"prepared (`tfds build {name}`).")
    splits = tfds_source.prepared_image_splits(name, data_dir)
    if splits is None:
        raise tfds_source.not_prepared(name)
    return splits, f"tfds:{name}"


def check_splits(splits: Mapping[str, ImageRecords], name: str, num_classes: int) -> None:
    """Every split must hold ``IMAGE_SHAPES[name]`` images and labels in ``0 .. num_classes - 1``.

    Raises:
      ConfigError: one sentence naming the split and what is wrong (shape, channels, a label).
    """
    expected = IMAGE_SHAPES[name]
    for split, records in splits.items():
        shape = tuple(records.images.shape[1:])
        if shape != expected:
            what = "channels" if shape[:2] == expected[:2] else "shape"
            raise ConfigError(
                f"the '{split}' images are {list(shape)} (height, width, channels) but {name} images are "
                f"{list(expected)}: wrong {what}; give {name}-shaped images or set data.name to their dataset.")
        if len(records):
            low, high = int(np.min(records.labels)), int(np.max(records.labels))
            if low < 0 or high >= num_classes:
                bad = low if low < 0 else high
                raise ConfigError(f"the '{split}' split holds label {bad}, outside 0 .. {num_classes - 1} "
                                  f"(config key 'model.num_classes' is {num_classes}).")
