"""A recurrent encoder-decoder with Bahdanau (additive) attention (Bahdanau, Cho & Bengio 2015).

Shapes: B batch, S source length, T target length, E embedding width, H recurrent width,
A attention width, V target vocabulary.

* **Encoder**: a bidirectional recurrent layer (:class:`p2t_jax.models.rnn.Bidirectional`)
  over the embedded source gives one annotation per source word, ``[B, S, 2H]``: the
  forward state there next to the backward state there.
* **Decoder**, one step per target word: the additive attention of the previous decoder
  state over the annotations (:class:`p2t_jax.models.attention.AdditiveAttention`) gives
  the weights ``[B, S]`` and the context ``[B, 2H]``; the cell reads the previous word's
  embedding with the context; the logits come from ``[new state, context, previous word]``.
  Its first state is ``tanh(W h)`` of the backward encoder's state at the first word
  (``bridge="backward"``, as Bahdanau et al.), or of both final states
  ``[last forward; first backward]`` (``bridge="both"``). With a verb-final source the last
  forward state has just read the verb, so ``both`` hands the decoder the verb without
  attention (measured: docs/chapters_08_09.md).
* **Without attention** (``use_attention=False``) the context is the same at every step: the
  encoder's final states ``[last forward; first backward]``, all the decoder ever sees of
  the source (the encoder-decoder of Cho et al. 2014).

:meth:`Seq2Seq.__call__` trains with teacher forcing (the decoder reads the true previous
word; one ``nn.scan`` over the target); :meth:`Seq2Seq.greedy` decodes by feeding back its
own argmax, a ``nn.scan`` of a fixed number of steps, so one ``jax.jit`` covers it. Both
return the attention weights of every step ``[B, T, S]`` (zeros without attention).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

from p2t_jax.models.attention import AdditiveAttention
from p2t_jax.models.rnn import Bidirectional, make_cell

BRIDGES = ("backward", "both")


def _final_h(carry):
    return carry[1] if isinstance(carry, tuple) else carry  # the LSTM's (c, h) or an h


class DecoderStep(nn.Module):
    """One decoder step: ``(state, y_prev_B, memory) -> (state, (logits_BV, weights_BS))``.

    ``memory`` is ``(annotations_BSK, projected_keys_BSA, mask_BS, summary_BK)`` from
    :meth:`Seq2Seq.encode` (K = 2H; ``projected_keys_BSA`` is None without attention).
    """

    vocab_size: int
    embed_dim: int
    cell_type: str
    features: int
    attention_features: int
    use_attention: bool

    def setup(self):
        self.embed = nn.Embed(self.vocab_size, self.embed_dim)
        self.cell = make_cell(self.cell_type, self.features)
        if self.use_attention:
            self.attention = AdditiveAttention(self.attention_features)
        self.readout = nn.Dense(self.vocab_size)

    def project_keys(self, annotations_BSK: jax.Array) -> jax.Array:
        return self.attention.project_keys(annotations_BSK)

    def __call__(self, state, y_prev_B: jax.Array, memory):
        annotations_BSK, keys_BSA, mask_BS, summary_BK = memory
        if self.use_attention:
            context_BK, weights_BS = self.attention(self.cell.output(state), keys_BSA, annotations_BSK, mask_BS)
        else:
            context_BK, weights_BS = summary_BK, jnp.zeros(mask_BS.shape, jnp.float32)
        e_BE = self.embed(y_prev_B)
        state, h_BH = self.cell(state, jnp.concatenate([e_BE, context_BK], axis=-1))
        logits_BV = self.readout(jnp.concatenate([h_BH, context_BK, e_BE], axis=-1))
        return state, (logits_BV, weights_BS)


def _teacher_forced(step: DecoderStep, state, y_prev_B, memory):
    return step(state, y_prev_B, memory)


def _greedy(step: DecoderStep, carry, memory):
    state, y_prev_B = carry
    state, (logits_BV, weights_BS) = step(state, y_prev_B, memory)
    y_B = logits_BV.argmax(-1).astype(jnp.int32)
    return (state, y_B), (y_B, weights_BS)


class Seq2Seq(nn.Module):
    """Encoder-decoder: ``(source_BS, target_BT) -> (logits [B, T, V], attention [B, T, S])``.

    Attributes:
      source_vocab, target_vocab: vocabulary sizes (id 0 is padding in both).
      embed_dim: E. features: H (each encoder direction and the decoder).
      attention_features: A. cell_type: ``rnn``, ``lstm`` or ``gru``.
      use_attention: additive attention over the annotations (False: a fixed context).
      bos_id: the token the decoder reads first.
      bridge: the decoder's first state from the ``backward`` encoder's first state, or ``both`` final states.
    """

    source_vocab: int
    target_vocab: int
    embed_dim: int
    features: int
    attention_features: int
    cell_type: str = "gru"
    use_attention: bool = True
    bos_id: int = 1
    bridge: str = "backward"

    def setup(self):
        self.source_embed = nn.Embed(self.source_vocab, self.embed_dim)
        self.encoder = Bidirectional(self.cell_type, self.features)
        self.bridge_dense = nn.Dense(self.features, name="bridge")
        self.decoder = DecoderStep(self.target_vocab, self.embed_dim, self.cell_type, self.features,
                                   self.attention_features, self.use_attention)

    def encode(self, source_BS: jax.Array):
        """``(initial decoder state, memory)`` for a padded source batch (id 0 is padding)."""
        mask_BS = source_BS != 0
        annotations_BSK, (fwd, bwd) = self.encoder(self.source_embed(source_BS), mask_BS)
        summary_BK = jnp.concatenate([_final_h(fwd), _final_h(bwd)], axis=-1)
        if self.bridge not in BRIDGES:
            raise ValueError(f"bridge must be one of {', '.join(BRIDGES)}, got {self.bridge!r}.")
        h0_BH = jnp.tanh(self.bridge_dense(summary_BK if self.bridge == "both" else _final_h(bwd)))
        state = self.decoder.cell.initialize_carry(None, h0_BH.shape)
        state = (state[0], h0_BH) if isinstance(state, tuple) else h0_BH
        keys_BSA = self.decoder.project_keys(annotations_BSK) if self.use_attention else None
        return state, (annotations_BSK, keys_BSA, mask_BS, summary_BK)

    def __call__(self, source_BS: jax.Array, target_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Teacher forcing: step t reads target word t-1 (``<bos>`` at t = 0) and predicts word t."""
        state, memory = self.encode(source_BS)
        y_prev_TB = jnp.concatenate([jnp.full((1, target_BT.shape[0]), self.bos_id, target_BT.dtype),
                                     target_BT.T[:-1]], axis=0)
        scan = nn.scan(_teacher_forced, variable_broadcast="params", split_rngs={"params": False},
                       in_axes=(0, nn.broadcast))
        _, (logits_TBV, weights_TBS) = scan(self.decoder, state, y_prev_TB, memory)
        return jnp.swapaxes(logits_TBV, 0, 1), jnp.swapaxes(weights_TBS, 0, 1)

    def greedy(self, source_BS: jax.Array, length: int) -> tuple[jax.Array, jax.Array]:
        """Greedy decoding of ``length`` words: ``(tokens int32[B, length], attention [B, length, S])``."""
        state, memory = self.encode(source_BS)
        y0_B = jnp.full((source_BS.shape[0],), self.bos_id, jnp.int32)
        scan = nn.scan(_greedy, variable_broadcast="params", split_rngs={"params": False}, in_axes=(nn.broadcast,),
                       length=length)
        _, (tokens_TB, weights_TBS) = scan(self.decoder, (state, y0_B), memory)
        return tokens_TB.T, jnp.swapaxes(weights_TBS, 0, 1)
