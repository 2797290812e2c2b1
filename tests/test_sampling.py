"""Sampling: deterministic for a seed, top-k respected, greedy, sliding window past the context."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
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
    for _ in range(15):
        window = jnp.asarray([tokens[-8:]])
        tokens.append(int(fn(params, window)[0, -1].argmax()))
    assert out[0].tolist() == tokens
