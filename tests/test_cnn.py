"""Chapter 6: the CNN (exact parameter counts, forward pass against NumPy), image datasets through
TFDS (mock data), the checks on images and labels, and the experiment end to end."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import load_experiment, run_experiment_smoke
from flax import linen as nn

from p2t_jax.chapters import convolution
from p2t_jax.configuration import ConfigError, apply_overrides, load_config
from p2t_jax.data import image_datasets
from p2t_jax.data.cache import DataUnavailableError
from p2t_jax.data.images import ImageBatches, ImageRecords, augment
from p2t_jax.models.cnn import CNN, max_pool_2x2, pooled_size
from p2t_jax.tasks import image_classification as ic


def _conv_same(x_BHWC, k_HWIF, b_F):
    """Cross-correlation with zero padding (what a conv layer computes), by explicit loops."""
    kh, kw = k_HWIF.shape[:2]
    B, H, W, _ = x_BHWC.shape
    padded = np.pad(x_BHWC, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    out = np.zeros((B, H, W, k_HWIF.shape[-1]))
    for i in range(H):
        for j in range(W):
            patch = padded[:, i:i + kh, j:j + kw, :]  # [B, kh, kw, C]
            out[:, i, j, :] = np.einsum("bhwc,hwcf->bf", patch, k_HWIF) + b_F
    return out


def _max_pool(x_BHWC):
    B, H, W, C = x_BHWC.shape
    x = x_BHWC[:, :H // 2 * 2, :W // 2 * 2]
    return x.reshape(B, H // 2, 2, W // 2, 2, C).max(axis=(2, 4))


def test_cnn_parameters_are_counted_exactly():
    model = CNN(features=(32, 64), num_classes=10)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    chex.assert_trees_all_equal_shapes(params, {
        "conv_0": {"kernel": jnp.zeros((3, 3, 1, 32)), "bias": jnp.zeros(32)},
        "conv_1": {"kernel": jnp.zeros((3, 3, 32, 64)), "bias": jnp.zeros(64)},
        "dense_0": {"kernel": jnp.zeros((7 * 7 * 64, 10)), "bias": jnp.zeros(10)}})
    assert sum(x.size for x in jax.tree.leaves(params)) == 320 + 18_496 + 31_370 == 50_186
    config = load_config("configs/mnist_cnn.py")
    assert convolution.parameter_counts(config, (28, 28, 1)) == {"parameters": 50_186, "first_layer_weights": 288}
    apply_overrides(config, ["model.name=mlp", "model.hidden=(128,)"])
    assert convolution.parameter_counts(config, (28, 28, 1)) == {"parameters": 101_770, "first_layer_weights": 100_352}
    apply_overrides(config, ["model.name=cnn", "model.conv_features=(8, 16)", "model.hidden=(32,)", "model.kernel_size=5"])
    # conv 5x5x3x8 + 8, conv 5x5x8x16 + 16, dense 8*8*16 -> 32, dense 32 -> 10 on 32x32x3 images
    assert convolution.parameter_counts(config, (32, 32, 3)) == {
        "parameters": 608 + 3_216 + 32_800 + 330, "first_layer_weights": 600}


def test_cnn_forward_equals_numpy_convolution_relu_pool_dense():
    model = CNN(features=(3, 4), num_classes=5, hidden=(6,))
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 7, 9, 2))  # odd sides: pooling rounds down
    variables = jax.jit(model.init)(jax.random.PRNGKey(2), x)
    p = jax.tree.map(np.asarray, variables["params"])
    h = np.asarray(x, np.float64)
    for i in range(2):
        h = _max_pool(np.maximum(_conv_same(h, p[f"conv_{i}"]["kernel"], p[f"conv_{i}"]["bias"]), 0))
    assert h.shape == (2, pooled_size(7, 2), pooled_size(9, 2), 4) == (2, 1, 2, 4)
    h = np.maximum(h.reshape(2, -1) @ p["dense_0"]["kernel"] + p["dense_0"]["bias"], 0)
    expected = h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"]
    np.testing.assert_allclose(jax.jit(model.apply)(variables, x), expected, rtol=1e-4, atol=1e-5)
    maps = convolution.feature_maps(model, variables, np.asarray(x[0]))
    assert list(maps) == ["relu_0", "pool_0", "relu_1", "pool_1"]
    assert maps["relu_0"].shape == (7, 9, 3) and maps["pool_0"].shape == (3, 4, 3) and maps["pool_1"].shape == (1, 2, 4)


@pytest.mark.parametrize("shape", [(2, 8, 6, 3), (2, 7, 9, 2)])
def test_max_pool_equals_flax_max_pool_values_and_gradients(shape):
    x = jax.random.normal(jax.random.PRNGKey(3), shape)  # continuous values: no ties inside a window
    cotangent = jax.random.normal(jax.random.PRNGKey(4), (shape[0], shape[1] // 2, shape[2] // 2, shape[3]))

    def pooled(pool):
        return jax.jit(lambda x: jax.vjp(pool, x))(x)

    (ours, back), (flax_ref, flax_back) = pooled(max_pool_2x2), pooled(lambda x: nn.max_pool(x, (2, 2), (2, 2)))
    chex.assert_trees_all_equal(ours, flax_ref)
    chex.assert_trees_all_equal(jax.jit(back)(cotangent), jax.jit(flax_back)(cotangent))


def test_cifar10_through_tfds_mock_data_and_the_task():
    with tfds.testing.mock_data(num_examples=80):
        splits, source = image_datasets.load_splits("tfds", "cifar10")
        config = load_config("configs/cifar10_resnet.py:smoke")
        task, batches, config = ic.build_with_batches(config)
    assert source == "tfds:cifar10" and task.meta["data_source"] == "tfds:cifar10"
    chex.assert_shape(splits["train"].images, (80, 32, 32, 3))
    assert splits["test"].labels.min() >= 0 and splits["test"].labels.max() < 10
    batch = batches.train_batch(0)
    chex.assert_shape(batch["image"], (16, 32, 32, 3))
    assert batch["image"].dtype == np.float32 and 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0


def test_datasets_that_are_not_here_say_so(tmp_path):
    with pytest.raises(DataUnavailableError, match="TFDS cifar10 is not prepared.*tfds build cifar10"):
        image_datasets.load_splits("auto", "cifar10", data_dir=str(tmp_path))
    with pytest.raises(DataUnavailableError, match="embedded source holds MNIST digits only"):
        image_datasets.load_splits("embedded", "cifar10")
    with pytest.raises(DataUnavailableError, match="not one of mnist, fashion_mnist, cifar10"):
        image_datasets.load_splits("tfds", "imagenet")


def _records(n, shape=(28, 28, 1), labels=None, seed=0):
    rng = np.random.default_rng(seed)
    return ImageRecords(rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
                        np.arange(n) % 10 if labels is None else labels)


@pytest.mark.parametrize("splits, message", [
    ({"train": _records(64, (28, 28, 3)), "test": _records(16)}, r"'train' images are \[28, 28, 3\].*wrong channels"),
    ({"train": _records(64), "test": _records(16, (32, 32, 1))}, r"'test' images are \[32, 32, 1\].*wrong shape"),
    ({"train": _records(64, labels=np.arange(64) % 12), "test": _records(16)}, r"label 11, outside 0 \.\. 9"),
    ({"train": _records(64), "test": _records(16, labels=-np.ones(16, int))}, r"'test' split holds label -1"),
])
def test_bad_images_and_labels_get_one_sentence(splits, message):
    config = load_config("configs/mnist_cnn.py:smoke")
    apply_overrides(config, ["data.train_size=0"])
    with pytest.raises(ConfigError, match=message):
        ic.build_with_batches(config, splits=splits)


@pytest.mark.parametrize("override, message", [
    ("model.conv_features=(4, 4, 4, 4, 4)", "shrink 28x28 images to nothing; use at most 4"),
    ("model.conv_features=()", "non-empty tuple of positive channel counts"),
    ("model.kernel_size=0", "'model.kernel_size' must be a positive integer"),
    ("model.dropout_rate=0.5", "used by the mlp only"),
    ("model.name=transformer", "'model.name' must be one of mlp, cnn, deep_mlp, resnet"),
    ("data.name=svhn", "'data.name' must be one of mnist, fashion_mnist, cifar10"),
])
def test_bad_model_configs_get_one_sentence(override, message):
    config = load_config("configs/mnist_cnn.py")
    apply_overrides(config, [override])
    with pytest.raises(ConfigError, match=message):
        ic.validate(config)


def test_augmentation_crops_and_flips_deterministically():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, (6, 8, 8, 3), dtype=np.uint8)  # no zeros: padding shows as 0
    out = augment(images, np.random.default_rng(5), pad=2)
    again = augment(images, np.random.default_rng(5), pad=2)
    chex.assert_trees_all_equal(out, again)
    assert out.shape == images.shape and out.dtype == np.uint8
    draws = np.random.default_rng(5)
    top, left = draws.integers(0, 5, size=(2, 6))
    flip = draws.random(6) < 0.5
    for b in range(6):  # numpy reference: pad, crop at (top, left), flip
        padded = np.pad(images[b], ((2, 2), (2, 2), (0, 0)))
        crop = padded[top[b]:top[b] + 8, left[b]:left[b] + 8]
        np.testing.assert_array_equal(out[b], crop[:, ::-1] if flip[b] else crop)
    batches = ImageBatches({"train": ImageRecords(images, np.arange(6) % 10), "test": ImageRecords(images, np.zeros(6))},
                           batch_size=3, seed=1, augment=True)
    chex.assert_trees_all_equal(batches.train_batch(4), batches.train_batch(4))  # a function of (seed, step)
    plain = ImageBatches(batches.splits, batch_size=3, seed=1)
    assert not np.array_equal(batches.train_batch(4)["image"], plain.train_batch(4)["image"])
    chex.assert_trees_all_equal(batches.train_batch(4)["label"], plain.train_batch(4)["label"])
    chex.assert_trees_all_equal(next(batches.eval_batches()), next(plain.eval_batches()))  # evaluation: never


@pytest.mark.slow
def test_experiment_smoke(tmp_path, capsys):
    results = run_experiment_smoke("06_cnn.py", "configs/mnist_cnn.py:smoke", tmp_path, capsys)
    assert {"filters.png", "feature_maps.png", "accuracy_vs_parameters.png"} <= set(results["figures"])
    cnn, mlp = results["summary"]["cnn"], results["summary"]["mlp"]
    assert cnn["first_layer_weights"] == 3 * 3 * 8 and mlp["first_layer_weights"] == 784 * 16
    assert cnn["test_accuracy"]["n"] == mlp["test_accuracy"]["n"] == 3
    assert len(results["rows"]) == 6 + 1
    claims = results["claims"]
    assert claims["cnn_beats_mlp"]["passed"] and "(72 vs 12,544)" in claims["far_fewer_first_layer_weights"]["statement"]


@pytest.mark.parametrize("argv, message", [
    (["--config.model.conv_features=(4, 4, 4, 4, 4)"], "shrink 28x28 images to nothing"),
    (["--config.experiment.seeds=2"], "must be at least 3"),
    (["--config.data.name=cifar10", "--config.data.source=tfds", "--config.data.tfds_data_dir=TMP"],
     "TFDS cifar10 is not prepared"),
])
def test_experiment_bad_input_is_one_sentence_exit_2_and_writes_nothing(argv, message, tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = [a.replace("TMP", str(tmp_path)) for a in argv]
    status = load_experiment("06_cnn.py").cli(["--workdir", str(workdir), "--config", "configs/mnist_cnn.py:smoke"]
                                              + argv)
    err = capsys.readouterr().err
    assert status == 2 and message in err and err.count("\n") == 1
    assert not workdir.exists()


@pytest.mark.parametrize("config, overrides, message", [
    ("cifar10_resnet.py", ["--config.data.tfds_data_dir=TMP"], "TFDS cifar10 is not prepared"),
    ("deep_nets.py:smoke", ["--config.model.depth=0"], "'model.depth' must be an integer >= 1"),
    ("cifar10_resnet.py", ["--config.model.depth=21"], "must be 6n + 2"),
    ("mnist_cnn.py:smoke", ["--config.model.num_classes=5"], "holds label 9, outside 0 .. 4"),
    ("mnist_cnn.py:smoke", ["--config.model.conv_features=(4, 4, 4, 4, 4)"], "shrink 28x28 images to nothing"),
])
def test_p2t_train_bad_input_is_one_sentence_exit_2_and_writes_nothing(config, overrides, message, repo_root,
                                                                        tmp_path, capsys):
    from p2t_jax.cli import main

    workdir = tmp_path / "run"
    overrides = [o.replace("TMP", str(tmp_path / "no_tfds")) for o in overrides]
    code = main(["train", "--config", f"{repo_root}/configs/{config}", "--workdir", str(workdir), "--no-progress"]
                + overrides)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not workdir.exists()
