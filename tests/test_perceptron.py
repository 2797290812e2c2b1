"""Chapter 1: the perceptron, Rosenblatt's rule, the gates and Novikoff's bound."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment, run_experiment_smoke

from p2t_jax.chapters import perceptron_rule
from p2t_jax.data.logic import separable_points, truth_table
from p2t_jax.models.perceptron import Perceptron, init_params, predict, step


def test_truth_tables():
    x, y = truth_table("and")
    chex.assert_shape(x, (4, 2))
    np.testing.assert_array_equal(y, [0, 0, 0, 1])
    np.testing.assert_array_equal(truth_table("XOR")[1], np.logical_xor(x[:, 0], x[:, 1]))
    np.testing.assert_array_equal(truth_table("NAND")[1], 1 - truth_table("AND")[1])
    with pytest.raises(ValueError, match="unknown gate 'MAYBE'"):
        truth_table("MAYBE")


def test_step_is_strict_and_module_matches_functions():
    np.testing.assert_array_equal(step(jnp.array([-1.0, 0.0, 1e-6])), [0.0, 0.0, 1.0])
    params = {"w": jnp.array([1.0, 1.0]), "b": jnp.array(-1.5)}  # AND by hand
    x, y = truth_table("AND")
    np.testing.assert_array_equal(predict(params, x), y)
    module = Perceptron()
    variables = module.init(jax.random.PRNGKey(0), x)
    chex.assert_trees_all_equal(variables["params"], {"w": jnp.zeros(2), "b": jnp.zeros(())})
    np.testing.assert_array_equal(module.apply({"params": params}, x), y)


def test_update_moves_only_on_mistakes():
    params = {"w": jnp.zeros(2), "b": jnp.zeros(())}
    # Target 1, predicted 0 (step(0) = 0): w += lr * x, b += lr.
    params, mistake = perceptron_rule.update(params, jnp.array([1.0, 2.0]), jnp.array(1.0), 0.5)
    assert int(mistake) == 1
    chex.assert_trees_all_close(params, {"w": jnp.array([0.5, 1.0]), "b": jnp.array(0.5)})
    # Now right on the same example: nothing moves.
    again, mistake = perceptron_rule.update(params, jnp.array([1.0, 2.0]), jnp.array(1.0), 0.5)
    assert int(mistake) == 0
    chex.assert_trees_all_equal(again, params)
    # Target 0, predicted 1: w -= lr * x, b -= lr.
    params, mistake = perceptron_rule.update(params, jnp.array([1.0, 0.0]), jnp.array(0.0), 0.5)
    assert int(mistake) == 1
    chex.assert_trees_all_close(params, {"w": jnp.array([0.0, 1.0]), "b": jnp.array(0.0)})


def test_gates_learned_and_xor_never_over_100_seeds_1000_epochs():
    num_seeds, num_epochs = 100, 1000
    names = ("AND", "OR", "NAND", "XOR")
    x, _ = truth_table("AND")
    ys = jnp.stack([truth_table(n)[1] for n in names])
    keys = jax.random.split(jax.random.PRNGKey(0), num_seeds)
    history = perceptron_rule.train_many(x, ys, keys, lr=1.0, init_scale=0.5, num_epochs=num_epochs, shuffle=True)
    chex.assert_shape(history.errors, (len(names), num_seeds, num_epochs))
    errors = np.asarray(history.errors)
    for i, name in enumerate(names[:3]):
        assert np.all(errors[i, :, -1] == 0), f"{name} not learned on every seed"
        # Once at zero errors, no more updates: every later epoch makes no mistakes.
        first = np.asarray(perceptron_rule.first_zero(history.errors[i]))
        assert np.all(first >= 0)
        mistakes = np.asarray(history.mistakes[i])
        assert all(mistakes[s, first[s] + 1:].sum() == 0 for s in range(num_seeds))
    assert errors[3].min() >= 1, "XOR reached zero errors, which no line can do"
    assert np.asarray(history.mistakes[3]).min() >= 1  # and the line never stops moving


def test_train_many_is_train_per_gate_and_seed_and_compiles_once():
    from conftest import CompileCounter

    x, _ = truth_table("AND")
    keys = jax.random.split(jax.random.PRNGKey(3), 5)
    for n, (gates, lr, scale) in enumerate(((("OR", "XOR"), 1.0, 0.5), (("NAND", "AND"), 0.3, 0.0))):
        ys = jnp.stack([truth_table(g)[1] for g in gates])
        with CompileCounter() as compiled:
            many = perceptron_rule.train_many(x, ys, keys, lr=lr, init_scale=scale, num_epochs=7, shuffle=True)
        assert compiled.count >= 1 if n == 0 else compiled.count == 0  # other gates, rates and scales: no compile
        k_init, k_order = jax.random.split(keys[4])
        _, one = perceptron_rule.train(init_params(k_init, 2, scale), x, ys[1], k_order, lr=lr, num_epochs=7)
        chex.assert_trees_all_close(jax.tree.map(lambda a: a[1, 4], many), one)


def test_separable_points_have_the_stated_margin():
    data = separable_points(jax.random.PRNGKey(3), 500, dim=3, margin=0.15)
    distance = np.asarray(data["x"] @ data["w"] + data["b"])
    np.testing.assert_allclose(np.linalg.norm(data["w"]), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.abs(distance).min(), 0.15, rtol=1e-4)
    np.testing.assert_array_equal(np.asarray(data["y"]), (distance > 0).astype(np.float32))
    assert 0 < np.asarray(data["y"]).mean() < 1  # both classes present


def test_updates_stay_within_novikoff_bound():
    def one(key, margin):
        k_data, k_order = jax.random.split(key)
        data = separable_points(k_data, 100, 2, margin)
        params = init_params(k_order, 2, 0.0)
        _, history = perceptron_rule.train(params, data["x"], data["y"], k_order, lr=1.0, num_epochs=100)
        bound = perceptron_rule.convergence_bound(data["x"], data["y"], data["w"], data["b"])
        return jnp.sum(history.mistakes), history.errors[-1], bound["bound"], bound["gamma"]

    margins = jnp.geomspace(0.01, 0.3, 24)
    updates, final_errors, bounds, gammas = jax.jit(jax.vmap(one))(jax.random.split(jax.random.PRNGKey(1), 24),
                                                                   margins)
    assert np.all(np.asarray(final_errors) == 0)
    assert np.all(np.asarray(updates) <= np.asarray(bounds))
    assert np.all(np.asarray(gammas) > 0)
    # The bound grows as the margin shrinks: the smallest margin has the largest bound.
    assert np.argmax(np.asarray(bounds)) == 0 or bounds[0] > np.median(np.asarray(bounds))


def test_bound_is_infinite_for_a_plane_that_does_not_separate():
    x, y = truth_table("XOR")
    bound = perceptron_rule.convergence_bound(x, y, jnp.array([1.0, 0.0]), jnp.array(-0.5))
    assert float(bound["gamma"]) <= 0 and np.isinf(float(bound["bound"]))


def test_from_zero_the_learning_rate_only_rescales_the_weights():
    data = separable_points(jax.random.PRNGKey(7), 60, 2, 0.05)
    key = jax.random.PRNGKey(8)
    zero = init_params(key, 2, 0.0)
    p1, h1 = perceptron_rule.train(zero, data["x"], data["y"], key, lr=1.0, num_epochs=30)
    p2, h2 = perceptron_rule.train(zero, data["x"], data["y"], key, lr=0.01, num_epochs=30)
    np.testing.assert_array_equal(h1.mistakes, h2.mistakes)
    np.testing.assert_allclose(np.asarray(p2["w"]) * 100, p1["w"], rtol=1e-4)
    np.testing.assert_allclose(np.asarray(p2["b"]) * 100, p1["b"], rtol=1e-4, atol=1e-5)


def test_experiment_smoke_run_writes_figures_and_passes(repo_root, tmp_path, capsys):
    results = run_experiment_smoke("01_perceptron.py", "configs/perceptron.py:smoke", tmp_path, capsys)
    assert results["gates"]["XOR"]["min_errors_any_epoch_any_seed"] >= 1
    assert results["gates"]["AND"]["seeds_at_zero_errors_at_end"] == results["config"]["gates"]["num_seeds"]
    for name in results["figures"]:
        assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.parametrize("argv, message", [
    (["--config.gates.num_seeds=many"], "takes an integer"),
    (["--config.gates.names=('AND', 'MAYBE')"], "'MAYBE'"),
    (["--config.gates.colour=red"], "unknown config key"),
    (["--bogus"], "unknown argument"),
])
def test_experiment_bad_input_exits_2_and_writes_nothing(repo_root, tmp_path, capsys, argv, message):
    experiment = load_experiment("01_perceptron.py")
    workdir = tmp_path / "run"
    status = experiment.cli(["--workdir", str(workdir), "--config", "configs/perceptron.py:smoke"] + argv)
    err = capsys.readouterr().err
    assert status == 2
    assert message in err and err.count("\n") == 1
    assert not workdir.exists()
