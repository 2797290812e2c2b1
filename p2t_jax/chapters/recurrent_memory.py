"""Chapter 8's measurements on trained recurrent classifiers: accuracy by filler count, gradient by distance.

Shapes: S seeds (parameters stacked along a leading axis, as :func:`p2t_jax.training.sweep.train_seeds`
returns them), N sentences, L words per padded row, E embedding width, K classes.

* :func:`accuracy_by_fillers`: every seed's accuracy on the evaluation set of each filler
  count (all rows cut to the same length, the longest sentence measured, so one compilation
  serves every count and no step runs past the longest sentence).
* :func:`first_input_gradients`: ``||dLoss / dx_0||``, the gradient of the cross-entropy
  with respect to the first word's embedding (the subject), per sentence: how much the
  loss at the end still feels the first input, ``n + 2`` steps back.
* :func:`geometric_slope`: the least-squares slope of ``log10(norm)`` against distance:
  a straight line on a log scale is geometric decay, ``10**slope`` the factor per step.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from p2t_jax.data import memory
from p2t_jax.models.rnn import RecurrentClassifier


@functools.partial(jax.jit, static_argnums=0)
def _accuracy_S(model: RecurrentClassifier, params_S, batch: dict) -> jax.Array:
    def accuracy(params):
        return jnp.mean(model.apply({"params": params}, batch["tokens"]).argmax(-1) == batch["label"])

    return jax.vmap(accuracy)(params_S)


@functools.partial(jax.jit, static_argnums=0)
def _predictions_SN(model: RecurrentClassifier, params_S, tokens_NL: jax.Array) -> jax.Array:
    return jax.vmap(lambda params: model.apply({"params": params}, tokens_NL).argmax(-1))(params_S)


@functools.partial(jax.jit, static_argnums=0)
def _first_input_gradients_SN(model: RecurrentClassifier, params_S, batch: dict) -> jax.Array:
    tokens = batch["tokens"]

    def norms(params):
        x_NLE = model.apply({"params": params}, tokens, method=lambda m, t: m.embed(t))

        def loss(x_NLE):
            logits = model.apply({"params": params}, x_NLE, tokens != memory.PAD, method=model.from_embeddings)
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).sum()

        return jnp.linalg.norm(jax.grad(loss)(x_NLE)[:, 0], axis=-1)

    return jax.vmap(norms)(params_S)


@functools.partial(jax.jit, static_argnums=0)
def _lstm_gates_S(model: RecurrentClassifier, params_S, tokens_NL: jax.Array):
    def gates(module, tokens):
        x = module.embed(tokens)
        _, h = module.rnn(x, tokens != memory.PAD, return_states=True).states
        h_prev = jnp.concatenate([jnp.zeros_like(h[:, :1]), h[:, :-1]], axis=1)
        i, f, _, _ = jnp.split(module.rnn.cell.project(x) + module.rnn.cell.recurrent(h_prev), 4, axis=-1)
        return jax.nn.sigmoid(f), jax.nn.sigmoid(i)

    return jax.vmap(lambda p: model.apply({"params": p}, tokens_NL, method=gates))(params_S)


def lstm_gates_on_fillers(model: RecurrentClassifier, params_S, batch: dict) -> dict[str, np.ndarray]:
    """An LSTM's forget and input gates while it reads the filler words of ``batch`` (positions 1..n).

    Returns ``{"forget_mean", "input_mean", "forget_above_095"}``, each ``[S]``: the mean gate
    activation over sentences, filler positions and units, and the share of (unit, step)
    pairs whose forget gate is above 0.95 (a cell that keeps its content nearly unchanged).
    """
    if model.cell_type != "lstm":
        raise ValueError(f"gates are read from an LSTM, not a {model.cell_type!r} cell.")
    f_SNLH, i_SNLH = (np.asarray(a) for a in _lstm_gates_S(model, params_S, jnp.asarray(batch["tokens"])))
    position = np.arange(f_SNLH.shape[2])[None, :]
    filler_NL = (position >= 1) & (position <= np.asarray(batch["fillers"])[:, None])
    pick = lambda a: a[:, filler_NL]  # noqa: E731  [S, fillers, H]
    return {"forget_mean": pick(f_SNLH).mean((1, 2)), "input_mean": pick(i_SNLH).mean((1, 2)),
            "forget_above_095": (pick(f_SNLH) > 0.95).mean((1, 2))}


def eval_rows(batches: memory.MemoryBatches, fillers: int, size: int, length: int) -> dict[str, np.ndarray]:
    """``batches.eval_set(fillers, size)`` with its rows cut to ``length`` words (>= the sentences' own length).

    The sentences are the same ones (they are drawn at the batches' full width), and only
    padding is cut off, which never changes an output, a final state or a gradient (tested),
    so every count of a measurement shares one compiled shape without running the scan over
    steps that are padding in every row.
    """
    if memory.sentence_length(fillers) > length:
        raise ValueError(f"sentences with {fillers} fillers have {memory.sentence_length(fillers)} words, more than "
                         f"the {length} kept.")
    rows = batches.eval_set(fillers, size)
    return dict(rows, tokens=rows["tokens"][:, :length])


def accuracy_by_fillers(model: RecurrentClassifier, params_S, batches: memory.MemoryBatches,
                        fillers: Sequence[int], size: int) -> np.ndarray:
    """``[len(fillers), S]``: each seed's accuracy on ``size`` sentences with each filler count."""
    length = memory.sentence_length(max(fillers))
    return np.stack([np.asarray(_accuracy_S(model, params_S, eval_rows(batches, n, size, length)))
                     for n in fillers])


def predictions(model: RecurrentClassifier, params_S, tokens_NL: np.ndarray) -> np.ndarray:
    """``int32[S, N]``: each seed's predicted class for each padded row."""
    return np.asarray(_predictions_SN(model, params_S, jnp.asarray(tokens_NL)))


def first_input_gradients(model: RecurrentClassifier, params_S, batch: dict) -> np.ndarray:
    """``[S, N]``: ``||d CE / d x_0||`` (L2 over the embedding) for each seed and sentence of ``batch``."""
    return np.asarray(_first_input_gradients_SN(model, params_S, batch))


def gradient_by_distance(model: RecurrentClassifier, params_S, batches: memory.MemoryBatches,
                         fillers: Sequence[int], size: int) -> np.ndarray:
    """``[len(fillers), S]``: per seed, the geometric mean over ``size`` sentences of ``||dLoss/dx_0||``
    for each filler count (the distance from the first word to the last is ``fillers + 2``)."""
    out, length = [], memory.sentence_length(max(fillers))
    for n in fillers:
        g_SN = first_input_gradients(model, params_S, eval_rows(batches, n, size, length))
        out.append(np.exp(np.mean(np.log(np.maximum(g_SN, np.finfo(np.float32).tiny)), axis=1)))
    return np.stack(out)


def geometric_slope(distance: np.ndarray, norms: np.ndarray) -> tuple[float, float]:
    """``(slope, r2)`` of the least-squares line through ``(distance, log10(norms))``."""
    y = np.log10(np.maximum(np.asarray(norms, np.float64), np.finfo(np.float64).tiny))
    x = np.asarray(distance, np.float64)
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = np.sum((y - y.mean()) ** 2)
    return float(slope), float(1 - np.sum(residual**2) / total) if total > 0 else 1.0


def first_below(fillers: Sequence[int], accuracy: np.ndarray, threshold: float, after: int) -> int | None:
    """The smallest filler count above ``after`` whose ``accuracy`` is below ``threshold`` (None: never)."""
    for n, a in zip(fillers, accuracy):
        if n > after and a < threshold:
            return int(n)
    return None
