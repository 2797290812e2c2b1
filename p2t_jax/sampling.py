"""Autoregressive generation from a causal language model, compiled once.

The sampler keeps a fixed buffer ``int32[B, P + N]`` (prompt plus new tokens) and, at each
of the N steps, runs the model on the last ``context`` tokens (a sliding window, so
generation may run past the model's context), then draws the next token. The loop is a
``lax.fori_loop`` inside one ``jax.jit``: one compilation per (batch, prompt length, N).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp


def filter_logits(logits_BV: jax.Array, *, temperature: float, top_k: int = 0) -> jax.Array:
    """Scales by ``1/temperature`` and keeps only the ``top_k`` largest logits (0: all).

    Returns ``float32[B, V]`` with removed entries at ``-inf``.
    """
    logits_BV = logits_BV.astype(jnp.float32) / temperature
    if top_k and top_k < logits_BV.shape[-1]:
        kth_B1 = jax.lax.top_k(logits_BV, top_k)[0][:, -1:]
        logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
    return logits_BV


def sample_token(rng: jax.Array, logits_BV: jax.Array, *, temperature: float, top_k: int = 0) -> jax.Array:
    """Draws ``int32[B]``: argmax when ``temperature == 0``, else from the filtered softmax."""
    if temperature == 0:
        return logits_BV.argmax(-1).astype(jnp.int32)
    return jax.random.categorical(rng, filter_logits(logits_BV, temperature=temperature, top_k=top_k)).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("logits_fn", "context", "max_new_tokens", "temperature", "top_k"))
def generate(logits_fn: Callable, params, prompt_BP: jax.Array, rng: jax.Array, *, context: int,
             max_new_tokens: int, temperature: float = 1.0, top_k: int = 0) -> jax.Array:
    """Continues each prompt by ``max_new_tokens`` tokens.

    Args:
      logits_fn: ``(params, tokens_BT) -> float32[B, T, V]``, causal.
      params: the model parameters.
      prompt_BP: ``int32[B, P]`` prompts (equal length), P >= 1.
      rng: PRNG key; the token at step i uses ``fold_in(rng, i)``.
      context: the most tokens the model reads at once.
      max_new_tokens: N.
      temperature: 0 for greedy decoding.
      top_k: keep the k most likely tokens (0: all).

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
        token_B = sample_token(jax.random.fold_in(rng, i), last_BV, temperature=temperature, top_k=top_k)
        return jax.lax.dynamic_update_index_in_dim(buffer_BL, token_B, pos, axis=1)

    return jax.lax.fori_loop(0, max_new_tokens, body, buffer_BL)
