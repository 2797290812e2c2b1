"""models.attention: dot-product attention written out = jax.nn.dot_product_attention = NumPy; additive attention
= its equations; multi-head attention = flax's; the Transformer's self-attention keeps its parameters, outputs,
sown weights and decode cache; both dense_impl settings give the same model."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from p2t_jax.models.attention import (
    AdditiveAttention,
    MultiHeadAttention,
    attend,
    attention_weights,
    causal_mask,
    dot_product_attention,
)
from p2t_jax.models.dense import Dense
from p2t_jax.models.transformer import CausalSelfAttention, Transformer, TransformerConfig

B, T, S, H, K = 2, 5, 7, 3, 4


def _random_variables(module, *args, seed=0, **kwargs):
    """Variables of ``module`` with the shapes ``init`` would give, filled from NumPy (no PRNG to compile:
    XLA-CPU compiles jax.random for 4-D kernels slowly)."""
    shapes = nn.meta.unbox(jax.eval_shape(functools.partial(module.init, **kwargs), jax.random.PRNGKey(0), *args))
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)


def _qkv(seed=0, t=T, s=S):
    kq, kk, kv = jax.random.split(jax.random.PRNGKey(seed), 3)
    return (jax.random.normal(kq, (B, t, H, K)), jax.random.normal(kk, (B, s, H, K)),
            jax.random.normal(kv, (B, s, H, K)))


def _numpy_attention(q, k, v, mask, scale):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bthk,bshk->bhts", q, k) * scale
    logits = np.where(np.broadcast_to(mask, logits.shape), logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return w, np.einsum("bhts,bshk->bthk", w, v)


MASKS = {
    "none": None,
    "padding": jnp.arange(S)[None, None, None, :] < jnp.asarray([7, 3])[:, None, None, None],  # [B, 1, 1, S]
    "random": jax.random.bernoulli(jax.random.PRNGKey(9), 0.6, (B, H, T, S)).at[..., 0].set(True),
}


@functools.partial(jax.jit, static_argnames="scale")
def _both_forms(q, k, v, mask, scale):
    w = attention_weights(q, k, mask, scale=scale)
    return w, attend(w, v), dot_product_attention(q, k, v, mask, scale=scale)


@pytest.mark.parametrize("mask_name, scale", [("none", None), ("padding", None), ("random", None), ("random", 1.0)])
def test_written_out_attention_equals_numpy_and_jax_nn(mask_name, scale):
    q, k, v = _qkv()
    mask = MASKS[mask_name]
    w, out, fused = _both_forms(q, k, v, mask, scale)
    w_ref, out_ref = _numpy_attention(q, k, v, True if mask is None else mask, K ** -0.5 if scale is None else scale)
    np.testing.assert_allclose(w, w_ref, atol=1e-6)
    np.testing.assert_allclose(out, out_ref, atol=1e-5)
    np.testing.assert_allclose(fused, out, atol=1e-6)
    if mask is not None:
        assert float(jnp.abs(jnp.where(jnp.broadcast_to(mask, w.shape), 0.0, w)).max()) == 0.0  # exactly 0
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)


def test_causal_flag_equals_the_causal_mask():
    q, k, v = _qkv(1, t=T, s=T)
    np.testing.assert_allclose(dot_product_attention(q, k, v, is_causal=True),
                               attend(attention_weights(q, k, causal_mask(T)), v), atol=1e-6)
    chex.assert_shape(causal_mask(T), (1, 1, T, T))
    assert bool(causal_mask(3)[0, 0, 1, 0]) and not bool(causal_mask(3)[0, 0, 0, 1])


def test_additive_attention_equals_its_equations():
    A, Dq, Dk = 6, 5, 8
    kq, kk = jax.random.split(jax.random.PRNGKey(2))
    query, keys = jax.random.normal(kq, (B, Dq)), jax.random.normal(kk, (B, S, Dk))
    mask = jnp.arange(S)[None, :] < jnp.asarray([S, 4])[:, None]
    layer = AdditiveAttention(A)

    def full(module, query, keys, mask):
        return module(query, module.project_keys(keys), keys, mask)

    variables = _random_variables(layer, query, keys, mask, method=full)
    context, weights = jax.jit(functools.partial(layer.apply, method=full))(variables, query, keys, mask)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"])
    hidden = np.tanh(np.asarray(query, np.float64)[:, None, :] @ p["query"]["kernel"] + p["query"]["bias"]
                     + np.asarray(keys, np.float64) @ p["key"]["kernel"])
    logits = (hidden @ p["score"]["kernel"])[..., 0]
    logits = np.where(np.asarray(mask), logits, -np.inf)
    w_ref = np.exp(logits - logits.max(-1, keepdims=True))
    w_ref /= w_ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights, w_ref, atol=1e-6)
    np.testing.assert_allclose(context, np.einsum("bs,bsk->bk", w_ref, np.asarray(keys, np.float64)), atol=1e-5)
    assert float(weights[1, 4:].max()) == 0.0
    chex.assert_shape([context, weights], [(B, Dk), (B, S)])


def _flax_mha_params(ours, cross: bool):
    """Our multi-head parameters written as flax.linen.MultiHeadDotProductAttention's."""
    p = ours["params"]
    if cross:
        q, k, v = p["query"]["kernel"], p["kv"]["kernel"][:, 0], p["kv"]["kernel"][:, 1]
        qb, kb, vb = p["query"]["bias"], p["kv"]["bias"][0], p["kv"]["bias"][1]
    else:
        q, k, v = (p["qkv"]["kernel"][:, i] for i in range(3))
        qb, kb, vb = (p["qkv"]["bias"][i] for i in range(3))
    return {"params": {"query": {"kernel": q, "bias": qb}, "key": {"kernel": k, "bias": kb},
                       "value": {"kernel": v, "bias": vb}, "out": p["out"]}}


@pytest.mark.parametrize("cross, dense_impl", [(False, "general"), (True, "rows"),
                                               pytest.param(False, "rows", marks=pytest.mark.slow),
                                               pytest.param(True, "general", marks=pytest.mark.slow)])
def test_multi_head_attention_equals_flax(cross, dense_impl):
    D = H * K
    x = jax.random.normal(jax.random.PRNGKey(4), (B, T, D))
    context = jax.random.normal(jax.random.PRNGKey(5), (B, S, 6)) if cross else None
    mask = MASKS["padding"] if cross else None
    ours = MultiHeadAttention(H, K, D, dense_impl=dense_impl)
    variables = _random_variables(ours, x, context, mask=mask)
    theirs = nn.MultiHeadDotProductAttention(num_heads=H, qkv_features=D, out_features=D)
    kv = x if context is None else context
    expected = jax.jit(functools.partial(theirs.apply, mask=mask))(_flax_mha_params(variables, cross), x, kv)
    np.testing.assert_allclose(jax.jit(functools.partial(ours.apply, mask=mask))(variables, x, context), expected,
                               atol=1e-5)


class _FormerCausalSelfAttention(nn.Module):
    """The Transformer's self-attention before models/attention.py (written out, Dense on [B*T, D] rows)."""

    cfg: TransformerConfig

    def _cached_keys_values(self, k_BTHK, v_BTHK):
        cfg = self.cfg
        B, T, H, K = k_BTHK.shape
        initialised = self.has_variable("cache", "key")
        key = self.variable("cache", "key", jnp.zeros, (B, cfg.max_len, H, K), k_BTHK.dtype)
        value = self.variable("cache", "value", jnp.zeros, (B, cfg.max_len, H, K), v_BTHK.dtype)
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        if not initialised:
            return k_BTHK, v_BTHK, causal_mask(T)
        i = index.value
        key.value = jax.lax.dynamic_update_slice_in_dim(key.value, k_BTHK, i, axis=1)
        value.value = jax.lax.dynamic_update_slice_in_dim(value.value, v_BTHK, i, axis=1)
        index.value = i + T
        mask_TS = jnp.arange(cfg.max_len)[None, :] <= (i + jnp.arange(T))[:, None]
        return key.value, value.value, mask_TS[None, None]

    @nn.compact
    def __call__(self, x_BTD, *, deterministic, decode=False):
        cfg = self.cfg
        B, T, D = x_BTD.shape
        H, K = cfg.num_heads, cfg.head_dim
        init = lambda s: nn.initializers.normal(s)  # noqa: E731
        qkv = Dense(features=(3, H, K), use_bias=cfg.use_bias, name="qkv", kernel_init=init(0.02))(
            x_BTD.reshape(B * T, D)).reshape(B, T, 3, H, K)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        k, v, mask = self._cached_keys_values(k, v) if decode else (k, v, causal_mask(T))
        logits = jnp.einsum("bthk,bshk->bhts", q, k) / jnp.sqrt(K).astype(cfg.dtype)
        attn = jax.nn.softmax(jnp.where(mask, logits.astype(jnp.float32), jnp.finfo(jnp.float32).min), axis=-1)
        self.sow("intermediates", "attention_weights", attn)
        attn = nn.Dropout(cfg.dropout_rate)(attn, deterministic=deterministic)
        out = jnp.einsum("bhts,bshk->bthk", attn, v)
        return Dense(features=D, contract_axes=2, use_bias=cfg.use_bias, name="out",
                     kernel_init=init(0.02 / (2 * cfg.num_layers) ** 0.5))(out.reshape(B * T, H, K)).reshape(B, T, D)


def _cfg(**kw):
    return TransformerConfig(vocab_size=11, max_len=8, emb_dim=H * K, num_heads=H, num_layers=2, mlp_dim=16, **kw)


@pytest.mark.slow
@pytest.mark.parametrize("dense_impl", ["rows", "general"])
def test_transformer_self_attention_draws_the_former_initial_parameters(dense_impl):
    cfg = _cfg(dense_impl=dense_impl)
    x = jnp.ones((B, cfg.max_len, cfg.emb_dim))
    new = nn.meta.unbox(CausalSelfAttention(cfg).init(jax.random.PRNGKey(8), x, deterministic=True))
    chex.assert_trees_all_equal(new, _FormerCausalSelfAttention(cfg).init(jax.random.PRNGKey(8), x, deterministic=True))


@pytest.mark.parametrize("dense_impl", ["rows", pytest.param("general", marks=pytest.mark.slow)])
def test_transformer_self_attention_keeps_parameters_outputs_weights_and_cache(dense_impl):
    cfg = _cfg(dropout_rate=0.3, dense_impl=dense_impl)
    new, old = CausalSelfAttention(cfg), _FormerCausalSelfAttention(cfg)
    x = jax.random.normal(jax.random.PRNGKey(7), (B, cfg.max_len, cfg.emb_dim))
    chex.assert_trees_all_equal_shapes_and_dtypes(  # the same names and shapes
        jax.eval_shape(lambda: nn.meta.unbox(new.init(jax.random.PRNGKey(8), x, deterministic=True))),
        jax.eval_shape(lambda: old.init(jax.random.PRNGKey(8), x, deterministic=True)))
    new_vars = old_vars = _random_variables(old, x, deterministic=True)
    def outputs(module, variables):  # with and without dropout (sowing the weights), then without sowing
        apply = functools.partial(module.apply, variables, x, mutable=["intermediates"])
        return (apply(deterministic=True), apply(deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)}),
                module.apply(variables, x, deterministic=True))

    ours, former = jax.jit(outputs, static_argnums=0)(new, new_vars), jax.jit(outputs, static_argnums=0)(old, old_vars)
    chex.assert_trees_all_close(ours, former, atol=1e-6)  # outputs, sown weights; the fused path's output
    chex.assert_shape(ours[0][1]["intermediates"]["attention_weights"][0], (B, H, cfg.max_len, cfg.max_len))

    def decode(module, variables):  # a cache, a prefill of 3 positions, then one position at a time
        cache = module.init(jax.random.PRNGKey(0), x, deterministic=True, decode=True)["cache"]
        caches, ys = [cache], []
        for chunk in (x[:, :3], x[:, 3:4], x[:, 4:5]):
            y, mutated = module.apply({**variables, "cache": caches[-1]}, chunk, deterministic=True, decode=True,
                                      mutable=["cache"])
            ys.append(y)
            caches.append(mutated["cache"])
        return ys, caches

    chex.assert_trees_all_close(jax.jit(decode, static_argnums=0)(new, new_vars),
                                jax.jit(decode, static_argnums=0)(old, old_vars), atol=1e-6)


def _lm_loss(model, params, tokens):
    logits = model.apply({"params": params}, tokens[:, :-1])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))


@pytest.mark.parametrize("scan_layers", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_rows_and_general_projections_are_the_same_model(scan_layers):
    """A checkpoint moves between backends: the same parameters (names, shapes, logical axes; the values from a
    key are the same too, as Dense and DenseGeneral draw the same values: tests/test_dense.py) and the same loss
    and sown attention from the same parameters either way."""
    rows, general = (Transformer(_cfg(dense_impl=d, scan_layers=scan_layers)) for d in ("rows", "general"))
    tokens = jax.random.randint(jax.random.PRNGKey(3), (B, 9), 0, 11)
    boxed_rows, boxed_general = (jax.eval_shape(m.init, jax.random.PRNGKey(0), tokens[:, :8]) for m in (rows, general))
    chex.assert_trees_all_equal_structs(boxed_rows, boxed_general)
    chex.assert_trees_all_equal_shapes_and_dtypes(boxed_rows, boxed_general)
    names = lambda tree: [getattr(x, "names", None) for x in jax.tree.leaves(tree, is_leaf=nn.meta.is_axis_metadata)]  # noqa: E731
    assert names(boxed_rows) == names(boxed_general)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype),
                          nn.meta.unbox(boxed_rows)["params"])

    @functools.partial(jax.jit, static_argnums=0)
    def measure(model, params):
        return _lm_loss(model, params, tokens), model.apply({"params": params}, tokens[:, :8],
                                                            mutable=["intermediates"])[1]

    (loss_r, sown_r), (loss_g, sown_g) = measure(rows, params), measure(general, params)
    np.testing.assert_allclose(loss_r, loss_g, rtol=1e-6)
    chex.assert_trees_all_close(sown_r, sown_g, atol=1e-6)


def test_dense_impl_auto_follows_the_backend_and_bad_values_are_refused():
    assert _cfg().resolved_dense_impl == ("rows" if jax.default_backend() == "cpu" else "general")
    with pytest.raises(ValueError, match="dense_impl must be one of auto, rows, general"):
        _ = _cfg(dense_impl="fast").resolved_dense_impl


def test_decode_needs_causal_self_attention():
    layer = MultiHeadAttention(H, K, H * K)
    with pytest.raises(ValueError, match="decode=True needs causal self-attention"):
        layer.init(jax.random.PRNGKey(0), jnp.ones((B, T, H * K)), decode=True)


def test_the_config_field_is_checked_in_one_sentence(smoke_config):
    from p2t_jax.configuration import ConfigError, apply_overrides
    from p2t_jax.tasks import language_model

    assert smoke_config.model.dense_impl == "auto"
    apply_overrides(smoke_config, ["model.dense_impl=fast"])
    with pytest.raises(ConfigError, match="config key 'model.dense_impl' must be one of auto, rows, general"):
        language_model.validate(smoke_config)
