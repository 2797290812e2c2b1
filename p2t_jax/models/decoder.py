"""What a language model hands to the samplers of :mod:`p2t_jax.sampling`.

A task module that generates text defines ``decoder(config) -> Decoder``; ``p2t sample``
restores the run's parameters into ``init_variables``' shapes and then decodes with the
model's key/value cache when it has one (``cached_model``), else by recomputing the window
(``logits_fn``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
from flax import linen as nn


@dataclasses.dataclass(frozen=True)
class Decoder:
    """How a language-model task's model is sampled (a task module's ``decoder(config)``).

    Attributes:
      init_variables: ``rng -> {"params": ...}``, the model's variables (plain or boxed): their
        shapes are what the checkpoint restores into.
      logits_fn: ``(params, tokens int32[B, T]) -> float32[B, T, V]``, causal: what
        :func:`p2t_jax.sampling.generate` recomputes over the last ``context`` tokens for each new token.
      context: the most tokens the model reads at once (T at most).
      cached_model: a linen module that decodes with a key/value cache the way
        :func:`p2t_jax.sampling.generate_cached` drives it (``apply({"params", "cache"}, tokens, decode=True,
        mutable=["cache"])``, a ``cache["position"]`` counter, ``cfg.max_len``); None when the
        model has no cache (sampling then recomputes).
      bytes_per_sample: memory one sample needs besides its tokens (cache, logits), for the
        check before anything is allocated.
    """

    init_variables: Callable[[jax.Array], Any]
    logits_fn: Callable[[Any, jax.Array], jax.Array]
    context: int
    cached_model: nn.Module | None = None
    bytes_per_sample: int = 0
