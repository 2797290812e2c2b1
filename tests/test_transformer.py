"""The Transformer: exact parameter counts, shapes, causality."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from p2t_jax.configuration import load_config
from p2t_jax.models.transformer import Transformer, TransformerConfig
from p2t_jax.tasks import language_model


def _param_count(config) -> int:
    model = language_model.make_model(config)
    shapes = jax.eval_shape(lambda: language_model.init_params(model, jax.random.PRNGKey(0)))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


@pytest.mark.parametrize("variant, expected", [
    ("small", 112_577),  # width 64, 2 layers, context 64, untied head with bias
    ("large", 826_433),  # width 128, 4 layers, context 128
    ("nanogpt_cpu", 804_096),  # no biases, tied head: nanoGPT's 0.80M plus 8,192 position weights
])
def test_exact_parameter_counts(repo_root, variant, expected):
    config = load_config(f"{repo_root}/configs/shakespeare.py:{variant}")
    assert _param_count(config) == expected


def test_parameter_count_formula():
    """Counts agree with the closed form 12·L·D² + 13·L·D + (V + T)·D + 2D + D·V + V (biases, untied)."""
    V, T, D, L = 65, 32, 48, 3
    cfg = TransformerConfig(vocab_size=V, max_len=T, emb_dim=D, num_heads=4, num_layers=L, mlp_dim=4 * D)
    variables = jax.eval_shape(lambda: nn.meta.unbox(Transformer(cfg).init(jax.random.PRNGKey(0),
                                                                           jnp.zeros((1, T), jnp.int32))))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables))
    assert count == 12 * L * D * D + 13 * L * D + (V + T) * D + 2 * D + D * V + V


def _tiny_model(**kw):
    cfg = TransformerConfig(vocab_size=17, max_len=12, emb_dim=16, num_heads=2, num_layers=2, mlp_dim=32, **kw)
    model = Transformer(cfg)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(1), jnp.zeros((1, 12), jnp.int32)))["params"]
    return model, params


def test_logits_shape_and_dtype():
    model, params = _tiny_model()
    tokens = jax.random.randint(jax.random.PRNGKey(0), (3, 10), 0, 17)
    logits = model.apply({"params": params}, tokens)
    chex.assert_shape(logits, (3, 10, 17))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)


def test_longer_than_context_is_refused():
    model, params = _tiny_model()
    with pytest.raises(ValueError, match="exceeds the model's context"):
        model.apply({"params": params}, jnp.zeros((1, 13), jnp.int32))


@pytest.mark.parametrize("t", [0, 4, 11])
def test_causality(t):
    """Changing token t never changes logits before t, and does change logits at t."""
    model, params = _tiny_model()
    tokens = jax.random.randint(jax.random.PRNGKey(2), (2, 12), 0, 17)
    changed = tokens.at[:, t].set((tokens[:, t] + 5) % 17)
    a = model.apply({"params": params}, tokens)
    b = model.apply({"params": params}, changed)
    chex.assert_trees_all_close(a[:, :t], b[:, :t], atol=1e-6)
    assert float(jnp.abs(a[:, t] - b[:, t]).max()) > 1e-4


def test_tied_embeddings_share_the_token_table():
    """With tied embeddings the head is the token table: logits = h · E^T."""
    model, params = _tiny_model(tie_embeddings=True, use_bias=False)
    assert "head" not in params
    tokens = jnp.arange(12)[None] % 17
    logits = model.apply({"params": params}, tokens)
    bumped = jax.tree_util.tree_map(lambda x: x, params)
    bumped["token_embed"]["embedding"] = params["token_embed"]["embedding"].at[16, 0].add(1.0)
    # token 16 is absent from the input, so only its output logit can change
    diff = jnp.abs(model.apply({"params": bumped}, tokens) - logits).max(axis=(0, 1))
    assert float(diff[16]) > 1e-3 and float(diff[:16].max()) == 0.0


def test_dropout_is_active_only_in_training():
    model, params = _tiny_model(dropout_rate=0.5)
    tokens = jnp.arange(12)[None] % 17
    eval_a = model.apply({"params": params}, tokens)
    eval_b = model.apply({"params": params}, tokens)
    chex.assert_trees_all_equal(eval_a, eval_b)
    train = model.apply({"params": params}, tokens, deterministic=False, rngs={"dropout": jax.random.PRNGKey(3)})
    assert float(jnp.abs(train - eval_a).max()) > 1e-3


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model, params = _tiny_model(dtype=jnp.bfloat16)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    logits32 = Transformer(model.cfg.__class__(**{**model.cfg.__dict__, "dtype": jnp.float32})).apply(
        {"params": params}, jnp.arange(12)[None] % 17)
    logits16 = model.apply({"params": params}, jnp.arange(12)[None] % 17)
    assert logits16.dtype == jnp.float32
    chex.assert_trees_all_close(logits16, logits32, atol=5e-2)


def test_scanned_layers_compute_the_same_function():
    """nn.scan over blocks = the unrolled blocks when the per-layer parameters are stacked."""
    model, params = _tiny_model()
    scanned = Transformer(TransformerConfig(**{**model.cfg.__dict__, "scan_layers": True}))
    layers = [params.pop(f"block_{i}") for i in range(model.cfg.num_layers)]
    stacked = dict(params, blocks={"block": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)})
    reference_shapes = jax.eval_shape(lambda: nn.meta.unbox(scanned.init(jax.random.PRNGKey(0),
                                                                         jnp.zeros((1, 12), jnp.int32)))["params"])
    chex.assert_trees_all_equal_shapes(stacked, reference_shapes)
    tokens = jax.random.randint(jax.random.PRNGKey(5), (2, 12), 0, 17)
    for i, layer in enumerate(layers):
        params[f"block_{i}"] = layer
    chex.assert_trees_all_close(scanned.apply({"params": stacked}, tokens), model.apply({"params": params}, tokens),
                                atol=1e-5)


def test_gelu_exact_matches_flax_gelu_and_its_gradient():
    from p2t_jax.models.transformer import gelu_exact

    x = jnp.linspace(-6.0, 6.0, 1001)
    chex.assert_trees_all_close(gelu_exact(x), nn.gelu(x, approximate=False), atol=1e-6)
    grad_ours = jax.vmap(jax.grad(gelu_exact))(x)
    grad_flax = jax.vmap(jax.grad(lambda v: nn.gelu(v, approximate=False)))(x)
    chex.assert_trees_all_close(grad_ours, grad_flax, atol=1e-6)


@pytest.mark.parametrize("approximate", [False, True])
def test_mlp_keeps_only_the_gelu_input_and_output_for_the_backward_and_matches_plain_autodiff(approximate):
    """The GELU under jax.checkpoint: of the [N, F] arrays, the backward pass keeps the GELU's input and
    output only, with the same gradients as plain autodiff."""
    from jax._src.ad_checkpoint import saved_residuals

    from p2t_jax.models import transformer as tr

    N, D, F = 6, 8, 32
    plain = (lambda v: nn.gelu(v, approximate=True)) if approximate else tr.gelu_exact
    cfg = TransformerConfig(vocab_size=5, max_len=3, emb_dim=D, num_heads=2, num_layers=1, mlp_dim=F,
                            use_bias=False, dense_impl="rows", gelu_approximate=approximate)
    mlp = tr.MLP(cfg)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 3, D))
    params = nn.meta.unbox(mlp.init(jax.random.PRNGKey(0), x, deterministic=True))

    def loss(p, x):
        return jnp.sum(jnp.sin(mlp.apply(p, x, deterministic=True)))

    def plain_loss(p, x):
        k = p["params"]
        return jnp.sum(jnp.sin((plain(x.reshape(N, D) @ k["fc"]["kernel"]) @ k["proj"]["kernel"]).reshape(2, 3, D)))

    def wide(f):  # what produced each [N, F] array kept for the backward pass
        return [what.split(" from ")[0] for r, what in saved_residuals(f, params, x) if r.shape == (N, F)]

    # the fc matmul's output (the GELU's input) and the GELU's output (proj's input), nothing else; plain
    # autodiff keeps the GELU's derivative terms instead (exact: Phi + x phi; tanh: four arrays more)
    assert wide(loss) == ["output of dot_general", "output of mul"]
    assert wide(plain_loss) != wide(loss)
    chex.assert_trees_all_close(jax.grad(loss, argnums=(0, 1))(params, x),
                                jax.grad(plain_loss, argnums=(0, 1))(params, x), atol=1e-6)


def test_attention_maps_are_causal_rows_of_probabilities_and_ignore_the_padding():
    from conftest import CompileCounter

    from p2t_jax.chapters.transformer_attention import attention_maps

    model, params = _tiny_model()
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(3), (7,), 0, 17))
    maps = attention_maps(model, params, tokens)
    chex.assert_shape(maps, (2, 2, 7, 7))  # layers, heads, query, key
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)
    assert np.all(np.triu(maps, k=1) == 0)
    _, state = jax.jit(lambda p, t: model.apply({"params": p}, t, mutable=["intermediates"]))(params, tokens[None])
    unpadded = np.stack([state["intermediates"][f"block_{i}"]["attn"]["attention_weights"][0][0] for i in range(2)])
    np.testing.assert_allclose(maps, unpadded, atol=1e-6)  # the text alone: the same weights
    with CompileCounter() as compiled:
        assert attention_maps(model, params, tokens[:3]).shape == (2, 2, 3, 3)
    assert compiled.count == 0  # every text length runs through the one padded compilation
    # Scanned layers sow one stacked array; the result has the same layout.
    scanned = Transformer(TransformerConfig(**{**model.cfg.__dict__, "scan_layers": True}))
    init = jax.jit(scanned.init)
    scanned_params = nn.meta.unbox(init(jax.random.PRNGKey(1), jnp.zeros((1, 12), jnp.int32)))["params"]
    chex.assert_shape(attention_maps(scanned, scanned_params, tokens), (2, 2, 7, 7))
    with pytest.raises(ValueError, match="between 1 and 12 tokens"):
        attention_maps(model, params, np.zeros(13, np.int32))
