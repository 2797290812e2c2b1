"""Chapter 9's measurements: greedy translations, exact match, where attention looks, softmax saturation.

Shapes: S seeds (parameters stacked along a leading axis), N sentences, L source words
(padded), T target words (``L + 1``, for ``<eos>``), V target vocabulary, d the query/key width.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from p2t_jax.data import reorder
from p2t_jax.data.words import PAD
from p2t_jax.models.attention import attention_weights
from p2t_jax.models.seq2seq import Seq2Seq


@functools.partial(jax.jit, static_argnums=(0, 3))
def _greedy_S(model: Seq2Seq, params_S, source_NL: jax.Array, length: int):
    return jax.vmap(lambda p: model.apply({"params": p}, source_NL, length, method=model.greedy))(params_S)


def greedy(model: Seq2Seq, params_S, source_NL: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Every seed's greedy translation of each source row: ``(tokens int32[S, N, length], weights [S, N, length, L])``.

    One compiled call (a ``nn.scan`` of ``length`` decoder steps, vmapped over the seeds).
    """
    tokens, weights = _greedy_S(model, params_S, jnp.asarray(source_NL), length)
    return np.asarray(tokens), np.asarray(weights)


def exact_match(tokens_SNT: np.ndarray, target_NT: np.ndarray) -> np.ndarray:
    """``bool[S, N]``: the translation equals the target word for word up to and including ``<eos>``."""
    target_NT = np.asarray(target_NT)
    T = min(tokens_SNT.shape[-1], target_NT.shape[-1])
    real_NT = target_NT[:, :T] != PAD
    return np.all((tokens_SNT[..., :T] == target_NT[None, :, :T]) | ~real_NT[None], axis=-1)


def verb_attention(weights_SNTL: np.ndarray, lengths_N: np.ndarray) -> np.ndarray:
    """``[S, N]``: the attention weight on the source verb (the last source word) at the decoder step that
    emits the target verb (step 1: the weights that make its context)."""
    lengths_N = np.asarray(lengths_N)
    return weights_SNTL[:, np.arange(len(lengths_N)), 1, lengths_N - 1]


def softmax_saturation(dims: Sequence[int], num_keys: int, num_queries: int, seed: int) -> dict[str, np.ndarray]:
    """Softmax over ``q . k`` for random unit-variance queries and keys, with and without the 1/sqrt(d) scaling.

    For each width d: ``num_queries`` queries and ``num_keys`` keys with N(0, 1) entries (the
    first d columns of one draw at the widest d), weights by
    :func:`p2t_jax.models.attention.attention_weights` (``scale=1`` unscaled).

    Returns:
      ``{"dims", "entropy_scaled", "entropy_unscaled", "max_weight_scaled", "max_weight_unscaled"}``:
      means over the queries, each ``[len(dims)]``; entropies in nats (``log(num_keys)`` at most).
    """
    out: dict[str, list] = {"entropy_scaled": [], "entropy_unscaled": [], "max_weight_scaled": [],
                            "max_weight_unscaled": []}
    # one draw at the widest d, whose first d columns are each width's queries and keys: two compiled draws,
    # not two per width
    kq, kk = jax.random.split(jax.random.PRNGKey(seed))
    q_all, k_all = (np.asarray(jax.random.normal(key, (n, max(dims)))) for key, n in ((kq, num_queries),
                                                                                     (kk, num_keys)))
    for d in dims:
        q = jnp.asarray(q_all[:, :d]).reshape(1, num_queries, 1, d)  # [B=1, T, H=1, d]
        k = jnp.asarray(k_all[:, :d]).reshape(1, num_keys, 1, d)
        for name, scale in (("scaled", None), ("unscaled", 1.0)):
            w = attention_weights(q, k, scale=scale)[0, 0]  # [queries, keys]
            entropy = -jnp.sum(jnp.where(w > 0, w * jnp.log(jnp.where(w > 0, w, 1.0)), 0.0), axis=-1)
            out[f"entropy_{name}"].append(float(entropy.mean()))
            out[f"max_weight_{name}"].append(float(w.max(-1).mean()))
    return {"dims": np.asarray(dims), **{k: np.asarray(v) for k, v in out.items()}}


def source_rows(sentences: Sequence[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Padded source ids ``int32[N, max_len]`` and lengths of source sentences (checked word by word:
    ConfigError for an empty one, one too long or an unknown word)."""
    rows = np.zeros((len(sentences), max_len), np.int32)
    lengths = []
    for i, sentence in enumerate(sentences):
        ids = reorder.SOURCE_VOCAB.encode(sentence, max_words=max_len, what="source sentence")
        rows[i, :len(ids)] = ids
        lengths.append(len(ids))
    return rows, np.asarray(lengths, np.int32)
