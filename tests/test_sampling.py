"""Sampling: deterministic for a seed, top-k respected, greedy, sliding window past the context."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from p2t_jax.models.transformer import Transformer, TransformerConfig
from p2t_jax.sampling import filter_logits, generate

V = 11
FIXED_LOGITS = jnp.log(jnp.arange(1, V + 1, dtype=jnp.float32))  # token v has probability ∝ v + 1


def fixed_logits_fn(params, tokens_BT):
    return jnp.broadcast_to(FIXED_LOGITS, tokens_BT.shape + (V,))


def _model():
    cfg = TransformerConfig(vocab_size=V, max_len=8, emb_dim=16, num_heads=2, num_layers=1, mlp_dim=32)
    model = Transformer(cfg)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32)))["params"]
    return (lambda p, t: model.apply({"params": p}, t)), params


def test_same_seed_same_text_other_seed_other_text():
    fn, params = _model()
    prompt = jnp.array([[1, 2, 3]])
    kw = dict(context=8, max_new_tokens=20, temperature=1.0, top_k=0)
    a = generate(fn, params, prompt, jax.random.PRNGKey(5), **kw)
    b = generate(fn, params, prompt, jax.random.PRNGKey(5), **kw)
    c = generate(fn, params, prompt, jax.random.PRNGKey(6), **kw)
    chex.assert_shape(a, (1, 23))
    chex.assert_trees_all_equal(a, b)
    np.testing.assert_array_equal(a[:, :3], prompt)
    assert not np.array_equal(a, c)


def test_top_k_keeps_only_the_k_most_likely():
    out = generate(fixed_logits_fn, None, jnp.zeros((256, 1), jnp.int32), jax.random.PRNGKey(0),
                   context=4, max_new_tokens=8, temperature=1.0, top_k=3)
    drawn = set(np.asarray(out[:, 1:]).ravel().tolist())
    assert drawn == {V - 3, V - 2, V - 1}
    filtered = filter_logits(FIXED_LOGITS[None], temperature=1.0, top_k=3)
    assert int(jnp.isfinite(filtered).sum()) == 3


def test_greedy_and_top_1_agree_and_pick_the_argmax():
    greedy = generate(fixed_logits_fn, None, jnp.zeros((2, 2), jnp.int32), jax.random.PRNGKey(0),
                      context=4, max_new_tokens=5, temperature=0.0)
    top1 = generate(fixed_logits_fn, None, jnp.zeros((2, 2), jnp.int32), jax.random.PRNGKey(9),
                    context=4, max_new_tokens=5, temperature=0.7, top_k=1)
    assert (np.asarray(greedy[:, 2:]) == V - 1).all()
    chex.assert_trees_all_equal(greedy, top1)


def test_sliding_window_matches_recomputing_the_last_context_tokens():
    """Greedy generation well past the context equals a plain Python loop over the last 8 tokens."""
    fn, params = _model()
    prompt = np.array([[3, 1, 4, 1, 5]])
    out = np.asarray(generate(fn, params, jnp.asarray(prompt), jax.random.PRNGKey(0), context=8,
                              max_new_tokens=15, temperature=0.0))
    tokens = list(prompt[0])
    forward = jax.jit(fn)
    for _ in range(15):
        window = jnp.asarray([tokens[-8:]])
        tokens.append(int(forward(params, window)[0, -1].argmax()))
    assert out[0].tolist() == tokens


# --- the key/value cache -------------------------------------------------------------

from p2t_jax.sampling import generate_cached, init_cache  # noqa: E402


def _cached_model(max_len=8):
    cfg = TransformerConfig(vocab_size=V, max_len=max_len, emb_dim=16, num_heads=2, num_layers=2, mlp_dim=32)
    model = Transformer(cfg)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, max_len), jnp.int32)))["params"]
    return model, params


@pytest.mark.parametrize("prefill", [1, 3])
def test_cached_logits_equal_full_recompute_at_every_position(prefill):
    model, params = _cached_model()
    tokens = jax.random.randint(jax.random.PRNGKey(4), (2, 8), 0, V)
    full = model.apply({"params": params}, tokens)
    step = jax.jit(lambda cache, t: model.apply({"params": params, "cache": cache}, t, decode=True, mutable=["cache"]))
    logits, mutated = step(init_cache(model, 2), tokens[:, :prefill])
    steps = [logits]
    cache = mutated["cache"]
    for t in range(prefill, 8):
        logits, mutated = step(cache, tokens[:, t:t + 1])
        cache = mutated["cache"]
        steps.append(logits)
    chex.assert_trees_all_close(jnp.concatenate(steps, axis=1), full, atol=1e-5)
    assert int(cache["position"]) == 8


@pytest.mark.parametrize("temperature, top_k, new", [(0.0, 0, 5), (1.0, 0, 5), (0.8, 3, 5), (0.0, 0, 1)])
def test_cached_generation_equals_recompute_within_the_context(temperature, top_k, new):
    """Also a generation shorter than the tokens kept when the cache slides (3 + 1 < 8 - 2)."""
    model, params = _cached_model()
    fn = lambda p, t: model.apply({"params": p}, t)  # noqa: E731
    prompt = jnp.array([[1, 2, 3], [4, 5, 6]])
    kw = dict(max_new_tokens=new, temperature=temperature, top_k=top_k)
    plain = generate(fn, params, prompt, jax.random.PRNGKey(3), context=8, **kw)
    cached = generate_cached(model, params, prompt, jax.random.PRNGKey(3), **kw)
    chex.assert_trees_all_equal(plain, cached)


def _stride_reference(model, params, prompt, n, stride):
    """Greedy decoding that re-reads the history the cache policy keeps, with a full forward each time."""
    L = model.cfg.max_len
    keep = L - stride
    tokens = list(prompt)
    forward = jax.jit(lambda p, t: model.apply({"params": p}, t))
    start = 0 if len(prompt) <= L else len(prompt) - keep
    for q in range(len(prompt), len(prompt) + n):
        if q - start > L:
            start = q - keep
        window = jnp.asarray([tokens[start:q]])
        tokens.append(int(forward(params, window)[0, -1].argmax()))
    return tokens


@pytest.mark.parametrize("prompt_len, stride", [(3, 2), (3, 0), (11, 3)])
def test_cache_overflow_slides_the_window(prompt_len, stride):
    model, params = _cached_model()
    prompt = [int(x) for x in jax.random.randint(jax.random.PRNGKey(7), (prompt_len,), 0, V)]
    out = generate_cached(model, params, jnp.asarray([prompt]), jax.random.PRNGKey(0), max_new_tokens=20,
                          temperature=0.0, stride=stride)
    assert out[0].tolist() == _stride_reference(model, params, prompt, 20, stride or 2)


def test_top_p_keeps_the_smallest_set_reaching_p():
    # probabilities (v + 1) / 66: from the top 11, 10, 9, 8 sum to 38/66 >= 0.5 while 30/66 < 0.5
    filtered = filter_logits(FIXED_LOGITS[None], temperature=1.0, top_p=0.5)
    assert np.isfinite(np.asarray(filtered[0])).tolist() == [False] * 7 + [True] * 4
    assert int(jnp.isfinite(filter_logits(FIXED_LOGITS[None], temperature=1.0, top_p=1e-6)).sum()) == 1
    out = generate(fixed_logits_fn, None, jnp.zeros((256, 1), jnp.int32), jax.random.PRNGKey(0),
                   context=4, max_new_tokens=8, temperature=1.0, top_p=0.5)
    assert set(np.asarray(out[:, 1:]).ravel().tolist()) == {7, 8, 9, 10}


def test_streaming_reports_every_token_in_order():
    model, params = _cached_model()
    seen = []
    out = generate_cached(model, params, jnp.array([[1, 2]]), jax.random.PRNGKey(1), max_new_tokens=12,
                          temperature=1.0, stream_fn=lambda i, tokens: seen.append((i, int(tokens[0]))))
    jax.effects_barrier()
    assert [i for i, _ in seen] == list(range(12))
    assert [t for _, t in seen] == out[0, 2:].tolist()
