"""Chapter 5's regularisers, and image classification trained through the one loop."""

import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from p2t_jax.configuration import ConfigError, apply_overrides, load_config
from p2t_jax.data.images import ImageRecords
from p2t_jax.models import regularisation as reg
from p2t_jax.optim import chains, scratch
from p2t_jax.tasks import image_classification as ic
from p2t_jax.training.loop import create_state, evaluate, train_and_evaluate
from p2t_jax.training.metrics import read_metrics
from p2t_jax.training.steps import make_eval_step

# --- dropout -------------------------------------------------------------------------------

def _dropout_samples(x, rate, num_keys, fn=reg.dropout):
    keys = jax.random.split(jax.random.PRNGKey(0), num_keys)
    return jax.vmap(lambda k: fn(x, rate, k))(keys)


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_dropout_keeps_the_expected_activation(rate):
    x = jax.random.normal(jax.random.PRNGKey(1), (256,)) + 1.0
    samples = _dropout_samples(x, rate, 4000)
    # Each sample is x / (1 - p) with probability 1 - p, else 0: mean x, std |x| sqrt(p / (1 - p)).
    standard_error = jnp.abs(x) * np.sqrt(rate / (1 - rate)) / np.sqrt(samples.shape[0])
    assert bool(jnp.all(jnp.abs(samples.mean(0) - x) < 5 * standard_error + 1e-6))
    kept = samples != 0
    assert abs(float(kept.mean()) - (1 - rate)) < 0.01
    np.testing.assert_allclose(jnp.where(kept, samples, 0), jnp.where(kept, x / (1 - rate), 0), rtol=1e-6)


def test_the_expectation_test_catches_dropout_without_rescaling():
    rate, x = 0.2, jnp.ones((256,))

    def plain_dropout(x, rate, key):  # the non-inverted form: expectation (1 - p) x
        return jnp.where(jax.random.bernoulli(key, 1 - rate, x.shape), x, 0.0)

    samples = _dropout_samples(x, rate, 4000, plain_dropout)
    standard_error = np.sqrt(rate / (1 - rate)) / np.sqrt(4000)
    assert not bool(jnp.all(jnp.abs(samples.mean(0) - x) < 5 * standard_error))


def test_dropout_is_the_identity_in_evaluation_and_at_rate_zero():
    x = jnp.arange(6.0)
    chex.assert_trees_all_equal(reg.dropout(x, 0.5, jax.random.PRNGKey(0), train=False), x)
    chex.assert_trees_all_equal(reg.dropout(x, 0.0, jax.random.PRNGKey(0)), x)
    with pytest.raises(ValueError):
        reg.dropout(x, 1.0, jax.random.PRNGKey(0))


def test_model_dropout_is_inverted_too():
    """The MLP used by the chapter drops units in training only, keeping the mean logit."""
    config = load_config("configs/mnist_regularisation.py:smoke")
    apply_overrides(config, ["model.dropout_rate=0.5", "model.hidden=(128,)"])
    model = ic.make_model(config)
    images = jax.random.uniform(jax.random.PRNGKey(2), (4, 28, 28, 1))
    variables = model.init(jax.random.PRNGKey(3), images)
    clean = model.apply(variables, images, deterministic=True)
    keys = jax.random.split(jax.random.PRNGKey(4), 1000)
    noisy = jax.jit(jax.vmap(lambda k: model.apply(variables, images, deterministic=False, rngs={"dropout": k})))(keys)
    assert float(jnp.abs(noisy[0] - clean).max()) > 1e-3  # dropout is on in training
    np.testing.assert_allclose(noisy.mean(0), clean, atol=0.1 * float(jnp.abs(clean).max()))


# --- L2 penalty vs decoupled weight decay ---------------------------------------------------

def _problem():
    k = jax.random.split(jax.random.PRNGKey(5), 4)
    params = {"dense_0": {"kernel": jax.random.normal(k[0], (5, 8)), "bias": jnp.ones((8,))},
              "dense_1": {"kernel": jax.random.normal(k[1], (8, 2)), "bias": jnp.zeros((2,))}}
    x, y = jax.random.normal(k[2], (32, 5)), jax.random.normal(k[3], (32, 2))

    def loss(p):
        h = jax.nn.relu(x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
        return jnp.mean((h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"] - y) ** 2)

    return params, loss


def _train(tx, params, loss, steps=50):
    def step(carry, _):
        p, state = carry
        updates, state = tx.update(jax.grad(loss)(p), state, p)
        return (optax.apply_updates(p, updates), state), None

    return jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=steps)[0][0])(params)


def test_l2_penalty_gradient_is_the_weights_and_skips_biases():
    params, _ = _problem()
    grads = jax.grad(reg.l2_penalty)(params)
    chex.assert_trees_all_close(grads["dense_0"]["kernel"], params["dense_0"]["kernel"])
    chex.assert_trees_all_equal(grads["dense_0"]["bias"], jnp.zeros((8,)))


def test_l2_equals_decoupled_decay_for_sgd_but_not_for_adam():
    params, loss = _problem()
    lam, lr = 0.05, 0.05
    with_l2 = lambda p: loss(p) + lam * reg.l2_penalty(p)  # noqa: E731
    decoupled_sgd = optax.chain(optax.add_decayed_weights(lam, mask=chains.decay_mask), scratch.sgd(lr))
    chex.assert_trees_all_close(_train(scratch.sgd(lr), params, with_l2), _train(decoupled_sgd, params, loss),
                                atol=1e-5, rtol=1e-5)
    adam_l2 = _train(scratch.adam(lr), params, with_l2)
    adamw = _train(scratch.adamw(lr, weight_decay=lam, mask=chains.decay_mask), params, loss)
    gap = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(adam_l2), jax.tree.leaves(adamw)))
    assert gap > 1e-2


# --- label smoothing ------------------------------------------------------------------------

def test_label_smoothing_matches_optax():
    logits = jax.random.normal(jax.random.PRNGKey(6), (16, 10))
    labels = jnp.arange(16) % 10
    one_hot = jax.nn.one_hot(labels, 10)
    chex.assert_trees_all_close(reg.smooth_labels(one_hot, 0.1), optax.smooth_labels(one_hot, 0.1))
    assert float(reg.smooth_labels(one_hot, 0.1)[0, 0]) == pytest.approx(0.91)
    expected = optax.softmax_cross_entropy(logits, optax.smooth_labels(one_hot, 0.1)).mean()
    np.testing.assert_allclose(reg.cross_entropy(logits, labels, 0.1), expected, rtol=1e-6)
    np.testing.assert_allclose(reg.cross_entropy(logits, labels),
                               optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), rtol=1e-6)


# --- the task through the loop --------------------------------------------------------------

def _prototype_digits(num_train=300, num_test=100, seed=0):
    """Ten random 28x28 prototypes plus noise: learnable, unlike random labels."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28, 1)) < 0.3

    def make(n):
        labels = rng.integers(0, 10, n)
        flips = rng.random((n, 28, 28, 1)) < 0.15
        images = (np.logical_xor(prototypes[labels], flips) * 255).astype(np.uint8)
        return ImageRecords(images, labels)

    return {"train": make(num_train), "test": make(num_test)}


def _config(*overrides):
    config = load_config("configs/mnist_optimizers.py:smoke")
    apply_overrides(config, ["data.train_size=0", "train.batch_size=30", "train.eval_batch_size=100",
                             "model.hidden=(32,)"] + list(overrides))
    return config


def test_loss_fn_train_and_eval_modes():
    config = _config("model.dropout_rate=0.5", "loss.l2=0.1", "loss.label_smoothing=0.2")
    task, batches, config = ic.build_with_batches(config, splits=_prototype_digits(60, 20))
    params = task.init_variables(jax.random.PRNGKey(0))["params"]
    batch = batches.train_batch(0)
    eval_loss, (metrics, _) = task.loss_fn(params, {}, batch, jax.random.PRNGKey(1), False)
    np.testing.assert_allclose(eval_loss, metrics["cross_entropy"])  # evaluation: plain cross-entropy
    again, _ = task.loss_fn(params, {}, batch, jax.random.PRNGKey(2), False)
    assert float(again) == float(eval_loss)  # and deterministic
    train_a, (train_metrics, _) = task.loss_fn(params, {}, batch, jax.random.PRNGKey(1), True)
    train_b, _ = task.loss_fn(params, {}, batch, jax.random.PRNGKey(2), True)
    assert float(train_a) != float(train_b)  # dropout draws from the step's key
    assert float(train_metrics["l2_penalty"]) == pytest.approx(float(reg.l2_penalty(params)), rel=1e-6)
    assert float(train_a) > float(train_metrics["cross_entropy"])  # smoothing and the penalty add to it


def test_a_tiny_run_through_the_loop_learns_and_resumes_exactly(tmp_path):
    splits = _prototype_digits()
    task, batches, config = ic.build_with_batches(_config("train.num_epochs=4", "optim.name=adam", "optim.learning_rate=3e-3"),
                                     splits=splits)
    assert (config.train.num_steps, config.train.eval_every) == (40, 10)
    untrained = evaluate(jax.jit(make_eval_step(task.loss_fn)), create_state(task.init_variables, config), batches.eval_batches())
    state, summary = train_and_evaluate(task, config, tmp_path / "straight", progress=False)
    assert summary["eval"]["accuracy"] > untrained["accuracy"] + 0.4
    accuracy = [r["accuracy"] for r in read_metrics(tmp_path / "straight", "eval")]
    assert len(accuracy) == 4 and accuracy[-1] > accuracy[0]

    half_task, _, half_config = ic.build_with_batches(_config("train.num_epochs=2", "optim.name=adam", "optim.learning_rate=3e-3"),
                                         splits=splits)
    train_and_evaluate(half_task, half_config, tmp_path / "resumed", progress=False)
    resumed_state, resumed = train_and_evaluate(task, config, tmp_path / "resumed", progress=False)
    assert resumed["start_step"] == 20
    chex.assert_trees_all_close(resumed_state.params, state.params, atol=1e-6)


def test_early_stopping_stops_when_the_validation_loss_stalls(tmp_path):
    overrides = ["train.num_epochs=6", "optim.name=sgd", "data.validation_size=60", "data.eval_split=validation",
                 "train.early_stop_patience=2"]
    task, batches, config = ic.build_with_batches(_config(*overrides), splits=_prototype_digits())
    assert len(batches.splits["validation"]) == 60 and len(batches.splits["train"]) == 240
    config.optim.learning_rate = 0.0  # nothing moves, so the validation loss never improves after epoch 1
    _, summary = train_and_evaluate(task, config, tmp_path / "stalled", progress=False)
    spe = batches.steps_per_epoch
    assert summary["early_stopped_at"] == 3 * spe and summary["final_step"] == 3 * spe
    _, again = train_and_evaluate(task, config, tmp_path / "stalled", progress=False)  # the counters were saved
    assert again["start_step"] == 3 * spe and again["final_step"] == 3 * spe and again["early_stopped_at"] == 3 * spe

    config.train.early_stop_patience = 0
    _, summary = train_and_evaluate(task, config, tmp_path / "no_stop", progress=False)
    assert summary["early_stopped_at"] is None and summary["final_step"] == 6 * spe

    config.train.early_stop_patience = 2  # a run cut at epoch 2 and resumed stops where the whole run stopped
    config.train.num_steps = 2 * spe
    train_and_evaluate(task, config, tmp_path / "cut", progress=False)
    config.train.num_steps = 6 * spe
    _, resumed = train_and_evaluate(task, config, tmp_path / "cut", progress=False)
    assert resumed["start_step"] == 2 * spe and resumed["early_stopped_at"] == 3 * spe


@pytest.mark.parametrize("override, match", [
    ("model.dropout_rate=1.0", "model.dropout_rate"),
    ("loss.label_smoothing=-0.1", "loss.label_smoothing"),
    ("data.eval_split=validation", "validation_size"),
    ("optim.weight_decay=0.1", "optim.weight_decay"),
])
def test_bad_configs_are_one_sentence_errors(override, match):
    with pytest.raises(ConfigError, match=match):
        ic.validate(_config(override))


def test_experiment_rejects_bad_input_with_exit_status_2(repo_root, tmp_path):
    result = subprocess.run([sys.executable, str(repo_root / "experiments/05_regularisation.py"), "--workdir",
                             str(tmp_path / "w"), "--config.experiment.runs=('baseline', 'bagging')"],
                            capture_output=True, text=True, timeout=120, cwd=repo_root)
    assert result.returncode == 2
    assert "bagging" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()
