"""Chapter 3: hand-written backprop against jax.grad, and XOR trained by gradient descent."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment, run_experiment_smoke

from p2t_jax.chapters import backprop, xor_training

RANDOM_SHAPES = [((3, 5, 4, 2), 7), ((6, 1), 1)]


@pytest.mark.parametrize("widths, batch", RANDOM_SHAPES)
def test_hand_gradients_equal_jax_grad_in_float64(widths, batch):
    with jax.enable_x64(True):
        params, _, _ = backprop.random_problem(jax.random.PRNGKey(0), widths, batch, jnp.float64)
        assert params["dense_0"]["kernel"].dtype == jnp.float64
        diffs = backprop.gradient_check(jax.random.PRNGKey(len(widths)), widths, batch)
        assert len(diffs) == 2 * len(backprop.DERIVATIVES) * len(backprop.LOSSES)
        for case, diff in diffs.items():
            assert float(diff) <= 1e-6, case
    assert jnp.zeros(1).dtype == jnp.float32  # x64 stays inside the test


def test_gradient_check_catches_a_wrong_derivative(monkeypatch):
    # If the chain rule used the wrong f', the comparison must notice.
    params, x, y = backprop.random_problem(jax.random.PRNGKey(1), (3, 4, 2), 5)
    auto = jax.jit(jax.grad(backprop.autodiff_loss), static_argnums=(3, 4))(params, x, y, "tanh", "bce")
    monkeypatch.setitem(backprop.DERIVATIVES, "tanh", (jnp.tanh, lambda z: 1.0 - jnp.tanh(z)))
    _, bad = jax.jit(backprop.loss_and_grad, static_argnums=(3, 4))(params, x, y, "tanh", "bce")
    assert float(jnp.max(jnp.abs(bad["dense_0"]["kernel"] - auto["dense_0"]["kernel"]))) > 1e-3
    chex.assert_trees_all_close(bad["dense_1"], auto["dense_1"], atol=1e-6)  # the last layer needs no f'


def test_output_gradients_by_hand():
    z = jnp.array([[0.0], [2.0]])
    y = jnp.array([[1.0], [0.0]])
    p = jax.nn.sigmoid(z)
    value, dz = backprop.loss_and_output_grad(z, y, "bce")
    np.testing.assert_allclose(value, -np.mean(np.log([0.5, 1 - float(p[1, 0])])), rtol=1e-6)
    np.testing.assert_allclose(dz, (p - y) / 2, rtol=1e-6)
    value, dz = backprop.loss_and_output_grad(z, y, "mse")
    np.testing.assert_allclose(value, np.mean(np.square(p - y)), rtol=1e-6)
    np.testing.assert_allclose(dz, (p - y) * p * (1 - p), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown loss"):
        backprop.loss_and_output_grad(z, y, "hinge")


def test_rise_share_measures_oscillation():
    falling = jnp.array([4.0, 3.0, 2.0, 1.0, 0.5])
    zigzag = jnp.array([1.0, 2.0, 1.0, 2.0, 1.0])
    flat_noise = jnp.array([1.0, 1.0000001, 1.0, 1.0000001, 1.0])
    exploding = jnp.array([1.0, 2.0, jnp.inf, jnp.nan, jnp.nan])
    shares = np.asarray(xor_training.rise_share(jnp.stack([falling, zigzag, flat_noise, exploding]), 1e-3))
    np.testing.assert_allclose(shares, [0.0, 0.5, 0.0, 1.0])


SEEDS, STEPS = 32, 1500  # the smoke config's numbers, so the experiment test reuses these compiles


def test_xor_2_4_1_converges_smoothly_at_lr_0_5_and_oscillates_at_high_lr():
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    sweep = xor_training.make_sweep((4, 1), "sigmoid", "bce", STEPS)
    smooth = sweep(keys, 0.5)
    chex.assert_shape(smooth.loss, (SEEDS, STEPS))
    chex.assert_shape(smooth.grad_norms, (SEEDS, STEPS, 2))
    np.testing.assert_array_equal(smooth.final_accuracy, 1.0)
    assert float(xor_training.rise_share(smooth.loss, 1e-3).max()) <= 0.01
    assert np.all(np.asarray(smooth.final_loss) < np.asarray(smooth.loss[:, 0]) / 5)
    wild = sweep(keys, 32.0)
    assert float(jnp.median(xor_training.rise_share(wild.loss, 1e-3))) > 0.01
    assert float(jnp.mean(wild.final_accuracy == 1.0)) < 1.0


def test_xor_2_2_1_gets_stuck_on_some_seeds_where_2_4_1_does_not():
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    narrow = xor_training.make_sweep((2, 1), "sigmoid", "bce", STEPS)(keys, 0.5)
    wide = xor_training.make_sweep((4, 1), "sigmoid", "bce", STEPS)(keys, 0.5)
    narrow_acc, wide_acc = np.asarray(narrow.final_accuracy), np.asarray(wide.final_accuracy)
    assert np.all(wide_acc == 1.0)
    stuck = narrow_acc < 1.0
    assert 0 < stuck.sum() < SEEDS
    # Stuck runs are far from a solution, not just short of the 0.5 threshold.
    assert np.all(np.asarray(narrow.final_loss)[stuck] > 0.2)


def test_vmapped_sweep_equals_separate_runs():
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)[:3]
    sweep = xor_training.make_sweep((2, 1), "sigmoid", "bce", STEPS)(keys, 0.5)
    run = xor_training.make_run((2, 1), "sigmoid", "bce", STEPS)
    for i, key in enumerate(keys):
        one = run(key, 0.5)
        np.testing.assert_allclose(one.loss, sweep.loss[i], rtol=1e-4, atol=1e-5)
        assert float(one.final_accuracy) == float(sweep.final_accuracy[i])


def test_sharpness_of_a_quadratic_bowl():
    params = {"dense_0": {"kernel": jnp.zeros((2, 1)), "bias": jnp.zeros(1)}}
    x = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    y = jnp.array([[1.0], [0.0]])
    # BCE of a single linear unit at z = 0: Hessian = X1^T X1 * p(1-p) / B with p = 1/2.
    x1 = np.concatenate([np.asarray(x), np.ones((2, 1))], axis=1)
    expected = np.linalg.eigvalsh(x1.T @ x1 * 0.25 / 2)[-1]
    sharpness = jax.jit(xor_training.sharpness, static_argnums=(3, 4))(params, x, y, "sigmoid", "bce")
    np.testing.assert_allclose(sharpness, expected, rtol=1e-5)


@pytest.mark.slow
def test_experiment_smoke_run(repo_root, tmp_path, capsys):
    results = run_experiment_smoke("03_backprop.py", "configs/backprop.py:smoke", tmp_path, capsys)
    assert results["architectures"]["2-4-1"]["success_rate"] == 1.0
    assert results["architectures"]["2-2-1"]["success_rate"] < 1.0
    assert results["gradcheck"]["max_grad_diff"] <= 1e-6
    assert {"loss_by_lr.png", "success_by_arch.png", "grad_norms.png"} <= set(results["figures"])
    assert jnp.zeros(1).dtype == jnp.float32
    workdir = tmp_path / "bad"
    experiment = load_experiment("03_backprop.py")
    assert experiment.cli(["--workdir", str(workdir), "--config.xor.learning_rates=(1.0, 2.0)"]) == 2
    assert "smooth_lr" in capsys.readouterr().err and not workdir.exists()


def test_sweep_with_params_and_the_output_grid():
    keys = jax.random.split(jax.random.PRNGKey(2), 4)
    params, trace = xor_training.make_sweep_with_params((3, 1), "tanh", "bce", 300)(keys, 1.0)
    chex.assert_trees_all_equal(trace, xor_training.make_sweep((3, 1), "tanh", "bce", 300)(keys, 1.0))
    chex.assert_shape(params["dense_0"]["kernel"], (4, 2, 3))
    grid = xor_training.output_grid(jax.tree.map(lambda p: p[1], params), "tanh", 5)  # corners: the four rows
    chex.assert_shape(grid, (5, 5))
    x, _ = xor_training.xor_data()
    corners = {(0.0, 0.0): grid[1, 1], (0.0, 1.0): grid[3, 1], (1.0, 0.0): grid[1, 3], (1.0, 1.0): grid[3, 3]}
    for row, (x1, x2) in enumerate(np.asarray(x).tolist()):
        np.testing.assert_allclose(corners[(x1, x2)], trace.final_probs[1, row], rtol=1e-5)
