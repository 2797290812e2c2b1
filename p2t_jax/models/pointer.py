"""Pointer networks (Vinyals, Fortunato & Jaitly, 2015): attention whose weights are the output.

A sequence-to-sequence model whose output vocabulary is the input's own positions. An LSTM
encoder reads the elements; at each output step an LSTM decoder's state scores every
encoder position with additive attention (:class:`p2t_jax.models.attention.AdditiveAttention`,
``u_s = v . tanh(W_k e_s + W_q d_t)``), and the softmax of those scores *is* the
distribution over which element comes next. Nothing is mixed into a context vector: the
attention points.

Shapes: B batch, N input elements, S = N + 1 encoder positions, D the width of one element
(1 for a number, 2 for a point), E embedding width, H LSTM width, A attention width,
T output steps, K beam width.

Positions: encoder position 0 is a learned **end** element and position ``i + 1`` is input
element ``i``. Pointing at position 0 ends a variable-length output (the convex hull);
problems whose output is a permutation of all n elements (sorting, TSP) set
``allow_end=False`` and decode exactly n steps. An output sequence holds positions, with
:data:`PAD` after its end.

Masks: a position is scored only where it is a real element (``mask_BN``), and not if it
was already pointed at: every output is a set of distinct inputs, so a chosen position is
masked to :data:`p2t_jax.models.attention.MASKED` (weight exactly 0) at every later step,
in training (from the targets) and decoding (from the choices) alike.

The decoder's input at step t is the embedded element it pointed at at step t - 1 (a
learned ``go`` vector at t = 0): teacher forcing in training (the target's element),
its own choice in decoding. The decoder's first state is the encoder's final state.

Decoding (:func:`greedy_decode`, :func:`beam_search`) is one ``lax.scan`` over the output
steps, batched, and compiles under one ``jax.jit``: no Python loop per step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from p2t_jax.models.attention import AdditiveAttention
from p2t_jax.models.rnn import Carry, Recurrent, make_cell

PAD = -1  # an output step after the output's end
END = 0  # the end position


class Encoded(NamedTuple):
    """What the decoder reads, computed once per input.

    Attributes:
      elements_BSE: the embedded elements, position 0 the learned end element (the decoder's
        next input is one of these).
      keys_BSA: the attention's projection ``W_k e_s`` of every encoder state.
      allowed_BS: bool, True where a position may ever be pointed at (a real element; the end
        position when the model allows it).
      carry: the encoder's final state (the decoder's first).
    """

    elements_BSE: jax.Array
    keys_BSA: jax.Array
    allowed_BS: jax.Array
    carry: Carry


class PointerNetwork(nn.Module):
    """``(inputs_BND, mask_BN, targets_BT) -> logits float32[B, T, S]`` (teacher forcing).

    Parameters: ``embed`` (Dense D -> E), ``end`` and ``go`` (``[E]``), ``encoder/cell``
    (the encoder LSTM), ``decoder_cell`` (the decoder LSTM), ``attention`` (W_k, W_q, v).

    Attributes:
      embed_dim: E. features: H. attention_dim: A.
      cell_type: ``lstm`` (as in the paper), ``gru`` or ``rnn``.
      allow_end: the end position may be pointed at (variable-length outputs).
    """

    embed_dim: int = 128
    features: int = 128
    attention_dim: int = 128
    cell_type: str = "lstm"
    allow_end: bool = False

    def setup(self):
        init = nn.initializers.normal(1.0)
        self.embed = nn.Dense(self.embed_dim, name="embed")
        self.end = self.param("end", init, (self.embed_dim,))
        self.go = self.param("go", init, (self.embed_dim,))
        self.encoder = Recurrent(make_cell(self.cell_type, self.features, parent=None), name="encoder")
        self.decoder_cell = make_cell(self.cell_type, self.features)
        self.decoder = Recurrent(self.decoder_cell)  # the teacher-forced pass: the same cell over all steps
        self.attention = AdditiveAttention(self.attention_dim)

    def encode(self, inputs_BND: jax.Array, mask_BN: jax.Array) -> Encoded:
        """Reads ``[end, x_1, ..., x_n]`` with the encoder (padding after each row's n elements).

        Args:
          inputs_BND: the elements, padded. mask_BN: bool, True at real elements (a prefix of each row).
        """
        B = inputs_BND.shape[0]
        end_B1E = jnp.broadcast_to(self.end, (B, 1, self.embed_dim))
        elements_BSE = jnp.concatenate([end_B1E, self.embed(inputs_BND)], axis=1)
        mask_BS = jnp.concatenate([jnp.ones((B, 1), bool), mask_BN], axis=1)
        encoded = self.encoder(elements_BSE, mask_BS)
        allowed_BS = mask_BS.at[:, 0].set(self.allow_end)
        return Encoded(elements_BSE, self.attention.project_keys(encoded.outputs), allowed_BS, encoded.final)

    def first_input(self, batch: int) -> jax.Array:
        """The decoder's input at step 0: ``go``, ``[B, E]``."""
        return jnp.broadcast_to(self.go, (batch, self.embed_dim))

    def decode_step(self, carry: Carry, input_BE: jax.Array, keys_BSA: jax.Array,
                    allowed_BS: jax.Array) -> tuple[Carry, jax.Array]:
        """One output step: ``(carry, input_BE) -> (carry, logits float32[B, S])``, masked where
        ``allowed_BS`` is False (already chosen, padding, or the end when it is not allowed)."""
        carry, h_BH = self.decoder_cell(carry, input_BE)
        return carry, self.attention.logits(h_BH, keys_BSA, allowed_BS)

    def __call__(self, inputs_BND: jax.Array, mask_BN: jax.Array, targets_BT: jax.Array) -> jax.Array:
        """Teacher forcing: the logits of every output step given the target's earlier steps.

        Args:
          inputs_BND, mask_BN: as in :meth:`encode`.
          targets_BT: int, the positions to point at (:data:`PAD` after the end).

        Returns:
          ``logits float32[B, T, S]``: at step t, position s is masked if it is not allowed
          or is among ``targets[:t]``. The decoder's LSTM runs over all T inputs in one
          scan; the attention scores all T steps at once.
        """
        enc = self.encode(inputs_BND, mask_BN)
        B, T = targets_BT.shape
        S = enc.elements_BSE.shape[1]
        real_BT = targets_BT != PAD
        previous_BT = jnp.where(real_BT, targets_BT, END)[:, :-1]
        inputs_BTE = jnp.concatenate([self.first_input(B)[:, None],
                                      jnp.take_along_axis(enc.elements_BSE, previous_BT[..., None], axis=1)], axis=1)
        states_BTH = self.decoder(inputs_BTE, initial_carry=enc.carry).outputs
        picked_BTS = jax.nn.one_hot(targets_BT, S, dtype=jnp.int32) * real_BT[..., None]  # PAD rows: all zero
        chosen_before_BTS = (jnp.cumsum(picked_BTS, axis=1) - picked_BTS) > 0
        allowed_BTS = enc.allowed_BS[:, None, :] & ~chosen_before_BTS
        return self.attention.logits(states_BTH, enc.keys_BSA, allowed_BTS)


def output_steps(num_elements: int, allow_end: bool) -> int:
    """T: the most output steps for N elements (N, plus one for the end when outputs may end early)."""
    return num_elements + int(allow_end)


def _finished(model: PointerNetwork, step: jax.Array, choice: jax.Array, lengths: jax.Array) -> jax.Array:
    """Whether an output is complete after ``choice`` at ``step``: it pointed at the end, or (fixed
    length) it has chosen all of its ``lengths`` elements."""
    if model.allow_end:
        return choice == END
    return step + 1 >= lengths


class Decoded(NamedTuple):
    """A decoded batch.

    Attributes:
      positions_BT: int32, the positions pointed at (``1..n`` the elements, 0 the end), :data:`PAD` after the end.
      log_likelihood_B: the model's log-probability of the whole output (sum over its steps).
      weights_BTS: float32, the pointer distribution at each step (zeros after the end);
        greedy decoding only (None from beam search).
    """

    positions_BT: jax.Array
    log_likelihood_B: jax.Array
    weights_BTS: jax.Array | None


def greedy_decode(model: PointerNetwork, params: Any, inputs_BND: jax.Array, mask_BN: jax.Array) -> Decoded:
    """Points at the most likely allowed position at every step: one ``lax.scan`` over T steps.

    ``jax.jit(functools.partial(greedy_decode, model))`` compiles it once per input shape.
    """
    variables = {"params": params}
    enc = model.apply(variables, inputs_BND, mask_BN, method=PointerNetwork.encode)
    B, S = enc.allowed_BS.shape
    lengths_B = mask_BN.sum(-1)
    rows = jnp.arange(B)

    def step(state, t):
        carry, input_BE, allowed_BS, done_B, ll_B = state
        carry, logits_BS = model.apply(variables, carry, input_BE, enc.keys_BSA, allowed_BS,
                                       method=PointerNetwork.decode_step)
        log_p_BS = jax.nn.log_softmax(logits_BS, axis=-1)
        choice_B = jnp.argmax(logits_BS, axis=-1).astype(jnp.int32)
        ll_B = ll_B + jnp.where(done_B, 0.0, log_p_BS[rows, choice_B])
        position_B = jnp.where(done_B, PAD, choice_B)
        weights_BS = jnp.where(done_B[:, None], 0.0, jnp.exp(log_p_BS))
        allowed_BS = allowed_BS.at[rows, choice_B].set(False)
        done_B = done_B | _finished(model, t, choice_B, lengths_B)
        input_BE = enc.elements_BSE[rows, choice_B]
        return (carry, input_BE, allowed_BS, done_B, ll_B), (position_B, weights_BS)

    first = model.apply(variables, B, method=PointerNetwork.first_input)
    init = (enc.carry, first, enc.allowed_BS, jnp.zeros(B, bool), jnp.zeros(B, jnp.float32))
    T = output_steps(S - 1, model.allow_end)
    (_, _, _, _, ll_B), (positions_TB, weights_TBS) = jax.lax.scan(step, init, jnp.arange(T))
    return Decoded(positions_TB.T, ll_B, jnp.swapaxes(weights_TBS, 0, 1))


def beam_search(model: PointerNetwork, params: Any, inputs_BND: jax.Array, mask_BN: jax.Array,
                beam_width: int) -> Decoded:
    """Keeps the ``beam_width`` (K) most likely partial outputs at every step; returns the most likely.

    All B x K hypotheses run as one batch of B*K rows through the decoder in one ``lax.scan``
    over T steps. Each step scores every allowed continuation of every live hypothesis
    (``[B, K * S]`` candidates), keeps the K best, and gathers their states. A finished
    hypothesis carries on with one continuation of log-probability 0 (:data:`PAD`), so it
    competes at its final score. At step 0 only hypothesis 0 is live, so the K kept are
    distinct. With K = 1 this is :func:`greedy_decode` (tested); with K at least the number of
    distinct outputs it is exhaustive (tested against enumeration).
    """
    if beam_width < 1:
        raise ValueError(f"beam_width must be at least 1, got {beam_width}.")
    K = beam_width
    variables = {"params": params}
    enc = model.apply(variables, inputs_BND, mask_BN, method=PointerNetwork.encode)
    B, S = enc.allowed_BS.shape
    T = output_steps(S - 1, model.allow_end)
    tile = lambda x: jnp.repeat(x, K, axis=0)  # noqa: E731  [B, ...] -> [B*K, ...], hypotheses of a row together
    elements_XSE, keys_XSA = tile(enc.elements_BSE), tile(enc.keys_BSA)
    lengths_X = tile(mask_BN.sum(-1))
    X = B * K
    rows_X = jnp.arange(X)

    def step(state, t):
        carry, input_XE, allowed_XS, done_X, score_BK, history_XT = state
        new_carry, logits_XS = model.apply(variables, carry, input_XE, keys_XSA, allowed_XS,
                                           method=PointerNetwork.decode_step)
        log_p_XS = jax.nn.log_softmax(logits_XS, axis=-1)
        log_p_XS = jnp.where(allowed_XS, log_p_XS, -jnp.inf)
        # a finished hypothesis: one continuation (slot 0, standing for PAD) at no cost
        finished_XS = jnp.full((X, S), -jnp.inf).at[:, 0].set(0.0)
        log_p_XS = jnp.where(done_X[:, None], finished_XS, log_p_XS)
        candidates_BKS = score_BK[..., None] + log_p_XS.reshape(B, K, S)
        score_BK, flat_BK = jax.lax.top_k(candidates_BKS.reshape(B, K * S), K)
        parent_BK, choice_BK = flat_BK // S, (flat_BK % S).astype(jnp.int32)
        source_X = (jnp.arange(B)[:, None] * K + parent_BK).reshape(X)  # the row each kept hypothesis extends
        choice_X = choice_BK.reshape(X)
        was_done_X = done_X[source_X]
        carry = jax.tree.map(lambda c: c[source_X], new_carry)
        allowed_XS = allowed_XS[source_X]
        allowed_XS = jnp.where(was_done_X[:, None], allowed_XS, allowed_XS.at[rows_X, choice_X].set(False))
        position_X = jnp.where(was_done_X, PAD, choice_X)
        history_XT = history_XT[source_X].at[:, t].set(position_X)
        done_X = was_done_X | _finished(model, t, choice_X, lengths_X)
        input_XE = elements_XSE[rows_X, choice_X]
        return (carry, input_XE, allowed_XS, done_X, score_BK, history_XT), None

    first = model.apply(variables, X, method=PointerNetwork.first_input)
    score_BK = jnp.full((B, K), -jnp.inf).at[:, 0].set(0.0)
    init = (jax.tree.map(tile, enc.carry), first, tile(enc.allowed_BS), jnp.zeros(X, bool), score_BK,
            jnp.full((X, T), PAD, jnp.int32))
    (_, _, _, _, score_BK, history_XT), _ = jax.lax.scan(step, init, jnp.arange(T))
    best_B = jnp.argmax(score_BK, axis=-1)  # top_k keeps them sorted: this is hypothesis 0
    positions_BT = history_XT.reshape(B, K, T)[jnp.arange(B), best_B]
    return Decoded(positions_BT, score_BK[jnp.arange(B), best_B], None)


def sequence_log_likelihood(model: PointerNetwork, params: Any, inputs_BND: jax.Array, mask_BN: jax.Array,
                            positions_BT: jax.Array) -> jax.Array:
    """``float32[B]``: the model's log-probability of the outputs ``positions_BT`` (teacher forcing)."""
    logits_BTS = model.apply({"params": params}, inputs_BND, mask_BN, positions_BT)
    log_p_BTS = jax.nn.log_softmax(logits_BTS, axis=-1)
    picked_BT = jnp.take_along_axis(log_p_BTS, jnp.maximum(positions_BT, 0)[..., None], axis=-1)[..., 0]
    return jnp.where(positions_BT != PAD, picked_BT, 0.0).sum(-1)
