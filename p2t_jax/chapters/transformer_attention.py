"""Where a trained Transformer looks: its causal self-attention weights for one text.

Every attention layer sows its probabilities ``[B, H, T, S]`` into the model's
``intermediates`` collection. :func:`attention_maps` runs the model once on a text padded to
the context, so one compilation per model serves every text; the causal mask keeps the
padding after the text from touching the rows that belong to it.
"""

from __future__ import annotations

import functools
import re

import jax
import numpy as np
from flax import linen as nn


@functools.partial(jax.jit, static_argnums=0)
def _sown(model: nn.Module, params, tokens_BT: jax.Array):
    _, state = model.apply({"params": params}, tokens_BT, mutable=["intermediates"])
    return state["intermediates"]


def _layer_index(path) -> int:
    found = re.search(r"block_(\d+)", jax.tree_util.keystr(path))
    return int(found.group(1)) if found else 0


def attention_maps(model: nn.Module, params, tokens_T: np.ndarray) -> np.ndarray:
    """The attention weights of every layer and head for one text.

    Args:
      model: a :class:`~p2t_jax.models.transformer.Transformer` (its ``cfg.max_len`` is the context).
      params: its parameters.
      tokens_T: ``int[T]`` token ids, ``1 <= T <= max_len``.

    Returns:
      ``float32[L, H, T, T]``: entry ``[l, h, t, s]`` is how much position t attends to
      position s in head h of layer l (zero for s > t; each row sums to 1).
    """
    tokens_T = np.asarray(tokens_T)
    T, context = len(tokens_T), model.cfg.max_len
    if not 1 <= T <= context:
        raise ValueError(f"the text must hold between 1 and {context} tokens (the context), got {T}.")
    padded = np.zeros((1, context), np.int32)
    padded[0, :T] = tokens_T
    found = [(path, leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(_sown(model, params, padded))
             if "attention_weights" in jax.tree_util.keystr(path)]
    layers = [np.asarray(leaf) for _, leaf in sorted(found, key=lambda item: _layer_index(item[0]))]
    stacked = np.concatenate([a if a.ndim == 5 else a[None] for a in layers])  # scanned layers: already [L, ...]
    return stacked[:, 0, :, :T, :T]
