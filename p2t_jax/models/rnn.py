"""Recurrent networks: the vanilla (Elman) RNN, the LSTM and the GRU, run over time with ``nn.scan``.

Shapes: B batch, T time steps, D input width, H hidden width (a cell's ``features``),
G the number of gate blocks (1 for the RNN, 4 for the LSTM, 3 for the GRU).

Every cell keeps its weights fused, gate blocks side by side in the order its docstring
states: ``input/kernel`` W ``[D, G*H]`` with ``input/bias`` b ``[G*H]``, and
``recurrent/kernel`` U ``[H, G*H]`` (the GRU adds ``recurrent_bias`` ``[H]``). A step is
split in two:

* ``cell.project(x_BTD) -> xw_BTG``: the input side ``x W + b``, which does not depend on
  the previous state, so :class:`Recurrent` computes it for all T steps in one matmul
  before the scan (as cuDNN and PyTorch do);
* ``cell.step(carry, xw_BG) -> (carry, h_BH)``: the recurrent side, one time step.

Calling a cell, ``cell(carry, x_BD) -> (carry, h_BH)``, is one whole step: flax's cell
interface, so the cells also run inside ``nn.RNN``.

:class:`Recurrent` runs a cell over a sequence with a mask for variable lengths: where
``mask_BT`` is False the carry is left as it was and the output is zero, so padding at
the end of a sequence never changes a result (the final carry is the carry after the
last real step; tested), and a reversed scan (``reverse=True``, the backward half of a
bidirectional encoder) starts each sequence at its own last real step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

Carry = Any  # an array [B, H], or a tuple of them (the LSTM's (c, h))


def per_gate(init: Callable, gates: int) -> Callable:
    """An initializer for a ``[..., G*H]`` kernel drawing each gate block ``[..., H]`` with ``init`` on its own key."""

    def initializer(key, shape, dtype=jnp.float32):
        *lead, width = shape
        if width % gates:
            raise ValueError(f"a kernel of {width} columns does not split into {gates} gate blocks.")
        keys = jax.random.split(key, gates)
        return jnp.concatenate([init(k, (*lead, width // gates), dtype) for k in keys], axis=-1)

    return initializer


def orthogonal_blocks(gates: int) -> Callable:
    """An initializer for a ``[R, G*H]`` kernel whose every gate block ``[R, H]`` is orthogonal (orthonormal
    columns, or rows when R < H), as flax's cells initialise each recurrent matrix.

    Each block is the Q of a QR decomposition of a Gaussian matrix (signs fixed by R's
    diagonal, so the distribution is uniform over orthogonal matrices), one 2-D QR per block
    on its own key. Not one batched QR: jaxlib spreads a batched LAPACK call over XLA's
    thread pool and waits inside it, and two such calls running at once (the two directions
    of a bidirectional layer, on a 2-core machine) deadlock.
    """

    def initializer(key, shape, dtype=jnp.float32):
        rows, width = shape
        if width % gates:
            raise ValueError(f"a kernel of {width} columns does not split into {gates} gate blocks.")
        cols = width // gates
        blocks = []
        for k in jax.random.split(key, gates):
            a_NM = jax.random.normal(k, (max(rows, cols), min(rows, cols)), jnp.float32)
            q_NM, r_MM = jnp.linalg.qr(a_NM)
            q_NM = q_NM * jnp.sign(jnp.diagonal(r_MM))[None, :]
            blocks.append(q_NM if rows >= cols else q_NM.T)  # [rows, cols]
        return jnp.concatenate(blocks, axis=-1).astype(dtype)

    return initializer


def small_uniform(key, shape, dtype=jnp.float32):
    """``U(-1/sqrt(H), 1/sqrt(H))`` for a block ``[..., H]``: the small random weights of the classic
    recurrent nets, as ``torch.nn.RNN``, ``LSTM`` and ``GRU`` still draw every weight.

    A square ``[H, H]`` block of it has spectral radius about ``1/sqrt(3)`` (the circular law),
    below 1: a vanilla tanh RNN so initialised shrinks its gradients through time at every
    step (Pascanu et al. 2013), where an orthogonal block (:func:`orthogonal_blocks`) keeps
    their norm until the tanh saturates.
    """
    bound = 1.0 / jnp.sqrt(shape[-1])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


RECURRENT_INITS: dict[str, Callable | None] = {"orthogonal": None, "small_uniform": small_uniform}
"""The named initializers of U's gate blocks (``None``: :func:`orthogonal_blocks`)."""


class _Cell(nn.RNNCellBase):
    """What the three cells share: the fused input and recurrent projections.

    Attributes:
      features: H, the hidden width.
      kernel_init: initializer of W (each gate block on its own key).
      recurrent_kernel_init: initializer of each gate block of U (on its own key); None:
        every block orthogonal (:func:`orthogonal_blocks`).
      bias_init: initializer of b.
      dtype: compute dtype (parameters stay float32).
    """

    features: int
    kernel_init: Callable = nn.initializers.lecun_normal()
    recurrent_kernel_init: Callable | None = None
    bias_init: Callable = nn.initializers.zeros
    dtype: Any = None

    gates = 1  # G: gate blocks side by side in W, U and b

    def setup(self):
        width = self.gates * self.features
        self.input = nn.Dense(width, dtype=self.dtype, kernel_init=per_gate(self.kernel_init, self.gates),
                              bias_init=self.input_bias_init(), name="input")
        self.recurrent = nn.Dense(width, use_bias=False, dtype=self.dtype,
                                  kernel_init=orthogonal_blocks(self.gates) if self.recurrent_kernel_init is None
                                  else per_gate(self.recurrent_kernel_init, self.gates), name="recurrent")

    @nn.nowrap
    def input_bias_init(self) -> Callable:
        """The initializer of b ``[G*H]`` (the LSTM adds its forget bias)."""
        return self.bias_init

    def project(self, x: jax.Array) -> jax.Array:
        """The input side ``x W + b``: ``[..., D] -> [..., G*H]``."""
        return self.input(x)

    def __call__(self, carry: Carry, x_BD: jax.Array) -> tuple[Carry, jax.Array]:
        """One whole step: ``(carry, x_BD) -> (carry, h_BH)``."""
        return self.step(carry, self.project(x_BD))

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array | None, input_shape: tuple[int, ...]) -> Carry:
        """Zeros ``[*batch, H]`` for inputs of ``input_shape`` (``[*batch, D]``): the state before
        the first step (flax's cell interface; ``rng`` is unused)."""
        return jnp.zeros((*input_shape[:-1], self.features), self.dtype or jnp.float32)

    @property
    def num_feature_axes(self) -> int:
        return 1

    @staticmethod
    def output(carry: Carry) -> jax.Array:
        """The hidden state ``h_BH`` held in ``carry``."""
        return carry


class SimpleRNNCell(_Cell):
    """The vanilla (Elman) RNN: one gate block.

    ``h_t = tanh(x_t W + b + h_{t-1} U)``; the carry is ``h`` ``[B, H]``.
    """

    gates = 1

    def step(self, h_BH: jax.Array, xw_BH: jax.Array) -> tuple[jax.Array, jax.Array]:
        h_BH = jnp.tanh(xw_BH + self.recurrent(h_BH))
        return h_BH, h_BH


class LSTMCell(_Cell):
    """The LSTM (Hochreiter & Schmidhuber 1997, with a forget gate): gate blocks in the order i, f, g, o.

    ``[i, f, g, o] = x_t W + b + h_{t-1} U`` (each ``[B, H]``), then::

        i = sigmoid(i)   input gate          c_t = f * c_{t-1} + i * g
        f = sigmoid(f)   forget gate         h_t = o * tanh(c_t)
        g = tanh(g)      candidate cell
        o = sigmoid(o)   output gate

    The carry is ``(c, h)``, as in ``flax.linen.OptimizedLSTMCell`` (whose weights map
    onto these: W = concat of its ``ii, if, ig, io`` kernels, U of ``hi, hf, hg, ho``, b of
    the ``h*`` biases; tested), and as in ``torch.nn.LSTM`` (same gate order).

    Attributes:
      forget_bias: added to the forget gate's block of b at initialisation. 0 (flax's and
        PyTorch's default) starts f near 1/2, so the cell halves its memory at every step;
        1 starts it near 0.73, the open forget gate of Gers et al. (2000) and Jozefowicz et
        al. (2015), TensorFlow's default.
    """

    gates = 4
    forget_bias: float = 0.0

    @nn.nowrap
    def input_bias_init(self) -> Callable:
        base, H, forget_bias = self.bias_init, self.features, self.forget_bias

        def initializer(key, shape, dtype=jnp.float32):
            return base(key, shape, dtype).at[H:2 * H].add(forget_bias)

        return initializer

    def step(self, carry: tuple[jax.Array, jax.Array], xw_B4H: jax.Array):
        c_BH, h_BH = carry
        i, f, g, o = jnp.split(xw_B4H + self.recurrent(h_BH), 4, axis=-1)
        c_BH = jax.nn.sigmoid(f) * c_BH + jax.nn.sigmoid(i) * jnp.tanh(g)
        h_BH = jax.nn.sigmoid(o) * jnp.tanh(c_BH)
        return (c_BH, h_BH), h_BH

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        zeros = jnp.zeros((*input_shape[:-1], self.features), self.dtype or jnp.float32)
        return zeros, zeros

    @staticmethod
    def output(carry):
        return carry[1]


class GRUCell(_Cell):
    """The GRU (Cho et al. 2014): gate blocks in the order r, z, n.

    With ``[x_r, x_z, x_n] = x_t W + b`` and ``[h_r, h_z, h_n] = h_{t-1} U``::

        r = sigmoid(x_r + h_r)                 reset gate
        z = sigmoid(x_z + h_z)                 update gate
        n = tanh(x_n + r * (h_n + b_hn))       candidate
        h_t = (1 - z) * n + z * h_{t-1}

    ``b_hn`` is ``recurrent_bias`` ``[H]``. The same equations as ``flax.linen.GRUCell``
    and ``torch.nn.GRU`` (tested against flax). The carry is ``h`` ``[B, H]``.
    """

    gates = 3

    def setup(self):
        super().setup()
        self.recurrent_bias = self.param("recurrent_bias", self.bias_init, (self.features,), jnp.float32)

    def step(self, h_BH: jax.Array, xw_B3H: jax.Array) -> tuple[jax.Array, jax.Array]:
        x_r, x_z, x_n = jnp.split(xw_B3H, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(self.recurrent(h_BH), 3, axis=-1)
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * (h_n + self.recurrent_bias.astype(h_n.dtype)))
        h_BH = (1.0 - z) * n + z * h_BH
        return h_BH, h_BH


CELLS: dict[str, type[_Cell]] = {"rnn": SimpleRNNCell, "lstm": LSTMCell, "gru": GRUCell}


def make_cell(kind: str, features: int, **kwargs) -> _Cell:
    """The cell called ``kind`` (``rnn``, ``lstm`` or ``gru``) of width ``features``.

    Raises:
      ValueError: for an unknown kind, naming the known ones.
    """
    if kind not in CELLS:
        raise ValueError(f"unknown cell type '{kind}'; choose one of {', '.join(CELLS)}.")
    return CELLS[kind](features, **kwargs)


class RecurrentOutput(NamedTuple):
    """What :class:`Recurrent` returns.

    Attributes:
      final: the carry after each sequence's last real step (``[B, H]``, or the LSTM's ``(c, h)``).
      outputs: ``h_BTH``, the hidden state at every step; zero where the mask is False.
      states: with ``return_states=True``, the carry after every step (each leaf ``[B, T, H]``;
        at a padded step, the carry held over it); else None.
    """

    final: Carry
    outputs: jax.Array
    states: Carry | None


def _scan_step(cell: _Cell, carry: Carry, inputs: tuple[jax.Array, jax.Array]):
    xw_BG, mask_B = inputs
    new_carry, h_BH = cell.step(carry, xw_BG)
    keep_B1 = mask_B[:, None]
    carry = jax.tree.map(lambda new, old: jnp.where(keep_B1, new, old), new_carry, carry)
    return carry, (jnp.where(keep_B1, h_BH, 0).astype(h_BH.dtype), carry)


class Recurrent(nn.Module):
    """Runs ``cell`` over time: ``x_BTD -> RecurrentOutput`` (outputs ``[B, T, H]``).

    The input projection runs once on all ``[B, T]`` positions; the recurrent step is an
    ``nn.scan`` over time (the cell's parameters broadcast, not stacked).

    Attributes:
      cell: the cell (``SimpleRNNCell``, ``LSTMCell`` or ``GRUCell``); its parameters live under ``cell``.
      reverse: run from the last step to the first (a bidirectional encoder's backward half).
      unroll: time steps per scan iteration (``lax.scan``'s ``unroll``): fewer loop
        iterations for a larger program.
    """

    cell: _Cell
    reverse: bool = False
    unroll: int = 1

    @nn.compact
    def __call__(self, x_BTD: jax.Array, mask_BT: jax.Array | None = None, initial_carry: Carry | None = None,
                 *, return_states: bool = False) -> RecurrentOutput:
        """Args:
          x_BTD: inputs ``[B, T, D]``.
          mask_BT: ``bool[B, T]``, True at real steps (default: all). Padding must come after
            a sequence's real steps; a False step leaves the carry unchanged.
          initial_carry: the carry before the first step (default zeros).
          return_states: also return the carry after every step.
        """
        B, T, _ = x_BTD.shape
        if mask_BT is None:
            mask_BT = jnp.ones((B, T), bool)
        if mask_BT.shape != (B, T):
            raise ValueError(f"mask of shape {mask_BT.shape} does not match the inputs' [B, T] = {(B, T)}.")
        carry = self.cell.initialize_carry(None, x_BTD[:, 0].shape) if initial_carry is None else initial_carry
        xw_TBG = jnp.swapaxes(self.cell.project(x_BTD), 0, 1)
        scan = nn.scan(_scan_step, variable_broadcast="params", split_rngs={"params": False},
                       reverse=self.reverse, unroll=self.unroll)
        final, (h_TBH, states_T) = scan(self.cell, carry, (xw_TBG, jnp.swapaxes(mask_BT, 0, 1)))
        states = jax.tree.map(lambda s: jnp.swapaxes(s, 0, 1), states_T) if return_states else None
        return RecurrentOutput(final, jnp.swapaxes(h_TBH, 0, 1), states)


class Bidirectional(nn.Module):
    """A forward and a backward :class:`Recurrent` over the same inputs, outputs concatenated.

    ``x_BTD -> (outputs [B, T, 2H], (forward final carry, backward final carry))``: at step t
    the forward half has read ``x_0..x_t`` and the backward half ``x_t..x_last`` (Bahdanau et
    al.'s annotations). Parameters under ``forward/cell`` and ``backward/cell``.
    """

    cell_type: str
    features: int
    unroll: int = 1

    @nn.compact
    def __call__(self, x_BTD: jax.Array, mask_BT: jax.Array | None = None):
        cell = lambda: make_cell(self.cell_type, self.features, parent=None)  # noqa: E731 (adopted by Recurrent)
        fwd = Recurrent(cell(), unroll=self.unroll, name="forward")(x_BTD, mask_BT)
        bwd = Recurrent(cell(), reverse=True, unroll=self.unroll, name="backward")(x_BTD, mask_BT)
        return jnp.concatenate([fwd.outputs, bwd.outputs], axis=-1), (fwd.final, bwd.final)


class RecurrentClassifier(nn.Module):
    """Reads a padded sentence and classifies it from the final state: ``tokens_BT -> logits_BK``.

    ``Embed -> Recurrent(cell) -> Dense`` on the hidden state after each sentence's last word
    (``tokens == pad_id`` marks the padding). :meth:`from_embeddings` starts after the
    embedding, so gradients with respect to the inputs ``x_BTE`` can be taken.

    Attributes:
      vocab_size: V. embed_dim: E. cell_type: ``rnn``, ``lstm`` or ``gru``. features: H.
      num_classes: K. pad_id: the padding token.
      recurrent_init: the draw of U, a key of :data:`RECURRENT_INITS`.
      forget_bias: the LSTM's forget-gate bias at initialisation (:class:`LSTMCell`); unused by the others.
    """

    vocab_size: int
    embed_dim: int
    cell_type: str
    features: int
    num_classes: int
    pad_id: int = 0
    recurrent_init: str = "orthogonal"
    forget_bias: float = 0.0

    def setup(self):
        if self.recurrent_init not in RECURRENT_INITS:
            raise ValueError(f"unknown recurrent init '{self.recurrent_init}'; choose one of {', '.join(RECURRENT_INITS)}.")
        kwargs: dict = {"recurrent_kernel_init": RECURRENT_INITS[self.recurrent_init]}
        if self.cell_type == "lstm":
            kwargs["forget_bias"] = self.forget_bias
        self.embed = nn.Embed(self.vocab_size, self.embed_dim)
        self.rnn = Recurrent(make_cell(self.cell_type, self.features, parent=None, **kwargs))
        self.head = nn.Dense(self.num_classes)

    def __call__(self, tokens_BT: jax.Array) -> jax.Array:
        return self.from_embeddings(self.embed(tokens_BT), tokens_BT != self.pad_id)

    def from_embeddings(self, x_BTE: jax.Array, mask_BT: jax.Array) -> jax.Array:
        """``logits_BK`` from embedded inputs ``x_BTE`` and ``mask_BT``."""
        final = self.rnn(x_BTE, mask_BT).final
        return self.head(self.rnn.cell.output(final))
