"""Batch norm through the engine: running statistics in TrainState.model_state, updated by the
train step, used by evaluation, checkpointed and resumed exactly, averaged under pmap, and the
global batch's under the sharded jit step (1 vs 8 forced CPU devices)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from p2t_jax.configuration import apply_overrides, load_config
from p2t_jax.data.images import ImageRecords
from p2t_jax.models.resnet import BN_MOMENTUM
from p2t_jax.parallel.partitioning import make_partitioner
from p2t_jax.tasks import image_classification as ic
from p2t_jax.training import pmap_step
from p2t_jax.training.loop import create_state, restore_state, train_and_evaluate
from p2t_jax.training.steps import make_eval_step, make_train_step

EPS = 1e-5  # flax BatchNorm's default epsilon


def _digits(n_train=256, n_test=64, seed=0):
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28, 1)) < 0.3

    def make(n):
        labels = rng.integers(0, 10, n)
        noise = rng.random((n, 28, 28, 1)) < 0.1
        return ImageRecords((np.logical_xor(prototypes[labels], noise) * 255).astype(np.uint8), labels)

    return {"train": make(n_train), "test": make(n_test)}


def _config(*overrides, mesh=None):
    config = load_config("configs/deep_nets.py:smoke")
    apply_overrides(config, ["data.train_size=0", "model.depth=3", "model.width=16", "model.residual=false",
                             "train.batch_size=64", "train.num_epochs=2", "train.log_every=1",
                             "train.eval_every=1000", "train.checkpoint_every=1000", "train.eval_batch_size=64"]
                    + list(overrides))
    if mesh is not None:
        config.parallel.mesh_shape = tuple(mesh)
    return config


@pytest.fixture(scope="module")
def digits():
    return _digits()


def test_the_train_step_updates_running_statistics_and_eval_uses_them(digits):
    task, batches, config = ic.build_with_batches(_config(), splits=digits)
    state = create_state(task.init_variables, config)
    stats = state.model_state["batch_stats"]
    assert set(stats) == {"bn_01", "bn_02", "bn_03"}
    chex.assert_trees_all_equal(stats["bn_01"], {"mean": jnp.zeros(16), "var": jnp.ones(16)})

    batch = batches.train_batch(0)
    new_state, _ = jax.jit(make_train_step(task.loss_fn))(state, batch)
    # Layer 1's output is what bn_01 normalises: recompute it with the old parameters.
    p = state.params["dense_01"]
    x1 = np.asarray(batch["image"]).reshape(64, -1) @ np.asarray(p["kernel"]) + np.asarray(p["bias"])
    new = new_state.model_state["batch_stats"]["bn_01"]
    np.testing.assert_allclose(new["mean"], (1 - BN_MOMENTUM) * x1.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(new["var"], BN_MOMENTUM + (1 - BN_MOMENTUM) * x1.var(0), rtol=1e-5, atol=1e-6)

    # Evaluation normalises with the running averages (and leaves them alone); training with the batch's.
    model = ic.make_model(config)
    variables = {"params": new_state.params, **new_state.model_state}
    _, inter = model.apply(variables, batch["image"], train=False, mutable=["intermediates"])
    q = new_state.params
    x1 = np.asarray(batch["image"]).reshape(64, -1) @ np.asarray(q["dense_01"]["kernel"]) + np.asarray(q["dense_01"]["bias"])
    expected = (x1 - np.asarray(new["mean"])) / np.sqrt(np.asarray(new["var"]) + EPS)
    expected = expected * np.asarray(q["bn_01"]["scale"]) + np.asarray(q["bn_01"]["bias"])
    np.testing.assert_allclose(inter["intermediates"]["relu_01"][0], expected, rtol=1e-4, atol=1e-5)
    _, (_, eval_state) = task.loss_fn(new_state.params, new_state.model_state, batch, new_state.rng, False)
    chex.assert_trees_all_equal(eval_state, new_state.model_state)
    # So an example's evaluation output does not depend on the rest of its batch; its training output does.
    full = model.apply(variables, batch["image"], train=False)
    part = model.apply(variables, batch["image"][:8], train=False)
    np.testing.assert_allclose(full[:8], part, rtol=1e-5, atol=1e-6)
    train_full, _ = model.apply(variables, batch["image"], train=True, mutable=["batch_stats"])
    train_part, _ = model.apply(variables, batch["image"][:8], train=True, mutable=["batch_stats"])
    assert float(jnp.abs(train_full[:8] - train_part).max()) > 1e-3
    eval_metrics = jax.jit(make_eval_step(task.loss_fn))(new_state, batch)
    np.testing.assert_allclose(eval_metrics["cross_entropy"],
                               -jnp.mean(jax.nn.log_softmax(full)[jnp.arange(64), batch["label"]]), rtol=1e-5)


def test_batch_stats_are_checkpointed_and_resume_is_bit_for_bit(digits, tmp_path):
    task, _, config = ic.build_with_batches(_config("model.residual=true"), splits=digits)
    straight, _ = train_and_evaluate(task, config, tmp_path / "straight", progress=False)

    original = task.train_batch

    def interrupt_at_5(step):
        if step == 5:
            raise KeyboardInterrupt
        return original(step)

    task.train_batch = interrupt_at_5
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(task, config, tmp_path / "split", progress=False)
    task.train_batch = original
    saved, _ = restore_state(task.init_variables, config, tmp_path / "split")
    assert int(saved.step) == 5
    assert not np.allclose(saved.model_state["batch_stats"]["bn_02"]["mean"], 0.0)  # the running stats were saved
    resumed, summary = train_and_evaluate(task, config, tmp_path / "split", progress=False)
    assert summary["resumed_from"] == 5
    chex.assert_trees_all_equal(jax.device_get(straight.checkpoint_items()),
                                jax.device_get(resumed.checkpoint_items()))
    restored, _ = restore_state(task.init_variables, config, tmp_path / "split")
    chex.assert_trees_all_equal(restored.model_state, jax.device_get(straight.model_state))


def test_pmap_averages_the_running_statistics_over_devices(digits):
    task, batches, config = ic.build_with_batches(_config(), splits=digits)
    n = jax.local_device_count()
    assert n == 8
    state = create_state(task.init_variables, config)
    batch = batches.train_batch(0)
    shards = pmap_step.split_batch(batch, n)
    new, metrics = pmap_step.make_pmap_train_step(task.loss_fn)(pmap_step.replicate(state), shards)
    stats = jax.device_get(new.model_state)
    chex.assert_trees_all_equal(*[jax.tree.map(lambda x, i=i: x[i], stats) for i in range(n)])  # every copy the same
    # Reference: each device's own step on its rows alone, then the mean of their running statistics.
    step = jax.jit(make_train_step(task.loss_fn))
    own = [step(state, {k: v[i] for k, v in shards.items()})[0].model_state for i in range(n)]
    expected = jax.tree.map(lambda *xs: np.mean(xs, axis=0), *own)
    chex.assert_trees_all_close(pmap_step.unreplicate(stats), expected, atol=1e-6)
    # Each device normalised with its own rows' statistics: not the global batch's.
    global_stats = step(state, batch)[0].model_state
    assert not np.allclose(expected["batch_stats"]["bn_01"]["var"], global_stats["batch_stats"]["bn_01"]["var"],
                           atol=1e-6)


@pytest.fixture(scope="module")
def sharded_runs(digits):
    """``run(mesh_shape) -> (losses, checkpoint items)`` after 4 steps of the sharded jit step, each computed once."""
    cache = {}

    def run(shape):
        if shape not in cache:
            task, _, config = ic.build_with_batches(_config("model.residual=true", mesh=shape), splits=digits)
            partitioner = make_partitioner(config, task.init_variables)
            state = partitioner.init_state(lambda: create_state(task.init_variables, config))
            step = partitioner.jit_train_step(make_train_step(task.loss_fn, grad_metrics=task.grad_metrics), state)
            read = partitioner.batch_readers(task)[0]
            losses = []
            for i in range(4):
                state, metrics = step(state, read(i))
                losses.append(float(metrics["loss"]))
            cache[shape] = losses, jax.device_get(state.checkpoint_items())
        return cache[shape]

    return run


@pytest.mark.parametrize("mesh", [(8, 1, 1), (1, 8, 1)])
def test_sharded_step_uses_the_global_batch_statistics(sharded_runs, mesh):
    """1 device vs 8 (data or fsdp): the same batch_stats, loss and parameters within 1e-5 over 4 steps."""
    (ref_losses, ref), (losses, items) = sharded_runs((1, 1, 1)), sharded_runs(mesh)
    np.testing.assert_allclose(losses, ref_losses, rtol=0, atol=1e-5)
    chex.assert_trees_all_close(items["model_state"], ref["model_state"], atol=1e-5)
    chex.assert_trees_all_close(items["params"], ref["params"], atol=1e-5)
    assert losses[-1] < losses[0]
