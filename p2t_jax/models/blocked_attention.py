"""Blocked (online-softmax, flash-style) dot-product attention: memory linear in the context.

Shapes: B batch, T queries, S keys, H heads, K head width; ``b`` the block (queries and keys
are cut into blocks of ``b`` positions, the last one padded).

The written-out attention (:func:`p2t_jax.models.attention.attention_weights`) and XLA's
``jax.nn.dot_product_attention`` both materialise the scores ``[B, H, T, S]``, and their
autodiff keeps the probabilities of that size for the backward pass, so a step's memory
grows with the square of the context. :func:`blocked_attention` never holds more than one
``[B, H, b, b]`` block of scores:

* **forward**: for each query block, a loop over the key blocks keeps a running maximum
  ``m``, a running sum ``l`` of ``exp(s - m)`` and a running weighted sum of the values,
  rescaling the last two by ``exp(m_old - m_new)`` when the maximum grows (the online
  softmax of Milakov & Gimelshein 2018, as in FlashAttention, Dao et al. 2022). With a causal
  mask a query block stops at its diagonal key block, so the blocks above the diagonal are
  not computed at all (about half the work at long context).
* **backward** (``jax.custom_vjp``): the residuals are the inputs, the output and the
  log-sum-exp per query ``[B, H, T]``: linear in T. For each key block, a loop over the
  query blocks at or below the diagonal recomputes that block's probabilities from the
  log-sum-exp and accumulates ``dK``, ``dV`` (per key block) and ``dQ`` (FlashAttention-2's
  order; Dao 2023).
* **one block** (T and S at most ``block``, e.g. the nanoGPT CPU recipe's context 64): the
  same arithmetic as straight-line code, and the backward reads the probabilities the forward
  pass kept (``[B, H, T, S]``, at most one block's worth) instead of recomputing them: one
  score matmul and one ``exp`` per layer fewer (the train step ~2-3% faster on a 2-core
  EPYC, ``bench/NOTES.md`` change 19).

Scores, the softmax statistics and the accumulators are float32 whatever the inputs' dtype
(bfloat16 inputs give a bfloat16 output). Equal to the materialised attention to float
tolerance, values and gradients (``tests/test_blocked_attention.py``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

MASKED = jnp.finfo(jnp.float32).min  # a masked score: exp(MASKED - m) is exactly 0 for any finite m


def blocked_attention(q_BTHK: jax.Array, k_BSHK: jax.Array, v_BSHK: jax.Array, *, causal: bool = False,
                      scale: float | None = None, block: int = 128) -> jax.Array:
    """``[B, T, H, K]``: ``softmax(scale * q . k) . v`` computed block by block.

    Args:
      q_BTHK: queries. k_BSHK, v_BSHK: keys and values.
      causal: query t attends to keys s <= t (self-attention from position 0: needs T == S).
      scale: multiplies the logits; None: ``1 / sqrt(K)``.
      block: positions per block, for queries and keys (a length shorter than it is one block).

    Raises:
      ValueError: ``causal`` with T != S, or ``block`` < 1.
    """
    T, S = q_BTHK.shape[1], k_BSHK.shape[1]
    if causal and T != S:
        raise ValueError(f"causal blocked attention needs as many queries as keys, got T={T} and S={S}.")
    if block < 1:
        raise ValueError(f"the attention block must be a positive number of positions, got {block}.")
    scale = q_BTHK.shape[-1] ** -0.5 if scale is None else float(scale)
    return _blocked(q_BTHK, k_BSHK, v_BSHK, causal, scale, int(block))


def _to_blocks(x_BTHK: jax.Array, b: int) -> jax.Array:
    """``[B, T, H, K] -> [n, B, H, b, K]``, T padded with zeros to n * b."""
    B, T, H, K = x_BTHK.shape
    n = -(-T // b)
    x_BTHK = jnp.pad(x_BTHK, ((0, 0), (0, n * b - T), (0, 0), (0, 0)))
    return x_BTHK.reshape(B, n, b, H, K).transpose(1, 0, 3, 2, 4)


def _from_blocks(x_nBHbK: jax.Array, length: int) -> jax.Array:
    """``[n, B, H, b, K] -> [B, T, H, K]``, the padding dropped."""
    n, B, H, b, K = x_nBHbK.shape
    return x_nBHbK.transpose(1, 0, 3, 2, 4).reshape(B, n * b, H, K)[:, :length]


def _sizes(T: int, S: int, block: int) -> tuple[int, int, int, int]:
    """(query block, key block, number of query blocks, number of key blocks)."""
    bq, bk = min(block, T), min(block, S)
    return bq, bk, -(-T // bq), -(-S // bk)


def _scores(q_BHqK, k_BHkK, i, j, bq, bk, S, causal, scale):
    """``float32[B, H, bq, bk]``: the scaled scores of query block i against key block j, MASKED where a
    key is padding or (causal) after the query."""
    s = jnp.einsum("bhqk,bhsk->bhqs", q_BHqK, k_BHkK, preferred_element_type=jnp.float32) * scale
    key_pos = j * bk + jnp.arange(bk)
    allowed = (key_pos < S)[None, :]
    if causal:
        allowed = allowed & (key_pos[None, :] <= (i * bq + jnp.arange(bq))[:, None])
    return jnp.where(allowed, s, MASKED)


def _key_blocks_for(i, bq, bk, nk, causal):
    """How many key blocks query block i reads: up to its diagonal when causal, else all."""
    return jnp.minimum(nk, (i * bq + bq - 1) // bk + 1) if causal else nk


def _online_block(q_i, k_j, v_j, i, j, carry, *, bq, bk, S, causal, scale):
    """One key block of the online softmax for query block i: the running (max, sum, weighted values), and
    this block's unnormalised probabilities ``float32[B, H, bq, bk]``."""
    m, total, acc = carry
    s = _scores(q_i, k_j, i, j, bq, bk, S, causal, scale)
    m_new = jnp.maximum(m, s.max(-1))
    p = jnp.exp(s - m_new[..., None])
    correction = jnp.exp(m - m_new)
    total = total * correction + p.sum(-1)
    acc = acc * correction[..., None] + jnp.einsum("bhqs,bhsk->bhqk", p.astype(v_j.dtype), v_j,
                                                   preferred_element_type=jnp.float32)
    return (m_new, total, acc), p


def _forward(q_BTHK, k_BSHK, v_BSHK, causal, scale, block):
    """(output ``[B, T, H, K]``, log-sum-exp ``float32[n, B, H, bq]``, the blocked output, the blocked q, k, v,
    and with one block the probabilities ``float32[B, H, T, S]``, else None)."""
    T, S = q_BTHK.shape[1], k_BSHK.shape[1]
    bq, bk, nq, nk = _sizes(T, S, block)
    q, k, v = _to_blocks(q_BTHK, bq), _to_blocks(k_BSHK, bk), _to_blocks(v_BSHK, bk)
    B, H, K = q.shape[1], q.shape[2], q.shape[4]
    online = functools.partial(_online_block, bq=bq, bk=bk, S=S, causal=causal, scale=scale)
    init = (jnp.full((B, H, bq), MASKED, jnp.float32), jnp.zeros((B, H, bq), jnp.float32),
            jnp.zeros((B, H, bq, K), jnp.float32))

    def finish(m, total, acc):
        return (acc / total[..., None]).astype(q_BTHK.dtype), m + jnp.log(total)

    probs = None
    if nq == nk == 1:  # one block (context <= block): straight-line code, no loop for XLA to run
        carry, e = online(q[0], k[0], v[0], 0, 0, init)
        out, lse = finish(*carry)
        out, lse, probs = out[None], lse[None], e / carry[1][..., None]
    else:
        def query_block(_, xs):
            i, q_i = xs
            carry = jax.lax.fori_loop(0, _key_blocks_for(i, bq, bk, nk, causal),
                                      lambda j, c: online(q_i, k[j], v[j], i, j, c)[0], init)
            return None, finish(*carry)

        _, (out, lse) = jax.lax.scan(query_block, None, (jnp.arange(nq), q))
    return _from_blocks(out, T), lse, out, (q, k, v), probs


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _blocked(q_BTHK, k_BSHK, v_BSHK, causal, scale, block):
    return _forward(q_BTHK, k_BSHK, v_BSHK, causal, scale, block)[0]


def _blocked_fwd(q_BTHK, k_BSHK, v_BSHK, causal, scale, block):
    out_BTHK, lse, out, qkv, probs = _forward(q_BTHK, k_BSHK, v_BSHK, causal, scale, block)
    return out_BTHK, (qkv, out, lse, probs, q_BTHK.shape[1], k_BSHK.shape[1])


def _over_queries(x_BHqs, y_BHqK):
    """``float32[B, H, s, K]``: ``sum_q x[q, s] y[q, K]``, from a transposed copy of x that XLA keeps (behind
    an optimisation barrier, else it folds the transpose back into the dot): XLA-CPU runs a dot that
    contracts a leading dimension as an Eigen batched dot, and a plain one through XNNPACK (bench/NOTES.md)."""
    x_BHsq = jax.lax.optimization_barrier(jnp.swapaxes(x_BHqs, -1, -2))
    return jnp.einsum("bhsq,bhqk->bhsk", x_BHsq, y_BHqK, preferred_element_type=jnp.float32)


def _backward_block(q_i, do_i, lse_i, d_i, k_j, v_j, i, j, *, bq, bk, S, causal, scale, p=None):
    """Query block i's share of key block j's gradients: (dQ_i, dK_j, dV_j), float32."""
    if p is None:
        s = _scores(q_i, k_j, i, j, bq, bk, S, causal, scale)
        p = jnp.exp(s - lse_i[..., None])  # masked scores give exactly 0
    dv_j = _over_queries(p.astype(do_i.dtype), do_i)
    dp = jnp.einsum("bhqk,bhsk->bhqs", do_i, v_j, preferred_element_type=jnp.float32)
    ds = (p * (dp - d_i[..., None]) * scale).astype(q_i.dtype)
    dk_j = _over_queries(ds, q_i)
    dq_i = jnp.einsum("bhqs,bhsk->bhqk", ds, k_j, preferred_element_type=jnp.float32)
    return dq_i, dk_j, dv_j


def _blocked_bwd(causal, scale, block, residuals, dout_BTHK):
    (q, k, v), out, lse, probs, T, S = residuals
    bq, bk, nq, nk = _sizes(T, S, block)
    dout = _to_blocks(dout_BTHK, bq)
    # D_t = sum_k dO_tk O_tk: the softmax backward's row term, [n, B, H, bq]
    d = jnp.einsum("nbhqk,nbhqk->nbhq", dout.astype(jnp.float32), out.astype(jnp.float32))
    grads = functools.partial(_backward_block, bq=bq, bk=bk, S=S, causal=causal, scale=scale)

    if nq == nk == 1:  # one block: straight-line code, as in the forward pass
        dq, dk, dv = (x[None] for x in grads(q[0], dout[0], lse[0], d[0], k[0], v[0], 0, 0, p=probs))
    else:
        def key_block(dq, xs):
            j, k_j, v_j = xs

            def query_block(i, carry):
                dq, dk_j, dv_j = carry
                dq_i, dk_ij, dv_ij = grads(q[i], dout[i], lse[i], d[i], k_j, v_j, i, j)
                return dq.at[i].add(dq_i), dk_j + dk_ij, dv_j + dv_ij

            first = (j * bk) // bq if causal else 0  # the first query block that sees key block j
            zeros = jnp.zeros(k_j.shape, jnp.float32)
            dq, dk_j, dv_j = jax.lax.fori_loop(first, nq, query_block, (dq, zeros, zeros))
            return dq, (dk_j, dv_j)

        dq, (dk, dv) = jax.lax.scan(key_block, jnp.zeros(q.shape, jnp.float32), (jnp.arange(nk), k, v))
    return (_from_blocks(dq, T).astype(q.dtype), _from_blocks(dk, S).astype(k.dtype),
            _from_blocks(dv, S).astype(v.dtype))


_blocked.defvjp(_blocked_fwd, _blocked_bwd)
