"""Chapter 2: the general MLP, linear collapse, and the hand-set XOR network."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment, run_experiment_smoke

from p2t_jax.chapters import hand_mlp, perceptron_rule
from p2t_jax.data.logic import truth_table
from p2t_jax.models.mlp import ACTIVATIONS, MLP, activation_fn
from p2t_jax.models.perceptron import init_params as perceptron_params


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "gelu"])
def test_mlp_shapes_names_and_hidden_activations(activation):
    model = MLP(features=(5, 3, 2), activation=activation)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 7))
    variables = model.init(jax.random.PRNGKey(1), x)
    chex.assert_trees_all_equal_shapes(variables["params"], {
        "dense_0": {"kernel": jnp.zeros((7, 5)), "bias": jnp.zeros(5)},
        "dense_1": {"kernel": jnp.zeros((5, 3)), "bias": jnp.zeros(3)},
        "dense_2": {"kernel": jnp.zeros((3, 2)), "bias": jnp.zeros(2)}})
    out, state = model.apply(variables, x, mutable=["intermediates"])
    chex.assert_shape(out, (4, 2))
    p = variables["params"]
    h0 = ACTIVATIONS[activation](x @ p["dense_0"]["kernel"] + p["dense_0"]["bias"])
    h1 = ACTIVATIONS[activation](h0 @ p["dense_1"]["kernel"] + p["dense_1"]["bias"])
    np.testing.assert_allclose(state["intermediates"]["hidden_0"][0], h0, rtol=1e-5, atol=1e-6)
    # No activation after the last layer: the output is the raw logits.
    np.testing.assert_allclose(out, h1 @ p["dense_2"]["kernel"] + p["dense_2"]["bias"], rtol=1e-5, atol=1e-6)


def test_mlp_rejects_unknown_activation_and_empty_features():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        activation_fn("swish")
    with pytest.raises(ValueError, match="at least one layer"):
        MLP(features=()).init(jax.random.PRNGKey(0), jnp.zeros((1, 2)))


def test_mlp_dropout_and_flatten():
    model = MLP(features=(64, 3), activation="relu", dropout_rate=0.5, flatten=True)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 4, 4, 1))
    variables = model.init(jax.random.PRNGKey(1), x)
    chex.assert_shape(variables["params"]["dense_0"]["kernel"], (16, 64))
    eval_a = model.apply(variables, x)
    eval_b = model.apply(variables, x, deterministic=True)
    chex.assert_trees_all_equal(eval_a, eval_b)
    train_a = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(2)})
    train_b = model.apply(variables, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
    assert not np.allclose(train_a, eval_a) and not np.allclose(train_a, train_b)


def test_stacked_linear_layers_equal_the_product_of_their_matrices():
    for widths in [(3, 6, 2), (7, 4, 9, 5, 1)]:
        for i in range(3):
            out = hand_mlp.collapse_check(jax.random.PRNGKey(i), widths, 32, "tanh")
            assert float(out["linear_error"]) < 1e-5, widths
            # The same weights with tanh between them are not one linear map.
            assert hand_mlp.linear_fit_residual(out["x"], out["nonlinear"]) > 1e-2, widths
    params = hand_mlp.random_params(jax.random.PRNGKey(5), (2, 3, 4))
    kernel, bias = hand_mlp.collapse_linear(params)
    np.testing.assert_allclose(kernel, params["dense_0"]["kernel"] @ params["dense_1"]["kernel"], rtol=1e-6)
    np.testing.assert_allclose(bias, params["dense_0"]["bias"] @ params["dense_1"]["kernel"]
                               + params["dense_1"]["bias"], rtol=1e-6)


def test_linear_fit_residual_is_zero_for_affine_and_large_for_xor():
    x = np.random.default_rng(0).normal(size=(20, 3))
    assert hand_mlp.linear_fit_residual(x, x @ np.ones((3, 2)) + 4.0) < 1e-10
    xs, ys = truth_table("XOR")
    assert hand_mlp.linear_fit_residual(np.asarray(xs), np.asarray(ys)[:, None]) > 0.9  # best line: all 0.5


def _hand_xor(scale):
    x, y = truth_table("XOR")
    logits, state = MLP(features=(2, 1), activation="sigmoid").apply(
        {"params": hand_mlp.xor_params(scale)}, x, mutable=["intermediates"])
    return np.asarray(jax.nn.sigmoid(logits[:, 0])), np.asarray(state["intermediates"]["hidden_0"][0]), np.asarray(y)


def test_hand_set_2_2_1_sigmoid_network_solves_xor():
    probs, hidden, y = _hand_xor(20.0)
    np.testing.assert_array_equal(probs > 0.5, y > 0.5)
    assert np.max(np.abs(probs - y)) < 1e-3
    np.testing.assert_array_equal(np.round(hidden[:, 0]), truth_table("OR")[1])
    np.testing.assert_array_equal(np.round(hidden[:, 1]), truth_table("AND")[1])
    # Larger weights, sharper units: the error shrinks with the scale ...
    errors = [np.max(np.abs(_hand_xor(s)[0] - y)) for s in (2.0, 5.0, 20.0)]
    assert errors[0] > errors[1] > errors[2]
    assert np.all((_hand_xor(5.0)[0] > 0.5) == (y > 0.5))
    # ... and at s = 2 the units are too soft: (0, 1) and (1, 0) fall on the wrong side.
    assert not np.all((_hand_xor(2.0)[0] > 0.5) == (y > 0.5))


def test_xor_is_linearly_separable_in_hidden_space():
    _, hidden, y = _hand_xor(20.0)
    x, _ = truth_table("XOR")
    key = jax.random.PRNGKey(0)
    p0 = perceptron_params(key, 2)
    _, on_hidden = perceptron_rule.train(p0, jnp.asarray(hidden), jnp.asarray(y), key, lr=1.0, num_epochs=50)
    _, on_inputs = perceptron_rule.train(p0, x, jnp.asarray(y), key, lr=1.0, num_epochs=50)
    assert int(on_hidden.errors[-1]) == 0
    assert int(on_inputs.errors.min()) >= 1


@pytest.mark.slow
def test_experiment_smoke_run(repo_root, tmp_path, capsys):
    results = run_experiment_smoke("02_mlp_xor.py", "configs/xor_mlp.py:smoke", tmp_path, capsys)
    assert results["hand_xor"]["accuracy"] == 1.0
    assert {"activations.png", "xor_band.png", "xor_hidden_space.png"} <= set(results["figures"])
    workdir = tmp_path / "bad"
    experiment = load_experiment("02_mlp_xor.py")
    assert experiment.cli(["--workdir", str(workdir), "--config.collapse.nonlinear_activation=linear"]) == 2
    assert "nonlinear_activation" in capsys.readouterr().err and not workdir.exists()
