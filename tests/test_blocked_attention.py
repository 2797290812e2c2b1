"""models.blocked_attention: the online-softmax attention equals the materialised one in values and gradients
(causal, lengths that are not a multiple of the block, keys unlike queries, bfloat16); its step memory is
linear in the context; ``auto`` picks it where it should; a config chooses it; it lowers for cuda and tpu."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO
from jax import export

from p2t_jax.models.attention import BLOCKED_FROM, attend, attention_weights, causal_mask, dot_product_attention
from p2t_jax.models.blocked_attention import blocked_attention
from p2t_jax.models.transformer import Transformer, TransformerConfig

H, K = 3, 4


def _materialised(q, k, v, causal):
    return attend(attention_weights(q, k, causal_mask(q.shape[1]) if causal else None), v)


def _inputs(B, T, S, dtype=jnp.float32, seed=0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(shape).astype(np.float32) for shape in ((B, T, H, K), (B, S, H, K), (B, S, H, K)))
    g = rng.standard_normal((B, T, H, K)).astype(np.float32)  # the output's cotangent
    return tuple(jnp.asarray(x, dtype) for x in (q, k, v, g))


@functools.partial(jax.jit, static_argnames=("causal", "block", "blocked"))
def _value_and_grads(q, k, v, g, *, causal, block, blocked):
    def f(q, k, v):
        out = blocked_attention(q, k, v, causal=causal, block=block) if blocked else _materialised(q, k, v, causal)
        return (out.astype(jnp.float32) * g.astype(jnp.float32)).sum(), out
    (_, out), grads = jax.value_and_grad(f, (0, 1, 2), has_aux=True)(q, k, v)
    return out, grads


@pytest.mark.parametrize("T, S, causal, block", [
    (37, 37, True, 8),    # five query and key blocks, the last padded; blocks above the diagonal skipped
    (13, 29, False, 5),   # keys unlike queries, both padded
    (16, 16, True, 64),   # one block, shorter than the block size
    (13, 29, False, 32),  # one block each, keys unlike queries: the probabilities kept for the backward
])
def test_values_and_gradients_equal_the_materialised_attention(T, S, causal, block):
    q, k, v, g = _inputs(2, T, S)
    out, grads = _value_and_grads(q, k, v, g, causal=causal, block=block, blocked=True)
    ref_out, ref_grads = _value_and_grads(q, k, v, g, causal=causal, block=block, blocked=False)
    assert out.shape == (2, T, H, K)
    np.testing.assert_allclose(out, ref_out, atol=2e-6, rtol=1e-5)
    for name, got, want in zip("qkv", grads, ref_grads):
        np.testing.assert_allclose(got, want, atol=5e-6, rtol=1e-5, err_msg=f"d{name}")
    if causal:  # query 0 sees key 0 only: its output is v[:, 0]
        np.testing.assert_allclose(out[:, 0], v[:, 0], atol=1e-6)


def test_bfloat16_inputs_give_bfloat16_within_its_precision():
    q, k, v, g = _inputs(2, 21, 21, jnp.bfloat16)
    out, grads = _value_and_grads(q, k, v, g, causal=True, block=8, blocked=True)
    ref_out, ref_grads = _value_and_grads(*(x.astype(jnp.float32) for x in (q, k, v, g)), causal=True, block=8,
                                          blocked=False)
    assert out.dtype == jnp.bfloat16 and all(x.dtype == jnp.bfloat16 for x in grads)
    np.testing.assert_allclose(out.astype(jnp.float32), ref_out, atol=3e-2, rtol=3e-2)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got.astype(jnp.float32), want, atol=6e-2, rtol=6e-2)


def _step_bytes(f, T, B=1):
    q = jax.ShapeDtypeStruct((B, T, H, 32), jnp.float32)
    step = jax.jit(jax.grad(lambda q, k, v: (f(q, k, v) ** 2).sum(), (0, 1, 2)))
    return step.lower(q, q, q).compile().memory_analysis().temp_size_in_bytes


def test_memory_grows_linearly_with_context():
    """The backward keeps no [B, H, T, T]: at T = 1024 one score matrix alone is 12 MiB (3 heads), XLA's attention
    takes more than that and the blocked one a small fraction; doubling T at most about doubles the blocked one's."""
    blocked = lambda q, k, v: blocked_attention(q, k, v, causal=True, block=128)  # noqa: E731
    xla = lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)  # noqa: E731
    scores = H * 1024 * 1024 * 4
    at_512, at_1024 = _step_bytes(blocked, 512), _step_bytes(blocked, 1024)
    assert _step_bytes(xla, 1024) > scores
    assert at_1024 < scores / 4
    assert at_1024 < 2.5 * at_512


def _lowered_text(T, implementation, platform="cpu", dtype=jnp.float32, causal=True):
    q = jax.ShapeDtypeStruct((1, T, H, 8), dtype)
    f = jax.jit(jax.grad(lambda q, k, v: dot_product_attention(q, k, v, is_causal=causal,
                                                               implementation=implementation, block=32)
                         .astype(jnp.float32).sum()))
    return export.export(f, platforms=[platform])(q, q, q).mlir_module()


def test_auto_blocks_on_cpu_from_the_threshold_and_never_elsewhere():
    """The blocked attention is the only one with loops (its blocks): ``auto`` lowers to it for a CPU from
    BLOCKED_FROM queries on, not below, and never for cuda or tpu; ``blocked`` lowers for all three."""
    assert "stablehlo.while" in _lowered_text(BLOCKED_FROM, "auto")
    assert "stablehlo.while" not in _lowered_text(BLOCKED_FROM - 1, "auto")
    for platform in ("cuda", "tpu"):
        assert "stablehlo.while" not in _lowered_text(BLOCKED_FROM, "auto", platform)
        assert "stablehlo.while" in _lowered_text(BLOCKED_FROM, "blocked", platform, jnp.bfloat16)


def test_transformer_with_blocked_attention_equals_xla_s():
    """The same Transformer (context 16, blocks of 5) under ``blocked`` and ``xla``: logits and parameter
    gradients equal; with the decoding cache (a mask) ``blocked`` falls back to XLA's and still decodes."""
    cfg = TransformerConfig(vocab_size=11, max_len=16, emb_dim=16, num_heads=2, num_layers=1, mlp_dim=32,
                            attention_impl="xla")
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, 11, (2, 16)), jnp.int32)
    shapes = jax.eval_shape(Transformer(cfg).init, jax.random.PRNGKey(0), tokens)["params"]
    params = jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), s.dtype), shapes)

    def loss(params, impl):
        model = Transformer(TransformerConfig(**{**cfg.__dict__, "attention_impl": impl, "attention_block": 5}))
        logits = model.apply({"params": params}, tokens)
        return (logits * jnp.cos(logits)).mean(), logits

    grad = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (_, want), want_grads = grad(params, "xla")
    (_, got), got_grads = grad(params, "blocked")
    np.testing.assert_allclose(got, want, atol=1e-5)
    for a, b in zip(jax.tree.leaves(got_grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(a, b, atol=1e-6)

    model = Transformer(TransformerConfig(**{**cfg.__dict__, "attention_impl": "blocked", "attention_block": 5}))
    cache = jax.eval_shape(functools.partial(model.init, decode=True), jax.random.PRNGKey(0), tokens)["cache"]
    cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), cache)
    step, _ = jax.jit(lambda p, c, t: model.apply({"params": p, "cache": c}, t, decode=True,
                                                  mutable=["cache"]))(params, cache, tokens[:, :3])
    np.testing.assert_allclose(step, want[:, :3], atol=1e-5)


def test_bad_arguments_are_refused():
    q = jnp.zeros((1, 4, H, K))
    with pytest.raises(ValueError, match="causal blocked attention needs as many queries as keys, got T=4 and S=3"):
        blocked_attention(q, q[:, :3], q[:, :3], causal=True)
    with pytest.raises(ValueError, match="positive number of positions, got 0"):
        blocked_attention(q, q, q, block=0)


def test_config_chooses_the_blocked_attention_and_checks_its_block():
    from p2t_jax.configuration import ConfigError, apply_overrides, load_config
    from p2t_jax.tasks import language_model

    config = apply_overrides(load_config(str(REPO / "configs" / "shakespeare.py") + ":smoke"),
                             ["model.attention_impl=blocked", "model.attention_block=7"])
    cfg = language_model.model_config(config)
    assert (cfg.attention_impl, cfg.attention_block) == ("blocked", 7)
    with pytest.raises(ConfigError, match="'model.attention_block' must be a positive number of positions, got 0"):
        language_model.validate(apply_overrides(config, ["model.attention_block=0"]))
