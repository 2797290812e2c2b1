"""Autoregressive generation from a causal language model, each variant compiled once.

Two samplers, both one ``jax.jit`` around a ``lax.fori_loop`` (one compilation per
batch, prompt length and number of new tokens):

* :func:`generate` recomputes the model on the last ``context`` tokens for every new
  token: an exact sliding window, simple and slow.
* :func:`generate_cached` keeps keys and values in the model's ``cache`` collection, so
  each new token costs one position. When the cache is full it is rebuilt from the last
  ``context - stride`` tokens (one prefill every ``stride`` tokens): every token still sees
  between ``context - stride`` and ``context`` tokens of history.
* :func:`generate_cached_padded` is the cached sampler for interactive callers: the prompt
  is padded to a fixed size and its length, the number of new tokens and the three
  filtering knobs are traced, so one compilation serves every request up to those sizes.

A task module that generates text says how its model decodes with ``decoder(config) ->``
:class:`p2t_jax.models.decoder.Decoder` (``p2t sample`` uses it: the cache where the model has one, recomputing the
window where it does not).

Filtering: ``temperature`` (0: greedy), ``top_k`` (keep the k most likely), ``top_p``
(keep the smallest set of most likely tokens whose probability reaches p).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import linen as nn


def filter_logits(logits_BV: jax.Array, *, temperature: float, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Scales by ``1/temperature``, then keeps the ``top_k`` largest and the top-``p`` nucleus.

    Returns ``float32[B, V]`` with removed entries at ``-inf``.
    """
    logits_BV = logits_BV.astype(jnp.float32) / temperature
    if top_k and top_k < logits_BV.shape[-1]:
        kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
    if top_p < 1.0:
        logits_BV = _nucleus(logits_BV, top_p)
    return logits_BV


def _nucleus(logits_BV: jax.Array, top_p: float | jax.Array) -> jax.Array:
    """Keeps the smallest set of most likely tokens whose probability reaches ``top_p``; the rest ``-inf``."""
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    mass_before_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV
    keep_B1 = jnp.sum(mass_before_BV < top_p, axis=-1, keepdims=True)  # >= 1: the top token always stays
    threshold_B1 = jnp.take_along_axis(sorted_BV, keep_B1 - 1, axis=-1)
    return jnp.where(logits_BV < threshold_B1, -jnp.inf, logits_BV)


def sample_token(rng: jax.Array, logits_BV: jax.Array, *, temperature: float, top_k: int = 0,
                 top_p: float = 1.0) -> jax.Array:
    """Draws ``int32[B]``: argmax when ``temperature == 0``, else from the filtered softmax."""
    if temperature == 0:
        return logits_BV.argmax(-1).astype(jnp.int32)
    filtered = filter_logits(logits_BV, temperature=temperature, top_k=top_k, top_p=top_p)
    return jax.random.categorical(rng, filtered).astype(jnp.int32)


def _stream(stream_fn: Callable | None, i, token_B) -> None:
    if stream_fn is not None:
        jax.experimental.io_callback(lambda i, t: stream_fn(int(i), t), None, i, token_B, ordered=True)


@functools.partial(jax.jit, static_argnames=("logits_fn", "context", "max_new_tokens", "temperature", "top_k",
                                             "top_p", "stream_fn"))
def generate(logits_fn: Callable, params, prompt_BP: jax.Array, rng: jax.Array, *, context: int,
             max_new_tokens: int, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             stream_fn: Callable | None = None) -> jax.Array:
    """Continues each prompt by ``max_new_tokens`` tokens, recomputing the window each time.

    Args:
      logits_fn: ``(params, tokens_BT) -> float32[B, T, V]``, causal.
      params: the model parameters.
      prompt_BP: ``int32[B, P]`` prompts (equal length), P >= 1.
      rng: PRNG key; the token at step i uses ``fold_in(rng, i)``.
      context: the most tokens the model reads at once.
      max_new_tokens: N.
      temperature, top_k, top_p: see :func:`filter_logits`; temperature 0 is greedy.
      stream_fn: optional host function ``(i, int32[B]) -> None`` called with each new token.

    Returns:
      ``int32[B, P + N]``: the prompts followed by the generated tokens.
    """
    B, P = prompt_BP.shape
    total = P + max_new_tokens
    window = min(context, total)
    buffer_BL = jnp.zeros((B, total), jnp.int32).at[:, :P].set(prompt_BP.astype(jnp.int32))

    def body(i, buffer_BL):
        pos = P + i  # index of the token to produce
        start = jnp.clip(pos - window, 0, total - window)
        tokens_BW = jax.lax.dynamic_slice_in_dim(buffer_BL, start, window, axis=1)
        logits_BWV = logits_fn(params, tokens_BW)
        last_BV = jax.lax.dynamic_index_in_dim(logits_BWV, pos - 1 - start, axis=1, keepdims=False)
        token_B = sample_token(jax.random.fold_in(rng, i), last_BV, temperature=temperature, top_k=top_k,
                               top_p=top_p)
        _stream(stream_fn, i, token_B)
        return jax.lax.dynamic_update_index_in_dim(buffer_BL, token_B, pos, axis=1)

    return jax.lax.fori_loop(0, max_new_tokens, body, buffer_BL)


def init_cache(model: nn.Module, batch_size: int) -> dict:
    """An empty ``cache`` collection for ``model`` (zeros; nothing is computed)."""
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((batch_size, model.cfg.max_len),
                                                                                 jnp.int32), decode=True)["cache"])
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "temperature", "top_k", "top_p", "stride",
                                             "stream_fn"))
def generate_cached(model: nn.Module, params, prompt_BP: jax.Array, rng: jax.Array, *, max_new_tokens: int,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, stride: int = 0,
                    stream_fn: Callable | None = None) -> jax.Array:
    """Continues each prompt by ``max_new_tokens`` tokens with a key/value cache.

    Args:
      model: a :class:`~p2t_jax.models.transformer.Transformer` (its ``cfg.max_len`` is the context).
      params: its parameters.
      prompt_BP: ``int32[B, P]`` prompts, P >= 1 (longer prompts keep their last tokens).
      rng: PRNG key; the token at step i uses ``fold_in(rng, i)`` (as in :func:`generate`).
      max_new_tokens: N.
      temperature, top_k, top_p: see :func:`filter_logits`.
      stride: when the cache is full, drop this many oldest positions and rebuild it from the
        rest; 0 means ``max_len // 4`` (at least 1).
      stream_fn: optional host function ``(i, int32[B]) -> None`` called with each new token.

    Returns:
      ``int32[B, P + N]``.
    """
    B, P = prompt_BP.shape
    L = model.cfg.max_len
    stride = stride or max(1, L // 4)
    keep = L - stride
    total = P + max_new_tokens
    # At least one context long, so that the rebuild branch (traced even when a short
    # generation never fills the cache) can always slice ``keep`` tokens.
    buffer_BL = jnp.zeros((B, max(total, L)), jnp.int32).at[:, :P].set(prompt_BP.astype(jnp.int32))

    def run(cache, tokens_BT):
        logits_BTV, mutated = model.apply({"params": params, "cache": cache}, tokens_BT, decode=True,
                                          mutable=["cache"])
        return logits_BTV[:, -1], mutated["cache"]

    first = prompt_BP[:, -min(P, keep if P > L else L):]
    last_BV, cache = run(init_cache(model, B), first.astype(jnp.int32))

    def body(i, carry):
        buffer_BL, cache, last_BV = carry
        pos = P + i
        token_B = sample_token(jax.random.fold_in(rng, i), last_BV, temperature=temperature, top_k=top_k,
                               top_p=top_p)
        _stream(stream_fn, i, token_B)
        buffer_BL = jax.lax.dynamic_update_index_in_dim(buffer_BL, token_B, pos, axis=1)

        def rebuild(_):
            window_BK = jax.lax.dynamic_slice_in_dim(buffer_BL, pos + 1 - keep, keep, axis=1)
            return run(init_cache(model, B), window_BK)

        def extend(cache):
            return run(cache, token_B[:, None])

        last_BV, cache = jax.lax.cond(cache["position"] >= L, rebuild, extend, cache)
        return buffer_BL, cache, last_BV

    buffer_BL, _, _ = jax.lax.fori_loop(0, max_new_tokens, body, (buffer_BL, cache, last_BV))
    return buffer_BL[:, :total]


def sample_token_traced(rng: jax.Array, logits_BV: jax.Array, temperature: jax.Array, top_k: jax.Array,
                        top_p: jax.Array) -> jax.Array:
    """:func:`sample_token` with the three knobs as traced scalars: the same draw for the same values.

    One compiled function then serves every setting (``temperature`` 0 is greedy, ``top_k``
    0 keeps every token, ``top_p`` 1 keeps the whole distribution). Returns ``int32[B]``.
    """
    B, V = logits_BV.shape
    temperature = jnp.asarray(temperature, jnp.float32)
    top_k, top_p = jnp.asarray(top_k, jnp.int32), jnp.asarray(top_p, jnp.float32)
    scaled_BV = logits_BV.astype(jnp.float32) / jnp.where(temperature > 0, temperature, 1.0)
    sorted_BV = jnp.sort(scaled_BV, axis=-1)[:, ::-1]
    kth_B1 = jax.lax.dynamic_slice_in_dim(sorted_BV, jnp.clip(top_k, 1, V) - 1, 1, axis=1)
    cut_by_k = (top_k > 0) & (top_k < V)
    scaled_BV = jnp.where(cut_by_k & (scaled_BV < kth_B1), -jnp.inf, scaled_BV)
    scaled_BV = jnp.where(top_p < 1.0, _nucleus(scaled_BV, top_p), scaled_BV)
    drawn_B = jax.random.categorical(rng, scaled_BV)
    return jnp.where(temperature > 0, drawn_B, logits_BV.argmax(-1)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens", "stride", "stream_fn"))
def generate_cached_padded(model: nn.Module, params, prompt_BP: jax.Array, prompt_len: jax.Array, rng: jax.Array,
                           num_new: jax.Array, temperature: jax.Array, top_k: jax.Array, top_p: jax.Array, *,
                           max_new_tokens: int, stride: int = 0, stream_fn: Callable | None = None) -> jax.Array:
    """:func:`generate_cached` compiled once for every prompt, length and setting up to fixed sizes.

    The prompt arrives padded to P positions with its real length beside it, and the number
    of new tokens, temperature, top-k and top-p are traced: an interactive caller changes
    any of them without a new compilation (one per model, batch size, P, N, stride and
    ``stream_fn``). The prompt is read one token at a time into the cache (``lax.fori_loop``
    ``prompt_len`` steps, the same loop that then generates) instead of in one call; the draws
    and the sliding of the cache are :func:`generate_cached`'s, so for the same values both
    return the same tokens.

    Args:
      model: a :class:`~p2t_jax.models.transformer.Transformer`.
      params: its parameters.
      prompt_BP: ``int32[B, P]``: each row's prompt in its first ``prompt_len`` positions (the
        rest is ignored).
      prompt_len: ``int32[]`` in ``[1, P]``.
      rng: PRNG key; the token at step i uses ``fold_in(rng, i)``.
      num_new: ``int32[]`` in ``[0, N]``: tokens to generate.
      temperature, top_k, top_p: scalars, see :func:`sample_token_traced`.
      max_new_tokens: N, the most tokens one call may generate (static).
      stride: see :func:`generate_cached` (static).
      stream_fn: optional host function ``(i, int32[B]) -> None`` called with each new token.

    Returns:
      ``int32[B, P + N]``: the prompt, then the ``num_new`` generated tokens, then zeros.
    """
    B, P = prompt_BP.shape
    L = model.cfg.max_len
    stride = stride or max(1, L // 4)
    keep = L - stride
    prompt_len = jnp.asarray(prompt_len, jnp.int32)
    positions_L = jnp.arange(max(P + max_new_tokens, L))
    buffer_BL = jnp.zeros((B, positions_L.shape[0]), jnp.int32).at[:, :P].set(prompt_BP.astype(jnp.int32))
    buffer_BL = jnp.where(positions_L < prompt_len, buffer_BL, 0)

    def run(cache, tokens_BT):
        logits_BTV, mutated = model.apply({"params": params, "cache": cache}, tokens_BT, decode=True,
                                          mutable=["cache"])
        return logits_BTV[:, -1], mutated["cache"]

    def feed(t, buffer_BL, cache):
        """Reads the token at position t; the next-token logits ``[B, V]`` and the cache."""

        def rebuild(_):
            return run(init_cache(model, B), jax.lax.dynamic_slice_in_dim(buffer_BL, t + 1 - keep, keep, axis=1))

        def extend(cache):
            return run(cache, jax.lax.dynamic_slice_in_dim(buffer_BL, t, 1, axis=1))

        return jax.lax.cond(cache["position"] >= L, rebuild, extend, cache)

    # One loop reads the prompt and then its own draws: step t reads the token at position t
    # and, from the prompt's last token on, draws token i = t + 1 - prompt_len into t + 1.
    # A prompt longer than the context starts from its last ``keep`` tokens, as in generate_cached.
    first = jnp.where(prompt_len > L, prompt_len - keep, 0)

    def body(t, carry):
        buffer_BL, cache = carry
        last_BV, cache = feed(t, buffer_BL, cache)
        i = t + 1 - prompt_len
        token_B = sample_token_traced(jax.random.fold_in(rng, jnp.maximum(i, 0)), last_BV, temperature, top_k, top_p)
        if stream_fn is not None:  # called for the prompt's steps too (i < 0), which it skips
            _stream(lambda i, token_B: None if i < 0 else stream_fn(i, token_B), i, token_B)
        drawn_BL = jax.lax.dynamic_update_index_in_dim(buffer_BL, token_B, t + 1, axis=1)
        return jnp.where(i >= 0, drawn_BL, buffer_BL), cache

    end = prompt_len + jnp.asarray(num_new, jnp.int32) - 1
    buffer_BL, _ = jax.lax.fori_loop(first, end, body, (buffer_BL, init_cache(model, B)))
    return buffer_BL[:, :P + max_new_tokens]
