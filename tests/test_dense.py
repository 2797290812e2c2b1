"""models.dense: the custom-backward dense layer equals flax's Dense / DenseGeneral, values and gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from p2t_jax.models.dense import Dense, contract


@pytest.mark.parametrize("x_shape, k_shape, n", [
    ((12, 8), (8, 5), 1),  # [N, D] . [D, F]
    ((12, 8), (8, 3, 2, 4), 1),  # [N, D] . [D, 3, H, K] (the qkv projection)
    ((12, 2, 4), (2, 4, 8), 2),  # [N, H, K] . [H, K, D] (the output projection)
])
def test_contract_and_its_gradients_equal_dot_general(x_shape, k_shape, n):
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(0), 3)
    x, kernel = jax.random.normal(kx, x_shape), jax.random.normal(kk, k_shape)
    dims = ((tuple(range(len(x_shape) - n, len(x_shape))), tuple(range(n))), ((), ()))
    reference = lambda x, k: jax.lax.dot_general(x, k, dims)  # noqa: E731
    y = contract(x, kernel, n)
    chex.assert_trees_all_close(y, reference(x, kernel), atol=1e-5)
    g = jax.random.normal(kg, y.shape)
    loss = lambda f: lambda x, k: (f(x, k) * g).sum()  # noqa: E731
    ours = jax.grad(loss(lambda x, k: contract(x, k, n)), argnums=(0, 1))(x, kernel)
    theirs = jax.grad(loss(reference), argnums=(0, 1))(x, kernel)
    chex.assert_trees_all_close(ours, theirs, atol=1e-5)
    chex.assert_shape(ours, (x_shape, k_shape))


@pytest.mark.parametrize("ours, flax_layer, x_shape", [
    (Dense(5), nn.Dense(5), (6, 8)),
    (Dense((3, 2, 4), use_bias=False), nn.DenseGeneral((3, 2, 4), use_bias=False), (6, 8)),
    (Dense(8, contract_axes=2), nn.DenseGeneral(8, axis=(-2, -1)), (6, 2, 4)),
])
def test_layer_has_flax_parameters_and_outputs(ours, flax_layer, x_shape):
    init = nn.initializers.normal(0.02)
    ours, flax_layer = ours.clone(kernel_init=init), flax_layer.clone(kernel_init=init)
    x = jax.random.normal(jax.random.PRNGKey(1), x_shape)
    params = ours.init(jax.random.PRNGKey(2), x)
    flax_params = flax_layer.init(jax.random.PRNGKey(2), x)
    chex.assert_trees_all_equal_shapes(params, flax_params)
    chex.assert_trees_all_close(params, flax_params)  # same key, same values
    chex.assert_trees_all_close(ours.apply(params, x), flax_layer.apply(flax_params, x), atol=1e-6)


def test_bfloat16_compute_keeps_float32_parameters_and_gradients():
    layer = Dense(4, dtype=jnp.bfloat16)
    x = jnp.ones((3, 8))
    params = layer.init(jax.random.PRNGKey(0), x)
    assert layer.apply(params, x).dtype == jnp.bfloat16
    grads = jax.grad(lambda p: layer.apply(p, x).astype(jnp.float32).sum())(params)
    assert {leaf.dtype for leaf in jax.tree.leaves(grads)} == {np.dtype("float32")}


def test_input_without_rows_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match=r"rows \[N, \*C\] with 1 contracted axes"):
        Dense(4).init(jax.random.PRNGKey(0), jnp.ones((2, 3, 8)))
