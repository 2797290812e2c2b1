"""Hand-written optimisers equal Optax's, compose with Optax, and plug into the loop's chains."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from p2t_jax.chapters import optimisers as surfaces
from p2t_jax.configuration import ConfigError
from p2t_jax.optim import chains, scratch

NUM_STEPS = 100
TOLERANCE = 1e-6
LEARNING_RATES = {"sgd": 0.05, "momentum": 0.02, "nesterov": 0.02, "rmsprop": 3e-3, "adam": 1e-2, "adamw": 1e-2,
                  "lion": 1e-3}


def _problem(seed: int):
    """A random small regression net (params tree of two layers) and its mean-squared loss."""
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    params = {"hidden": {"kernel": jax.random.normal(k[0], (6, 16)) / 2, "bias": jax.random.normal(k[1], (16,)) / 4},
              "out": {"kernel": jax.random.normal(k[2], (16, 3)) / 4, "bias": jnp.zeros((3,))}}
    x = jax.random.normal(k[3], (64, 6))
    y = jax.random.normal(k[4], (64, 3))

    def loss(p):
        h = jnp.tanh(x @ p["hidden"]["kernel"] + p["hidden"]["bias"])
        return jnp.mean((h @ p["out"]["kernel"] + p["out"]["bias"] - y) ** 2)

    return params, loss


def _run(tx: optax.GradientTransformation, params, loss, num_steps: int = NUM_STEPS):
    """Params after ``num_steps`` updates, and the loss at each step: ``[num_steps]``."""

    def step(carry, _):
        p, state = carry
        value, grads = jax.value_and_grad(loss)(p)
        updates, state = tx.update(grads, state, p)
        return (optax.apply_updates(p, updates), state), value

    (params, _), losses = jax.jit(lambda p: jax.lax.scan(step, (p, tx.init(p)), None, length=num_steps))(params)
    return params, losses


@pytest.mark.parametrize("name", list(scratch.OPTIMIZERS))
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_optax_over_100_steps(name, seed):
    params, loss = _problem(seed)
    lr = LEARNING_RATES[name]
    mine, my_losses = _run(scratch.OPTIMIZERS[name](lr), params, loss)
    theirs, _ = _run(scratch.OPTAX_COUNTERPARTS[name](lr), params, loss)
    chex.assert_trees_all_close(mine, theirs, atol=TOLERANCE, rtol=TOLERANCE)
    moved = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(params)))
    assert moved > 100 * TOLERANCE  # the comparison is not between two standing-still runs
    assert my_losses[-1] < my_losses[0]  # and it optimises


@pytest.mark.parametrize("name", list(scratch.OPTIMIZERS))
def test_composes_with_clipping_and_schedules(name):
    params, loss = _problem(2)
    schedule = optax.warmup_cosine_decay_schedule(0.0, LEARNING_RATES[name], 10, NUM_STEPS, 0.0)
    mine = optax.chain(optax.clip_by_global_norm(0.5), scratch.OPTIMIZERS[name](schedule))
    theirs = optax.chain(optax.clip_by_global_norm(0.5), scratch.OPTAX_COUNTERPARTS[name](schedule))
    chex.assert_trees_all_close(_run(mine, params, loss)[0], _run(theirs, params, loss)[0], atol=TOLERANCE,
                                rtol=TOLERANCE)


def _adam_without_bias_correction(lr, b1=0.9, b2=0.999, eps=1e-8) -> optax.GradientTransformation:
    def init(params):
        return (jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params))

    def update(grads, state, params=None):
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, grads, state[0])
        nu = jax.tree.map(lambda g, v: (1 - b2) * g**2 + b2 * v, grads, state[1])
        return jax.tree.map(lambda m, v: -lr * m / (jnp.sqrt(v) + eps), mu, nu), (mu, nu)

    return optax.GradientTransformation(init, update)


def test_the_comparison_can_tell_optimisers_apart():
    """Controls: close relatives differ by far more than the tolerance after 100 steps."""
    params, loss = _problem(0)

    def gap(a, b):
        return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    run = lambda tx: _run(tx, params, loss)[0]  # noqa: E731
    assert gap(run(scratch.momentum(0.02)), run(scratch.nesterov(0.02))) > 1e-3
    assert gap(run(scratch.adam(1e-2)), run(optax.chain(optax.scale_by_adam(nesterov=True),
                                                         optax.scale(-1e-2)))) > 1e-3
    assert gap(run(scratch.adam(1e-2)), run(_adam_without_bias_correction(1e-2))) > 1e-3
    assert gap(run(scratch.adamw(1e-2, weight_decay=0.1)), run(scratch.adam(1e-2))) > 1e-4


def test_adam_first_step_is_lr_times_sign():
    """With bias correction the very first Adam step is ``-lr * g / (|g| + eps)``, about ``-lr sign(g)``."""
    grads = {"w": jnp.array([3.0, -0.01, 2e-4])}
    tx = scratch.adam(0.1)
    updates, _ = tx.update(grads, tx.init(grads), grads)
    np.testing.assert_allclose(updates["w"], -0.1 * np.sign(grads["w"]), rtol=1e-3)


def test_weight_decay_mask_leaves_biases_alone():
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
    zeros = jax.tree.map(jnp.zeros_like, params)
    for tx in (scratch.adamw(1.0, weight_decay=0.5, mask=chains.decay_mask),
               scratch.lion(1.0, weight_decay=0.5, mask=chains.decay_mask)):
        updates, _ = tx.update(zeros, tx.init(params), params)
        np.testing.assert_allclose(updates["kernel"], -0.5)
        np.testing.assert_allclose(updates["bias"], 0.0)


def test_weight_decay_may_be_traced_as_a_sweep_traces_it():
    """A traced weight decay (``p2t sweep optim.weight_decay=...``) gives the update of the same number given plainly."""
    params = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.ones((2,))}
    grads = jax.tree.map(lambda p: 0.1 * p, params)

    def step(wd):
        tx = scratch.adamw(0.5, weight_decay=wd, mask=chains.decay_mask)
        return tx.update(grads, tx.init(params), params)[0]

    for wd in (0.0, 0.25):
        chex.assert_trees_all_close(jax.jit(step)(jnp.float32(wd)), step(wd), rtol=1e-6)


def _optim(**fields) -> ml_collections.ConfigDict:
    base = dict(learning_rate=1e-2, end_learning_rate=0.0, warmup_steps=0, decay_steps=0, b1=0.9, b2=0.999,
                eps=1e-8, weight_decay=0.0, grad_clip_norm=0.0)
    base.update(fields)
    return ml_collections.ConfigDict(base)


@pytest.mark.parametrize("name", list(chains.CLASSIC))
def test_make_optimizer_scratch_and_optax_agree(name):
    params, loss = _problem(3)
    wd = 1e-2 if name in chains.WITH_WEIGHT_DECAY else 0.0
    fields = dict(name=name, schedule="constant", learning_rate=LEARNING_RATES[name], weight_decay=wd,
                  grad_clip_norm=1.0, momentum=0.9, rms_decay=0.9)
    mine, _ = chains.make_optimizer(_optim(implementation="scratch", **fields), NUM_STEPS)
    theirs, _ = chains.make_optimizer(_optim(implementation="optax", **fields), NUM_STEPS)
    chex.assert_trees_all_close(_run(mine, params, loss)[0], _run(theirs, params, loss)[0], atol=TOLERANCE,
                                rtol=TOLERANCE)


def test_make_optimizer_default_is_the_standard_adamw_chain():
    """A config without ``name`` (e.g. configs/shakespeare.py) still gets clip -> adamw on warm-up + cosine."""
    params, loss = _problem(4)
    optim = _optim(warmup_steps=10, weight_decay=0.1, grad_clip_norm=1.0, end_learning_rate=1e-3)
    tx, schedule = chains.make_optimizer(optim, NUM_STEPS)
    expected_schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 10, NUM_STEPS, 1e-3)
    expected = optax.chain(optax.clip_by_global_norm(1.0),
                           optax.adamw(expected_schedule, weight_decay=0.1, mask=chains.decay_mask))
    assert float(schedule(0)) == 0.0 and float(schedule(10)) == pytest.approx(1e-2)
    chex.assert_trees_all_close(_run(tx, params, loss)[0], _run(expected, params, loss)[0], atol=TOLERANCE,
                                rtol=TOLERANCE)


@pytest.mark.parametrize("fields, match", [
    (dict(name="adagradd"), "optim.name"),
    (dict(name="adagrad", implementation="scratch"), "optim.implementation"),
    (dict(name="adam", implementation="torch"), "optim.implementation"),
    (dict(name="sgd", weight_decay=1e-4), "optim.weight_decay"),
    (dict(name="adam", schedule="step"), "optim.schedule"),
])
def test_make_optimizer_rejects_bad_configs(fields, match):
    with pytest.raises(ConfigError, match=match):
        chains.make_optimizer(_optim(**fields), NUM_STEPS)


def test_surface_paths_descend_and_sgd_crawls_on_rosenbrock():
    fn, start, minimum = surfaces.SURFACES["rosenbrock"]
    points, losses = surfaces.trajectory(scratch.adam(5e-2), fn, jnp.asarray(start), 500)
    chex.assert_shape(points, (501, 2))
    assert float(losses[0]) == pytest.approx(float(fn(jnp.asarray(start))))
    assert float(losses[-1]) < 0.02 * float(losses[0])
    _, sgd_losses = surfaces.trajectory(scratch.sgd(1e-3), fn, jnp.asarray(start), 500)
    assert float(sgd_losses[-1]) > float(losses[-1])  # plain SGD is still crawling along the valley
    quad, q_start, _ = surfaces.SURFACES["quadratic"]
    _, diverged = surfaces.trajectory(scratch.sgd(2.5 / 25.0), quad, jnp.asarray(q_start), 50)
    assert float(diverged[-1]) > float(diverged[0])  # a step above 2 / kappa diverges


def test_make_trajectory_is_the_trajectory_and_compiles_once_for_every_rate():
    from conftest import CompileCounter

    fn, start, _ = surfaces.SURFACES["rosenbrock"]
    path = surfaces.make_trajectory("adamw", "rosenbrock", 60, 1e-4)
    assert surfaces.make_trajectory("adamw", "rosenbrock", 60, 1e-4) is path
    for n, lr in enumerate((5e-2, 1e-2, 0.3)):
        with CompileCounter() as compiled:
            points, losses = path(lr)
        assert compiled.count >= 1 if n == 0 else compiled.count == 0
        want_points, want_losses = surfaces.trajectory(scratch.adamw(lr, weight_decay=1e-4), fn, jnp.asarray(start), 60)
        chex.assert_shape(points, (61, 2))
        chex.assert_trees_all_close((points, losses), (want_points, want_losses), rtol=1e-5, atol=1e-6)
