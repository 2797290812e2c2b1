"""Labelled image splits and deterministic, resumable mini-batches over them.

A split is held as two arrays (``images`` ``uint8[N, H, W, C]``, ``labels`` ``int32[N]``)
and read as TFDS-style records (``{"image": uint8[H, W, C], "label": int}``), so a
prepared TFDS split and an embedded source look the same to the rest of the code.

Training batches follow epochs: epoch ``e`` visits the training examples in the order
``numpy.random.default_rng((seed, e)).permutation(N)``, ``batch_size`` at a time (the last
``N % batch_size`` examples of each epoch's order are skipped). Batch ``step`` is therefore
a function of ``(seed, step)`` alone, the same in a fresh run and a resumed one, and the
data position a checkpoint needs is just the step. Optional augmentation (random crops from
zero padding, horizontal flips; the CIFAR recipe of He et al. 2016) draws from
``numpy.random.default_rng((seed, AUGMENT_STREAM, step))``, so it is deterministic too.
"""

from __future__ import annotations

import collections.abc
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

AUGMENT_STREAM = 0xA06  # keeps the augmentation's random stream apart from the epoch orders



class ImageRecords(collections.abc.Sequence):
    """One split of labelled images, as arrays and as records.

    Args:
      images: ``uint8[N, H, W, C]``.
      labels: integer ``[N]`` (stored as int32).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8[N, H, W, C], got {images.dtype}{list(images.shape)}.")
        if labels.shape != images.shape[:1]:
            raise ValueError(f"labels must be [N] with N = {images.shape[0]}, got shape {labels.shape}.")
        self.images = images
        self.labels = labels.astype(np.int32)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ImageRecords(self.images[index], self.labels[index])
        return {"image": self.images[index], "label": int(self.labels[index])}

    def take(self, indices: np.ndarray) -> ImageRecords:
        """The examples at ``indices`` (in that order)."""
        return ImageRecords(self.images[indices], self.labels[indices])

    @classmethod
    def from_records(cls, records: Sequence[Mapping], chunk: int = 1024) -> ImageRecords:
        """Reads every record of a random-access source (e.g. ``tfds.data_source``) into arrays."""
        n = len(records)
        if n == 0:
            raise ValueError("an image split needs at least one record.")
        getitems = getattr(records, "__getitems__", None)
        images, labels = [], []
        for start in range(0, n, chunk):
            idx = list(range(start, min(n, start + chunk)))
            try:  # batched reads where the source has them (ArrayRecord does)
                rows = getitems(idx) if getitems is not None else None
            except TypeError:  # e.g. a mocked source whose __getitems__ cannot be called
                getitems, rows = None, None
            if rows is None:
                rows = [records[i] for i in idx]
            images.extend(np.asarray(r["image"], np.uint8) for r in rows)
            labels.extend(int(r["label"]) for r in rows)
        images_NHWC = np.stack(images)
        if images_NHWC.ndim == 3:  # records without a channel axis
            images_NHWC = images_NHWC[..., None]
        return cls(images_NHWC, np.asarray(labels, np.int32))


def split_off(records: ImageRecords, size: int, seed: int) -> tuple[ImageRecords, ImageRecords]:
    """Holds ``size`` random examples out of ``records`` (e.g. a validation split from train).

    Returns:
      (the rest, the held-out examples), both in a fixed order drawn from ``seed``.
    """
    if not 0 < size < len(records):
        raise ValueError(f"cannot hold out {size} of {len(records)} examples.")
    order = np.random.default_rng((seed, 0x5E1)).permutation(len(records))
    return records.take(np.sort(order[size:])), records.take(np.sort(order[:size]))


def to_batch(records: ImageRecords, indices: np.ndarray | slice) -> dict[str, np.ndarray]:
    """``{"image": float32[B, H, W, C] in [0, 1], "label": int32[B]}`` for the examples at ``indices``."""
    return {"image": records.images[indices].astype(np.float32) / 255.0, "label": records.labels[indices]}


def augment(images_BHWC: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random ``H x W`` crops of the images zero-padded by ``pad`` pixels, each flipped left-right
    with probability 1/2: ``[B, H, W, C] -> [B, H, W, C]`` (same dtype)."""
    B, H, W, _ = images_BHWC.shape
    padded = np.pad(images_BHWC, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    top, left = rng.integers(0, 2 * pad + 1, size=(2, B))
    flip = rng.random(B) < 0.5
    rows = top[:, None] + np.arange(H)[None, :]  # [B, H]
    cols = left[:, None] + np.where(flip[:, None], np.arange(W)[::-1], np.arange(W))  # [B, W]
    return padded[np.arange(B)[:, None, None], rows[:, :, None], cols[:, None, :]]


def largest_divisor_at_most(n: int, k: int) -> int:
    """The largest divisor of ``n`` that is ``<= k`` (so that batches of it tile ``n`` exactly)."""
    return max(d for d in range(1, min(n, k) + 1) if n % d == 0)


class ImageBatches:
    """Epoch-shuffled training batches and full passes for evaluation.

    Args:
      splits: ``{"train": ImageRecords, ...}`` (e.g. ``"test"``, ``"validation"``).
      batch_size: examples per training batch; at most the training split's size.
      seed: the data seed (the epoch orders depend on it alone).
      eval_split: the split :meth:`eval_batches` reads by default.
      eval_batch_size: largest evaluation batch; the size used is the largest divisor of the
        split's length not above it, so every example counts once and every batch equally.
      augment: training batches get :func:`augment` (evaluation batches never do).
    """

    def __init__(self, splits: Mapping[str, ImageRecords], batch_size: int, seed: int,
                 eval_split: str = "test", eval_batch_size: int = 1000, augment: bool = False):
        if "train" not in splits:
            raise ValueError(f"image batches need a 'train' split, got {', '.join(splits)}.")
        if eval_split not in splits:
            raise ValueError(f"eval split '{eval_split}' is not one of {', '.join(splits)}.")
        if not 0 < batch_size <= len(splits["train"]):
            raise ValueError(f"batch size {batch_size} must be between 1 and the {len(splits['train'])} "
                             f"training examples.")
        self.splits = dict(splits)
        self.batch_size = batch_size
        self.seed = seed
        self.eval_split = eval_split
        self.eval_batch_size = eval_batch_size
        self.augment = augment
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its permutation), the last one drawn

    @property
    def num_train(self) -> int:
        return len(self.splits["train"])

    @property
    def steps_per_epoch(self) -> int:
        """Full batches in one epoch: ``num_train // batch_size``."""
        return self.num_train // self.batch_size

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of the training examples in ``epoch``: ``int64[num_train]``."""
        if self._order is None or self._order[0] != epoch:
            self._order = (int(epoch), np.random.default_rng((self.seed, int(epoch))).permutation(self.num_train))
        return self._order[1]

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of training batch ``step``."""
        return divmod(int(step), self.steps_per_epoch)

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        """Training batch number ``step``: ``image`` ``float32[B, H, W, C]``, ``label`` ``int32[B]``."""
        epoch, index = self.position(step)
        indices = self.permutation(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        train = self.splits["train"]
        if not self.augment:
            return to_batch(train, indices)
        rng = np.random.default_rng((self.seed, AUGMENT_STREAM, int(step)))
        return {"image": augment(train.images[indices], rng).astype(np.float32) / 255.0, "label": train.labels[indices]}

    def eval_batches(self, split: str | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Every example of ``split`` (default: ``eval_split``) once, in order, in equal batches."""
        records = self.splits[split or self.eval_split]
        size = largest_divisor_at_most(len(records), self.eval_batch_size)
        for start in range(0, len(records), size):
            yield to_batch(records, slice(start, start + size))
