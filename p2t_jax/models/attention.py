"""Attention, the one implementation every model here uses: additive (Bahdanau), scaled dot-product, multi-head.

Shapes: B batch, T queries, S keys, H heads, K head width, D model width, A additive
attention width, V value width.

* :class:`AdditiveAttention` — Bahdanau et al. (2015): ``score(q, k_s) = v . tanh(W_q q +
  W_k k_s)``, softmax over the S keys, context = weighted sum of the values. The keys'
  projection ``W_k k`` is computed once per source sentence (:meth:`AdditiveAttention.project_keys`),
  not once per decoder step.
* :func:`attention_weights` / :func:`attend` — scaled dot-product attention written out:
  ``softmax(q . k / sqrt(K))`` with masked positions at the float32 minimum, then the
  weighted sum of the values. :func:`dot_product_attention` is the same through
  ``jax.nn.dot_product_attention``, with the kernel named by ``implementation``
  (:data:`ATTENTION_IMPLS`): ``xla``, ``cudnn`` (cuDNN's fused kernel), ``blocked`` (the
  online-softmax attention of :mod:`p2t_jax.models.blocked_attention`, memory linear in the
  context), or ``auto``: cuDNN's in the code lowered for a CUDA GPU when the inputs are half
  precision and cuDNN accepts the call, the blocked one in the code lowered for a CPU from
  :data:`BLOCKED_FROM` positions on, XLA's otherwise. ``auto`` is decided per *target*
  platform when the step is lowered (``jax.lax.platform_dependent``), not from the machine
  that traces it, so a step exported for ``cuda`` from a CPU-only machine holds the same
  choice as one jitted on the GPU; tested equal to the written-out form.
* :class:`MultiHeadAttention` — projections to H heads, attention, projection back; causal
  self-attention with a key/value cache for decoding (the Transformer's, whose parameter
  names, shapes and cache this keeps), or attention to another sequence.

Why ``1/sqrt(K)``: for queries and keys with unit-variance entries the logits ``q . k`` have
variance K, so without the scaling the softmax saturates onto one key as K grows
(measured in ``experiments/09_attention.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from p2t_jax.models import logical
from p2t_jax.models.blocked_attention import blocked_attention
from p2t_jax.models.dense import project
from p2t_jax.models.dropout import Dropout, is_zero

MASKED = jnp.finfo(jnp.float32).min  # the logit of a masked position: exp() of it is exactly 0


def causal_mask(length: int) -> jax.Array:
    """``bool[1, 1, T, T]``: True where query position t may attend to key position s <= t."""
    return jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]


def attention_weights(q_BTHK: jax.Array, k_BSHK: jax.Array, mask: jax.Array | None = None, *,
                      scale: float | None = None) -> jax.Array:
    """``float32[B, H, T, S]``: ``softmax_s(scale * q_t . k_s)`` with masked positions at weight 0.

    Args:
      q_BTHK: queries. k_BSHK: keys.
      mask: bool, broadcastable to ``[B, H, T, S]``; True where a query may attend to a key.
      scale: multiplies the logits; None: ``1 / sqrt(K)``.
    """
    scale = q_BTHK.shape[-1] ** -0.5 if scale is None else scale
    logits_BHTS = jnp.einsum("bthk,bshk->bhts", q_BTHK, k_BSHK) * jnp.asarray(scale, q_BTHK.dtype)
    logits_BHTS = logits_BHTS.astype(jnp.float32)
    if mask is not None:
        logits_BHTS = jnp.where(mask, logits_BHTS, MASKED)
    return jax.nn.softmax(logits_BHTS, axis=-1)


def attend(weights_BHTS: jax.Array, v_BSHK: jax.Array) -> jax.Array:
    """``[B, T, H, K]``: each query's weighted sum of the values (in the values' dtype)."""
    return jnp.einsum("bhts,bshk->bthk", weights_BHTS.astype(v_BSHK.dtype), v_BSHK)


ATTENTION_IMPLS = ("auto", "xla", "cudnn", "blocked")
HALF_PRECISION = (jnp.bfloat16, jnp.float16)  # the dtypes cuDNN's fused attention takes
ATTENTION_BLOCK = 128  # positions per block of the blocked attention (model.attention_block)
# ``auto`` runs the blocked attention in the code lowered for a CPU from this many queries on
# (measured in bench/NOTES.md, change 13: from context 64 on the train step is faster with it than
# with XLA's there, and its memory is linear in the context; shorter contexts were not measured).
BLOCKED_FROM = 64


def dot_product_attention(q_BTHK: jax.Array, k_BSHK: jax.Array, v_BSHK: jax.Array, mask: jax.Array | None = None,
                          *, scale: float | None = None, is_causal: bool = False,
                          implementation: str = "auto", block: int = ATTENTION_BLOCK) -> jax.Array:
    """``[B, T, H, K]``: ``attend(attention_weights(q, k, mask), v)`` without the weights.

    The fused form gives no weights; use it when nothing reads them. ``is_causal``: a causal
    mask from position 0 (``mask`` may then be None).

    ``implementation`` (:data:`ATTENTION_IMPLS`):

    * ``xla``: XLA's attention (``jax.nn.dot_product_attention``) on every platform.
    * ``cudnn``: cuDNN's fused kernel and nothing else: JAX raises where cuDNN is missing
      (a jaxlib without CUDA) or refuses the call (e.g. float32 inputs, a head width that is
      not a multiple of 8), and the step cannot be lowered for a platform other than CUDA.
    * ``blocked``: :func:`p2t_jax.models.blocked_attention.blocked_attention` on every platform
      (``block`` positions per block; memory linear in the context), where ``mask`` is None;
      with a mask (a decoding cache's, padding) XLA's.
    * ``auto``: decided per *target* platform when the step is lowered
      (``jax.lax.platform_dependent``; the compiled code holds one kernel, no conditional):
      for a CPU, the blocked attention from :data:`BLOCKED_FROM` queries on (and no mask),
      else XLA's; for ``cuda`` with half-precision inputs, cuDNN's where cuDNN can trace the
      call (it is in this jaxlib and accepts the shapes and mask), else XLA's; XLA's for any
      other platform.
    """
    def xla(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal,
                                            implementation="xla")

    def cudnn(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=scale, is_causal=is_causal,
                                            implementation="cudnn")

    def blocked(q, k, v):
        return blocked_attention(q, k, v, causal=is_causal, scale=scale, block=block)

    if implementation not in ATTENTION_IMPLS:
        raise ValueError(f"implementation must be one of {', '.join(ATTENTION_IMPLS)}, got {implementation!r}.")
    if implementation == "cudnn":
        return cudnn(q_BTHK, k_BSHK, v_BSHK)
    can_block = mask is None and (not is_causal or q_BTHK.shape[1] == k_BSHK.shape[1])
    if implementation == "blocked":
        return (blocked if can_block else xla)(q_BTHK, k_BSHK, v_BSHK)
    if implementation == "xla":
        return xla(q_BTHK, k_BSHK, v_BSHK)
    cpu = blocked if can_block and q_BTHK.shape[1] >= BLOCKED_FROM else xla
    if q_BTHK.dtype in HALF_PRECISION:
        try:
            return jax.lax.platform_dependent(q_BTHK, k_BSHK, v_BSHK, cuda=cudnn, cpu=cpu, default=xla)
        except (NotImplementedError, ValueError, RuntimeError):  # cuDNN absent, or refusing this call
            pass
    if cpu is blocked:
        return jax.lax.platform_dependent(q_BTHK, k_BSHK, v_BSHK, cpu=blocked, default=xla)
    return xla(q_BTHK, k_BSHK, v_BSHK)


class AdditiveAttention(nn.Module):
    """Bahdanau attention: ``score(q, k_s) = v . tanh(W_q q + W_k k_s)``.

    Parameters: ``key/kernel`` W_k ``[Dk, A]``, ``query/kernel`` W_q ``[Dq, A]`` with
    ``query/bias`` ``[A]``, ``score/kernel`` v ``[A, 1]``.

    Attributes:
      features: A, the width of the hidden layer that scores each key.
      dtype: compute dtype (parameters float32).
    """

    features: int
    dtype: Any = None

    def setup(self):
        self.key = nn.Dense(self.features, use_bias=False, dtype=self.dtype, name="key")
        self.query = nn.Dense(self.features, dtype=self.dtype, name="query")
        self.score = nn.Dense(1, use_bias=False, dtype=self.dtype, name="score")

    def project_keys(self, keys_BSK: jax.Array) -> jax.Array:
        """``W_k k`` for every key: ``[B, S, A]`` (once per source, reused at every query)."""
        return self.key(keys_BSK)

    def logits(self, query: jax.Array, projected_keys_BSA: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """The scores before the softmax, ``float32``: one query ``[B, Dq] -> [B, S]``, or T queries
        ``[B, T, Dq] -> [B, T, S]`` at once (e.g. every step of a teacher-forced decoder).

        ``mask`` (bool, broadcastable to the result): True where a key may be scored; elsewhere
        the logit is :data:`MASKED`, so its softmax weight is exactly 0. A pointer network
        (:mod:`p2t_jax.models.pointer`) uses these logits as its output distribution.
        """
        q_A = self.query(query)
        q_A = q_A[:, None, :] if query.ndim == 2 else q_A[:, :, None, :]
        keys_BSA = projected_keys_BSA if query.ndim == 2 else projected_keys_BSA[:, None]
        logits = self.score(jnp.tanh(q_A + keys_BSA))[..., 0].astype(jnp.float32)
        return logits if mask is None else jnp.where(mask, logits, MASKED)

    def __call__(self, query_BQ: jax.Array, projected_keys_BSA: jax.Array, values_BSV: jax.Array,
                 mask_BS: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """One query against all keys: ``(context [B, V], weights float32[B, S])``.

        ``mask_BS`` (bool): True at real keys; padded keys get weight 0.
        """
        weights_BS = jax.nn.softmax(self.logits(query_BQ, projected_keys_BSA, mask_BS), axis=-1)
        return jnp.einsum("bs,bsv->bv", weights_BS.astype(values_BSV.dtype), values_BSV), weights_BS


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention: ``x_BTD -> [B, T, D]``.

    Self-attention (``inputs_kv`` None) projects queries, keys and values with one fused
    kernel ``qkv`` ``[D, 3, H, K]`` (bias ``[3, H, K]``); attention to another sequence
    (``inputs_kv`` ``[B, S, Dkv]``) uses ``query`` ``[D, H, K]`` and ``kv`` ``[Dkv, 2, H, K]``.
    The heads are merged by ``out`` ``[H, K, D]`` (bias ``[D]``). Every parameter carries
    logical axis names (``embed``, ``heads``, ``kv``) for :mod:`p2t_jax.parallel`.

    The attention probabilities ``[B, H, T, S]`` are sown into ``intermediates`` as
    ``attention_weights`` (read them with ``mutable=["intermediates"]``). When nothing
    collects them and no dropout falls on them, the fused :func:`dot_product_attention`
    runs instead of the written-out form (the same function; tested).

    With ``decode=True`` (causal self-attention) keys and values are appended to a
    ``cache`` collection (``key``/``value`` ``[B, max_len, H, K]``, ``index`` the number of
    cached positions) and the T new queries attend to every cached position up to their own.

    Attributes:
      num_heads: H. head_dim: K. out_features: D of the output.
      causal: position t attends to positions <= t only (self-attention).
      max_len: the cache length for decoding.
      dropout_rate: dropout on the attention probabilities (training only).
      use_bias: biases in the projections.
      dtype: compute dtype (parameters float32; softmax in float32).
      kernel_init: initializer of the input projections; out_kernel_init: of ``out``.
      dense_impl: ``rows`` (projections on ``[B*T, D]`` rows through
        :class:`p2t_jax.models.dense.Dense`, the faster kernels on XLA-CPU) or ``general``
        (``nn.DenseGeneral`` on ``[B, T, D]``); the same parameters either way.
      attention_impl: the fused attention's kernel, ``auto``, ``xla``, ``cudnn`` or ``blocked``
        (:func:`dot_product_attention`).
      attention_block: positions per block of the blocked attention.
    """

    num_heads: int
    head_dim: int
    out_features: int
    causal: bool = False
    max_len: int = 0
    dropout_rate: float = 0.0
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Callable = nn.initializers.normal(0.02)
    out_kernel_init: Callable = nn.initializers.normal(0.02)
    dense_impl: str = "general"
    attention_impl: str = "auto"
    attention_block: int = ATTENTION_BLOCK

    def _project(self, x, features, axes, name, contract_axes=1, bias_axes=None, kernel_init=None):
        return project(x, features, contract_axes=contract_axes, rows=self.dense_impl == "rows", name=name,
                       use_bias=self.use_bias, dtype=self.dtype,
                       kernel_init=logical.param(kernel_init or self.kernel_init, axes),
                       bias_init=logical.param(nn.initializers.zeros, bias_axes or axes[contract_axes:]))

    def _cached_keys_values(self, k_BTHK, v_BTHK):
        """Appends the new keys/values to the cache; returns (keys, values, mask ``[1, 1, T, S]`` or None for
        plain causal attention from position 0)."""
        B, T, H, K = k_BTHK.shape
        initialised = self.has_variable("cache", "key")
        key = self.variable("cache", "key", jnp.zeros, (B, self.max_len, H, K), k_BTHK.dtype)
        value = self.variable("cache", "value", jnp.zeros, (B, self.max_len, H, K), v_BTHK.dtype)
        index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
        if not initialised:  # creating the cache: behave as the full-sequence model
            return k_BTHK, v_BTHK, None
        i = index.value
        key.value = jax.lax.dynamic_update_slice_in_dim(key.value, k_BTHK, i, axis=1)
        value.value = jax.lax.dynamic_update_slice_in_dim(value.value, v_BTHK, i, axis=1)
        index.value = i + T
        query_pos_T = i + jnp.arange(T)
        mask_TS = jnp.arange(self.max_len)[None, :] <= query_pos_T[:, None]
        return key.value, value.value, mask_TS[None, None]

    @nn.compact
    def __call__(self, x_BTD: jax.Array, inputs_kv: jax.Array | None = None, *, mask: jax.Array | None = None,
                 deterministic: bool = True, decode: bool = False) -> jax.Array:
        """Args:
          x_BTD: the queries' inputs. inputs_kv: ``[B, S, Dkv]`` to attend to (None: ``x_BTD`` itself).
          mask: bool broadcastable to ``[B, H, T, S]``, True where attention is allowed (combined
            with the causal mask).
          deterministic: no dropout. decode: continue the cached sequence (causal self-attention).
        """
        H, K = self.num_heads, self.head_dim
        if decode and (inputs_kv is not None or not self.causal or self.max_len <= 0):
            raise ValueError("decode=True needs causal self-attention with max_len > 0.")
        if inputs_kv is None:
            qkv_BT3HK = self._project(x_BTD, (3, H, K), ("embed", None, "heads", "kv"), "qkv")
            q_BTHK, k_BSHK, v_BSHK = qkv_BT3HK[:, :, 0], qkv_BT3HK[:, :, 1], qkv_BT3HK[:, :, 2]
        else:
            q_BTHK = self._project(x_BTD, (H, K), ("embed", "heads", "kv"), "query")
            kv_BS2HK = self._project(inputs_kv, (2, H, K), ("embed", None, "heads", "kv"), "kv")
            k_BSHK, v_BSHK = kv_BS2HK[:, :, 0], kv_BS2HK[:, :, 1]
        q_BTHK = logical.constrain(q_BTHK, logical.BTHK)
        is_causal = self.causal
        if decode:
            k_BSHK, v_BSHK, cache_mask = self._cached_keys_values(k_BSHK, v_BSHK)
            if cache_mask is not None:
                mask, is_causal = cache_mask if mask is None else mask & cache_mask, False
        collect = self.is_mutable_collection("intermediates")
        if not collect and (deterministic or is_zero(self.dropout_rate)):
            out_BTHK = dot_product_attention(q_BTHK, k_BSHK, v_BSHK, mask, is_causal=is_causal,
                                             implementation=self.attention_impl, block=self.attention_block)
        else:
            if is_causal:
                causal = causal_mask(q_BTHK.shape[1])
                mask = causal if mask is None else mask & causal
            attn_BHTS = attention_weights(q_BTHK, k_BSHK, mask)
            self.sow("intermediates", "attention_weights", attn_BHTS)
            attn_BHTS = Dropout(self.dropout_rate)(attn_BHTS, deterministic=deterministic)
            out_BTHK = attend(attn_BHTS, v_BSHK)
        out_BTHK = logical.constrain(out_BTHK, logical.BTHK)
        return self._project(out_BTHK, self.out_features, ("heads", "kv", "embed"), "out", contract_axes=2,
                             kernel_init=self.out_kernel_init)
