"""Sampling: deterministic for a seed, top-k respected, greedy, sliding window past the context."""

import functools

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


@functools.cache  # one model and one logits function for the module: generate's compilations are reused
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


@functools.cache  # built once; the jitted functions below are shared by every test that uses it
def _cached_model(max_len=8):
    cfg = TransformerConfig(vocab_size=V, max_len=max_len, emb_dim=16, num_heads=2, num_layers=2, mlp_dim=32)
    model = Transformer(cfg)
    params = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, max_len), jnp.int32)))["params"]
    return model, params


@functools.cache
def _forward(model):
    """``model``'s full forward pass, jitted once per model: ``(params, int32[B, T]) -> float32[B, T, V]``."""
    return jax.jit(lambda p, t: model.apply({"params": p}, t))


@functools.cache
def _decode_step(model):
    """``model``'s cached decoding call, jitted once per model: ``(params, cache, int32[B, T]) -> (logits, mutated)``."""
    return jax.jit(lambda p, cache, t: model.apply({"params": p, "cache": cache}, t, decode=True, mutable=["cache"]))


@pytest.mark.parametrize("prefill", [1, 3])
def test_cached_logits_equal_full_recompute_at_every_position(prefill):
    model, params = _cached_model()
    tokens = jax.random.randint(jax.random.PRNGKey(4), (2, 8), 0, V)
    full = _forward(model)(params, tokens)
    step = functools.partial(_decode_step(model), params)
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
    fn = _forward(model)
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
    forward = _forward(model)
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


# --- one compilation for every request (the playground's sampler) ----------------------

from conftest import CompileCounter  # noqa: E402

from p2t_jax.sampling import generate_cached_padded, sample_token, sample_token_traced  # noqa: E402


@pytest.mark.parametrize("temperature, top_k, top_p", [(0.0, 0, 1.0), (1.0, 0, 1.0), (0.7, 3, 1.0), (1.3, 0, 0.6),
                                                       (0.9, 5, 0.8), (1.0, V, 1.0), (1.0, 1, 1.0)])
def test_traced_knobs_draw_what_the_static_ones_draw(temperature, top_k, top_p):
    logits = jax.random.normal(jax.random.PRNGKey(2), (64, V)) * 2.0
    draw = jax.jit(sample_token_traced)
    for seed in range(4):
        rng = jax.random.PRNGKey(seed)
        static = sample_token(rng, logits, temperature=temperature, top_k=top_k, top_p=top_p)
        chex.assert_trees_all_equal(draw(rng, logits, temperature, top_k, top_p), static)
    assert draw._cache_size() == 1  # every setting above ran through one compilation


def _padded(model, params, prompt, n, *, pad_to=12, cap=24, **kw):
    """``generate_cached_padded`` on ``prompt`` ``[B, P]`` padded with junk to ``pad_to``; the valid part."""
    B, P = prompt.shape
    padded = jnp.concatenate([prompt, jnp.full((B, pad_to - P), 7, jnp.int32)], axis=1)
    knobs = dict(temperature=kw.pop("temperature", 1.0), top_k=kw.pop("top_k", 0), top_p=kw.pop("top_p", 1.0))
    out = generate_cached_padded(model, params, padded, P, kw.pop("rng", jax.random.PRNGKey(3)), n,
                                 knobs["temperature"], knobs["top_k"], knobs["top_p"], max_new_tokens=cap, **kw)
    chex.assert_shape(out, (B, pad_to + cap))
    assert not np.asarray(out[:, P + n:]).any()  # past the generated tokens: zeros, not the padding
    return out[:, :P + n]


def test_padded_generation_equals_generate_cached():
    """Same tokens for short and full-context prompts, also sliding past the context (8)."""
    model, params = _cached_model()
    new, kw = 20, dict(temperature=0.8, top_k=3, top_p=0.9)
    for prompt_len in (1, 8):
        prompt = jax.random.randint(jax.random.PRNGKey(prompt_len), (2, prompt_len), 0, V)
        chex.assert_trees_all_equal(_padded(model, params, prompt, new, **kw),
                                    generate_cached(model, params, prompt, jax.random.PRNGKey(3), max_new_tokens=new,
                                                    **kw))
    chex.assert_trees_all_equal(_padded(model, params, prompt, 0, **kw), prompt)  # nothing new: the prompt


def test_padded_generation_slides_the_window_like_the_reference():
    """Greedy, from a prompt longer than the context (8), sliding by 3 as the cache fills."""
    model, params = _cached_model()
    prompt_len, stride = 11, 3
    prompt = [int(x) for x in jax.random.randint(jax.random.PRNGKey(7), (prompt_len,), 0, V)]
    out = _padded(model, params, jnp.asarray([prompt]), 20, temperature=0.0, stride=stride)
    assert out[0].tolist() == _stride_reference(model, params, prompt, 20, stride)


def test_padded_generation_compiles_once_and_streams_in_order():
    model, params = _cached_model()
    seen = []

    def stream(i, tokens):
        seen.append((i, int(tokens[0])))

    requests = ((2, 12, 1.0, 0, 1.0), (5, 3, 0.0, 4, 0.5), (1, 20, 0.6, 2, 0.9))
    for n, (prompt_len, new, temperature, top_k, top_p) in enumerate(requests):
        seen.clear()
        padded = np.zeros((1, 6), np.int32)
        padded[0, :prompt_len] = np.arange(1, prompt_len + 1)
        with CompileCounter() as compiled:
            out = generate_cached_padded(model, params, padded, prompt_len, jax.random.PRNGKey(1), new, temperature,
                                         top_k, top_p, max_new_tokens=20, stream_fn=stream)
            jax.effects_barrier()
        assert compiled.count >= 1 if n == 0 else compiled.count == 0  # later requests reuse the first compilation
        assert [i for i, _ in seen] == list(range(new))
        assert [t for _, t in seen] == out[0, prompt_len:prompt_len + new].tolist()
