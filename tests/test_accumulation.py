"""Gradient accumulation (``train.grad_accum_steps``): K microbatches scanned inside the one step
equal the whole batch, on one device and sharded, with batch norm and weighted losses; resume exact."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import PASSAGE
from flax import linen as nn

from p2t_jax.configuration import ConfigError, apply_overrides, load_config
from p2t_jax.data import shakespeare
from p2t_jax.parallel.partitioning import make_partitioner
from p2t_jax.tasks import language_model
from p2t_jax.training.loop import check_run_config, create_state, train_and_evaluate
from p2t_jax.training.state import TrainState
from p2t_jax.training.steps import LOSS_WEIGHT, accumulated_gradients, make_train_step, split_microbatches

SGD = optax.sgd(0.5)  # updates linear in the gradients: equal gradients give equal parameters


def _embedding_norm(grads):
    return {"embed_grad_norm": optax.tree.norm(grads["token_embed"])}


def _lm(overrides=()):
    config = apply_overrides(load_config("shakespeare:smoke"), ["train.batch_size=16", *overrides])
    return config, language_model.make_task(config)


def test_microbatches_take_every_kth_row():
    batch = {"x": np.arange(12).reshape(6, 2), "y": np.arange(6)}
    micro = split_microbatches(batch, 3)
    np.testing.assert_array_equal(micro["y"], [[0, 3], [1, 4], [2, 5]])
    np.testing.assert_array_equal(micro["x"][1], [[2, 3], [8, 9]])


@pytest.fixture(scope="module")
def whole_batch_step():
    """The K=1 step of the smoke language model on batch 0 of 16 rows: (config, task, state, new state, metrics)."""
    with pytest.MonkeyPatch.context() as mp:
        texts = {"train": PASSAGE * 40, "validation": PASSAGE * 4}
        mp.setattr(shakespeare, "load_texts", lambda source="auto", data_dir=None: (dict(texts), "test:passage"))
        config, task = _lm()
        state = create_state(task.init_variables, config, SGD)
        step = jax.jit(make_train_step(task.loss_fn, grad_metrics=_embedding_norm))
        new_state, metrics = step(state, task.train_batch(0))
        yield config, task, state, new_state, metrics


def test_four_microbatches_equal_the_whole_batch(whole_batch_step):
    config, task, state, ref_state, ref_metrics = whole_batch_step
    step = jax.jit(make_train_step(task.loss_fn, grad_metrics=_embedding_norm, grad_accum_steps=4))
    new_state, metrics = step(state, task.train_batch(0))
    assert int(new_state.step) == 1
    chex.assert_trees_all_close(new_state.params, ref_state.params, atol=1e-6, rtol=1e-5)
    assert set(metrics) == set(ref_metrics) and "embed_grad_norm" in metrics
    for key in ("loss", "accuracy", "grad_norm", "embed_grad_norm", "param_norm", "update_norm"):
        np.testing.assert_allclose(metrics[key], ref_metrics[key], rtol=1e-5, err_msg=key)
    assert float(metrics["update_norm"]) > 0  # the step moved the parameters: the comparison is not vacuous


def test_accumulation_on_a_sharded_mesh_keeps_the_batch_sharding(whole_batch_step):
    """Data x FSDP over the 8 devices; each device holds 2 rows of the batch of 16, one per microbatch."""
    config, task, state, ref_state, ref_metrics = whole_batch_step
    config = apply_overrides(config.copy_and_resolve_references(), ["parallel.mesh_shape=(4,2,1)"])
    partitioner = make_partitioner(config, task.init_variables)
    sharded = partitioner.init_state(lambda: create_state(task.init_variables, config, SGD))
    step = partitioner.jit_train_step(make_train_step(task.loss_fn, grad_metrics=_embedding_norm,
                                                      grad_accum_steps=2), sharded)
    batch = partitioner.batch_readers(task)[0](0)
    compiled = step.lower(sharded, batch).compile()
    assert "all-to-all" not in compiled.as_text()  # no microbatch gathers rows from other devices
    new_state, metrics = compiled(sharded, batch)
    chex.assert_trees_all_close(jax.device_get(new_state.params), ref_state.params, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], ref_metrics["loss"], rtol=1e-5)
    np.testing.assert_allclose(metrics["embed_grad_norm"], ref_metrics["embed_grad_norm"], rtol=1e-5)


def test_weighted_losses_combine_by_their_weights():
    """A loss that is a mean over a varying number of real items (padding left out) reports that
    number; microbatches then weigh by it, and the result is the whole batch's mean."""

    def loss_fn(params, model_state, batch, rng, train):
        err = (batch["x"] @ params["w"] - batch["y"]) ** 2  # [B, T]
        real = batch["real"]
        loss = jnp.sum(err * real) / jnp.sum(real)
        return loss, ({"mse": loss, LOSS_WEIGHT: jnp.sum(real)}, model_state)

    rng = np.random.default_rng(0)
    batch = {"x": rng.normal(size=(8, 5, 3)).astype(np.float32), "y": rng.normal(size=(8, 5)).astype(np.float32),
             "real": (np.arange(5)[None] < np.array([1, 5, 2, 5, 3, 5, 1, 4])[:, None]).astype(np.float32)}
    params, key = {"w": jnp.array([0.3, -0.2, 0.5])}, jax.random.PRNGKey(0)
    whole = accumulated_gradients(loss_fn, 1)(params, {}, batch, key)
    for k in (2, 4, 8):
        loss, metrics, _, grads = jax.jit(accumulated_gradients(loss_fn, k))(params, {}, batch, key)
        np.testing.assert_allclose(loss, whole[0], rtol=1e-6)
        np.testing.assert_allclose(grads["w"], whole[3]["w"], rtol=1e-5)
        assert set(metrics) == {"mse"}  # the weight is not a metric
        np.testing.assert_allclose(metrics["mse"], whole[1]["mse"], rtol=1e-6)
    # an equal-weights average would differ: the microbatches hold different numbers of real items
    assert not np.isclose(np.mean([float(loss_fn(params, {}, {k: v[i::2] for k, v in batch.items()}, key, True)[0])
                                   for i in range(2)]), float(whole[0]), rtol=1e-3)


class _BatchNormNet(nn.Module):
    @nn.compact
    def __call__(self, x, train):
        return nn.Dense(1)(nn.BatchNorm(use_running_average=not train, momentum=0.5)(x))[:, 0]


def test_batch_norm_statistics_thread_through_the_microbatches():
    model = _BatchNormNet()
    x = np.random.default_rng(1).normal(size=(8, 3)).astype(np.float32) * np.array([1.0, 3.0, 0.5], np.float32)
    batch = {"x": x, "y": x.sum(-1)}

    def loss_fn(params, model_state, batch, rng, train):
        out, updates = model.apply({"params": params, **model_state}, batch["x"], train, mutable=["batch_stats"])
        return jnp.mean((out - batch["y"]) ** 2), ({}, dict(updates))

    variables = model.init(jax.random.PRNGKey(0), x, False)
    state = TrainState.create(variables=variables, tx=SGD, rng=jax.random.PRNGKey(1))
    new_state, _ = jax.jit(make_train_step(loss_fn, grad_accum_steps=2))(state, batch)
    # by hand: the running averages updated by rows 0, 2, 4, 6 and then by rows 1, 3, 5, 7
    stats = variables["batch_stats"]
    for rows in (x[0::2], x[1::2]):
        _, updates = model.apply({"params": variables["params"], "batch_stats": stats}, rows, True,
                                 mutable=["batch_stats"])
        stats = updates["batch_stats"]
    chex.assert_trees_all_close(new_state.model_state["batch_stats"], stats, rtol=1e-6)
    assert not np.allclose(stats["BatchNorm_0"]["mean"], variables["batch_stats"]["BatchNorm_0"]["mean"])


def test_a_batch_that_does_not_split_is_refused_in_one_sentence():
    config = apply_overrides(load_config("shakespeare:smoke"), ["train.grad_accum_steps=3"])
    with pytest.raises(ConfigError, match=r"'train.grad_accum_steps' \(3\) must divide 'train.batch_size' \(8\)"):
        check_run_config(config)
    for value in (0, -2):
        apply_overrides(config, [f"train.grad_accum_steps={value}"])
        with pytest.raises(ConfigError, match="must be a positive integer"):
            check_run_config(config)


def test_resume_with_accumulation_and_prefetch_equals_an_uninterrupted_run(tiny_corpus, smoke_config, tmp_path):
    """Six steps of two microbatches with two batches prefetched, versus three + an interruption + three."""
    apply_overrides(smoke_config, ["model.num_layers=1", "model.dropout_rate=0.1", "train.grad_accum_steps=2", "train.prefetch=2",
                                   "train.num_steps=6", "train.checkpoint_every=1000", "train.eval_every=1000",
                                   "train.log_every=1000"])
    full, _ = train_and_evaluate(language_model.make_task(smoke_config), smoke_config, tmp_path / "full",
                                 progress=False)
    task = language_model.make_task(smoke_config)
    original, asked = task.train_batch, []

    def interrupt_at_3(step):
        asked.append(step)
        if step == 3:
            raise KeyboardInterrupt
        return original(step)

    task.train_batch = interrupt_at_3
    with pytest.raises(KeyboardInterrupt):
        train_and_evaluate(task, smoke_config, tmp_path / "split", progress=False)
    # the batch of step 3 was asked for ahead of time, while step 1 ran; the stop came when step 3 was due
    assert asked == [0, 1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "split" / "checkpoints").iterdir()) == ["3"]
    task.train_batch = original
    resumed, summary = train_and_evaluate(task, smoke_config, tmp_path / "split", progress=False)
    assert summary["resumed_from"] == 3
    chex.assert_trees_all_equal(full.params, resumed.params)
    chex.assert_trees_all_equal(full.opt_state, resumed.opt_state)


def test_reorder_task_weighs_its_microbatches_by_their_real_tokens():
    """The seq2seq task's sentences differ in length: its loss reports the real target tokens, and
    two microbatches give the whole batch's loss and gradients (an equal-weights mean would not)."""
    from p2t_jax import tasks
    from p2t_jax.data.words import PAD

    task, config = tasks.build(load_config("configs/reorder.py:smoke"))
    state = create_state(task.init_variables, config)
    # the first batch whose two microbatches (even and odd rows) hold different numbers of real tokens
    batch = next(b for b in map(task.train_batch, range(20))
                 if np.sum(b["target"][0::2] != PAD) != np.sum(b["target"][1::2] != PAD))

    @jax.jit
    def both(params, batch):
        return [accumulated_gradients(task.loss_fn, k)(params, {}, batch, state.rng) for k in (1, 2)]

    (loss, metrics, _, grads), (loss2, metrics2, _, grads2) = both(state.params, batch)
    assert LOSS_WEIGHT not in metrics and set(metrics) == set(metrics2)
    np.testing.assert_allclose(loss2, loss, rtol=1e-5)
    chex.assert_trees_all_close(grads2, grads, atol=1e-7, rtol=1e-4)
