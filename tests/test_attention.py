"""models.attention: dot-product attention written out = jax.nn.dot_product_attention = NumPy; additive attention
= its equations; multi-head attention = flax's; the Transformer's self-attention keeps its parameters, outputs,
sown weights and decode cache; both dense_impl settings give the same model."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from p2t_jax.models.attention import (AdditiveAttention, MultiHeadAttention, attend, attention_weights, causal_mask,
                                      dot_product_attention)
from p2t_jax.models.dense import Dense
from p2t_jax.models.transformer import CausalSelfAttention, Transformer, TransformerConfig

B, T, S, H, K = 2, 5, 7, 3, 4


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


@pytest.mark.parametrize("mask_name", list(MASKS))
@pytest.mark.parametrize("scale", [None, 1.0])
def test_written_out_attention_equals_numpy_and_jax_nn(mask_name, scale):
    q, k, v = _qkv()
    mask = MASKS[mask_name]
    w = attention_weights(q, k, mask, scale=scale)
    out = attend(w, v)
    w_ref, out_ref = _numpy_attention(q, k, v, True if mask is None else mask, K ** -0.5 if scale is None else scale)
    np.testing.assert_allclose(w, w_ref, atol=1e-6)
    np.testing.assert_allclose(out, out_ref, atol=1e-5)
    np.testing.assert_allclose(dot_product_attention(q, k, v, mask, scale=scale), out, atol=1e-6)
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

    variables = layer.init(jax.random.PRNGKey(3), query, keys, mask, method=full)
    context, weights = layer.apply(variables, query, keys, mask, method=full)
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


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("dense_impl", ["rows", "general"])
def test_multi_head_attention_equals_flax(cross, dense_impl):
    D = H * K
    x = jax.random.normal(jax.random.PRNGKey(4), (B, T, D))
    context = jax.random.normal(jax.random.PRNGKey(5), (B, S, 6)) if cross else None
    mask = MASKS["padding"] if cross else None
    ours = MultiHeadAttention(H, K, D, dense_impl=dense_impl, kernel_init=nn.initializers.normal(0.5))
    variables = jax.tree.map(lambda a: a, nn.meta.unbox(ours.init(jax.random.PRNGKey(6), x, context, mask=mask)))
    variables = jax.tree.map(lambda a: a + 0.1, variables)  # non-zero biases
    theirs = nn.MultiHeadDotProductAttention(num_heads=H, qkv_features=D, out_features=D)
    kv = x if context is None else context
    expected = theirs.apply(_flax_mha_params(variables, cross), x, kv, mask=mask)
    np.testing.assert_allclose(ours.apply(variables, x, context, mask=mask), expected, atol=1e-5)


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


@pytest.mark.parametrize("dense_impl", ["rows", "general"])
def test_transformer_self_attention_keeps_parameters_outputs_weights_and_cache(dense_impl):
    cfg = _cfg(dropout_rate=0.3, dense_impl=dense_impl)
    new, old = CausalSelfAttention(cfg), _FormerCausalSelfAttention(cfg)
    x = jax.random.normal(jax.random.PRNGKey(7), (B, cfg.max_len, cfg.emb_dim))
    new_vars = nn.meta.unbox(new.init(jax.random.PRNGKey(8), x, deterministic=True))
    old_vars = old.init(jax.random.PRNGKey(8), x, deterministic=True)
    chex.assert_trees_all_equal(new_vars, old_vars)  # same names, shapes and values from the same key
    for kw in ({"deterministic": True}, {"deterministic": False, "rngs": {"dropout": jax.random.PRNGKey(1)}}):
        out_new, state_new = new.apply(new_vars, x, mutable=["intermediates"], **kw)
        out_old, state_old = old.apply(old_vars, x, mutable=["intermediates"], **kw)
        np.testing.assert_allclose(out_new, out_old, atol=1e-6)
        chex.assert_trees_all_close(state_new, state_old, atol=1e-6)
        chex.assert_shape(state_new["intermediates"]["attention_weights"][0], (B, H, cfg.max_len, cfg.max_len))
    # without collecting the weights the fused path runs: the same output
    np.testing.assert_allclose(new.apply(new_vars, x, deterministic=True),
                               old.apply(old_vars, x, deterministic=True), atol=1e-6)
    # the decode path: a cache, a prefill of 3 positions, then one position at a time
    cache_new = new.init(jax.random.PRNGKey(0), x, deterministic=True, decode=True)["cache"]
    cache_old = old.init(jax.random.PRNGKey(0), x, deterministic=True, decode=True)["cache"]
    chex.assert_trees_all_equal(cache_new, cache_old)
    for chunk in (x[:, :3], x[:, 3:4], x[:, 4:5]):
        y_new, m_new = new.apply({**new_vars, "cache": cache_new}, chunk, deterministic=True, decode=True,
                                 mutable=["cache"])
        y_old, m_old = old.apply({**old_vars, "cache": cache_old}, chunk, deterministic=True, decode=True,
                                 mutable=["cache"])
        np.testing.assert_allclose(y_new, y_old, atol=1e-6)
        cache_new, cache_old = m_new["cache"], m_old["cache"]
        chex.assert_trees_all_close(cache_new, cache_old, atol=1e-6)


def _lm_loss(model, params, tokens):
    logits = model.apply({"params": params}, tokens[:, :-1])
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))


@pytest.mark.parametrize("scan_layers", [False, True])
def test_rows_and_general_projections_are_the_same_model(scan_layers):
    """A checkpoint moves between backends: the same parameters (names, shapes, values from the same key) and
    the same logits, loss, gradients and sown attention either way."""
    rows, general = (Transformer(_cfg(dense_impl=d, scan_layers=scan_layers)) for d in ("rows", "general"))
    tokens = jax.random.randint(jax.random.PRNGKey(3), (B, 9), 0, 11)
    p_rows = nn.meta.unbox(rows.init(jax.random.PRNGKey(0), tokens[:, :8]))["params"]
    p_general = nn.meta.unbox(general.init(jax.random.PRNGKey(0), tokens[:, :8]))["params"]
    chex.assert_trees_all_equal(p_rows, p_general)
    (loss_r, grads_r), (loss_g, grads_g) = (jax.value_and_grad(lambda p, m=m: _lm_loss(m, p, tokens))(p_rows)
                                            for m in (rows, general))
    np.testing.assert_allclose(loss_r, loss_g, rtol=1e-6)
    chex.assert_trees_all_close(grads_r, grads_g, atol=1e-6)
    _, s_r = rows.apply({"params": p_rows}, tokens[:, :8], mutable=["intermediates"])
    _, s_g = general.apply({"params": p_rows}, tokens[:, :8], mutable=["intermediates"])
    chex.assert_trees_all_close(s_r, s_g, atol=1e-6)


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
