"""Chapter 11's problems, generated on the fly: sorting, planar convex hulls, small travelling-salesman tours.

Every problem reads n elements and outputs positions of them (Vinyals et al. 2015):

* ``sort``: n reals drawn uniformly from [0, 1); output: the positions in increasing order
  of value.
* ``hull``: n points drawn uniformly from the unit square; output: the convex hull's
  vertices counter-clockwise from the one of lowest index, then the end
  (:func:`p2t_jax.data.geometry.convex_hull`). Where several points share a location (only
  in instances written by hand), the target names the lowest index among them.
* ``tsp``: n <= :data:`TSP_MAX_LENGTH` cities drawn uniformly from the unit square;
  output: the exact shortest closed tour from city 0, counter-clockwise (the hull's
  convention; Held-Karp dynamic programming, :func:`p2t_jax.data.geometry.held_karp`).

A batch is a dict of NumPy arrays, padded to N elements and T output steps::

    inputs   float32[B, N, D]   the elements (D = 1 for sort, 2 for points), zeros as padding
    mask     bool[B, N]         True at each row's n real elements (a prefix)
    length   int32[B]           n
    targets  int32[B, T]        encoder positions (element i is i + 1, the end 0), -1 after the end
    optimal  float32[B]         tsp only: the optimal tour's length

Training batch ``step`` is drawn from ``numpy.random.default_rng((seed, step))`` (with a
pool of ``train_examples``, from ``(seed, step mod steps_per_pool)``: the same fixed batches
each pass), each example's n uniform in the training range; evaluation sets come from
``(seed, EVAL_STREAM, n)`` (one length) or ``(seed, EVAL_STREAM, 0)`` (mixed lengths), the
same at every evaluation. So a resumed run sees
exactly the batches a straight one would.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from p2t_jax.configuration import ConfigError, require
from p2t_jax.data import geometry

PROBLEMS = ("sort", "hull", "tsp")
ELEMENT_WIDTH = {"sort": 1, "hull": 2, "tsp": 2}  # D
ALLOW_END = {"sort": False, "hull": True, "tsp": False}  # the output's length is the model's to choose
MIN_LENGTH = {"sort": 2, "hull": 3, "tsp": 2}  # a hull needs three points
TSP_MAX_LENGTH = 10  # exact tours (Held-Karp) for up to this many cities
PAD = -1
EVAL_STREAM = 2**31 - 1  # evaluation sets' seed stream, apart from every training step's


def output_steps(problem: str, num_elements: int) -> int:
    """T for N elements: N (a permutation) or N + 1 (a hull may hold every point, then the end)."""
    return num_elements + int(ALLOW_END[problem])


def check_lengths(problem: str, lengths: Sequence[int], max_length: int, what: str) -> None:
    """Every n in ``lengths`` must be a problem size this model is configured for (ConfigError otherwise)."""
    lo = MIN_LENGTH[problem]
    hi = min(max_length, TSP_MAX_LENGTH) if problem == "tsp" else max_length
    for n in lengths:
        require(isinstance(n, (int, np.integer)) and lo <= n <= hi,
                f"{what} asks for {problem} instances of length {n}; allowed are {lo} to {hi}"
                + (f" (exact tours are computed for at most {TSP_MAX_LENGTH} cities)" if problem == "tsp" else "")
                + f" with data.max_length = {max_length}.")


def solve(problem: str, elements_nD: np.ndarray) -> np.ndarray:
    """The target positions (element i is position i + 1; the hull's ends with 0) of one instance."""
    if problem == "sort":
        return np.argsort(elements_nD[:, 0], kind="stable") + 1
    if problem == "hull":
        return np.concatenate([geometry.convex_hull(elements_nD) + 1, [0]])
    tour, _ = geometry.held_karp(elements_nD[None])
    return tour[0] + 1


def assemble(problem: str, elements: Sequence[np.ndarray], num_elements: int | None = None) -> dict[str, np.ndarray]:
    """A padded batch of the given instances (each ``[n, D]``), with their exact targets.

    Args:
      problem: one of :data:`PROBLEMS`.
      elements: B arrays ``[n_b, D]``.
      num_elements: N, the padded width (default the longest instance).
    """
    lengths = np.asarray([len(e) for e in elements], np.int64)
    N = int(lengths.max()) if num_elements is None else num_elements
    B, D, T = len(elements), ELEMENT_WIDTH[problem], output_steps(problem, N)
    inputs = np.zeros((B, N, D), np.float32)
    for b, e in enumerate(elements):
        inputs[b, :len(e)] = e
    mask = np.arange(N)[None, :] < lengths[:, None]
    targets = np.full((B, T), PAD, np.int32)
    batch = {"inputs": inputs, "mask": mask, "length": lengths.astype(np.int32), "targets": targets}
    if problem == "tsp":
        optimal = np.zeros(B, np.float32)
        for n in np.unique(lengths):  # Held-Karp batched over the instances of one size
            rows = np.flatnonzero(lengths == n)
            tours, best = geometry.held_karp(np.stack([np.asarray(elements[r], np.float64) for r in rows]))
            targets[rows, :n] = tours + 1
            optimal[rows] = best
        batch["optimal"] = optimal
    else:
        for b, e in enumerate(elements):
            answer = solve(problem, np.asarray(e, np.float64))
            targets[b, :len(answer)] = answer
    return batch


def pad(problem: str, batch: dict[str, np.ndarray], num_elements: int) -> dict[str, np.ndarray]:
    """``batch`` padded to ``num_elements`` elements (and their output steps): the same instances, the
    same answers, another shape (so instances of several lengths can share one compiled program)."""
    B, N, D = batch["inputs"].shape
    if num_elements < N:
        raise ValueError(f"cannot pad a batch of {N} elements to {num_elements}.")
    out = dict(batch)
    out["inputs"] = np.concatenate([batch["inputs"], np.zeros((B, num_elements - N, D), np.float32)], axis=1)
    out["mask"] = np.concatenate([batch["mask"], np.zeros((B, num_elements - N), bool)], axis=1)
    T = output_steps(problem, num_elements) - batch["targets"].shape[1]
    out["targets"] = np.concatenate([batch["targets"], np.full((B, T), PAD, np.int32)], axis=1)
    return out


def draw(problem: str, rng: np.random.Generator, lengths_B: np.ndarray, num_elements: int) -> dict[str, np.ndarray]:
    """A batch of random instances with n = ``lengths_B[b]`` elements each, padded to ``num_elements``."""
    D = ELEMENT_WIDTH[problem]
    raw = rng.random((len(lengths_B), num_elements, D))  # one draw per batch: fast, and n-independent
    return assemble(problem, [raw[b, :n] for b, n in enumerate(lengths_B)], num_elements)


def instances(problem: str, values: Sequence, max_length: int) -> dict[str, np.ndarray]:
    """A batch from instances a user wrote down (numbers for ``sort``, ``(x, y)`` pairs otherwise).

    Raises:
      ConfigError: an instance of a size outside the allowed range, a number outside [0, 1)
        for sorting, a point outside the unit square, or points whose hull has no area.
    """
    elements = []
    for i, value in enumerate(values):
        try:
            e = np.asarray(value, np.float64)
        except (TypeError, ValueError):
            raise ConfigError(f"{problem} instance {i} is not a list of numbers: {value!r}.") from None
        if problem == "sort" and e.ndim == 1:
            e = e[:, None]
        D = ELEMENT_WIDTH[problem]
        require(e.ndim == 2 and e.shape[1] == D and np.isfinite(e).all(),
                f"{problem} instance {i} must be a list of {'numbers' if D == 1 else '(x, y) points'}, "
                f"got an array of shape {e.shape}.")
        check_lengths(problem, [len(e)], max_length, f"{problem} instance {i}")
        if problem == "sort":
            bad = e[(e < 0) | (e >= 1)]
            if bad.size:
                raise ConfigError(f"sort instance {i} holds {bad[0]:g}; the model sorts numbers in [0, 1).")
        else:
            outside = ((e < 0) | (e > 1)).any(1)
            if outside.any():
                raise ConfigError(f"{problem} instance {i} has the point {tuple(float(v) for v in e[outside][0])} "
                                  f"outside the unit square; coordinates must lie in [0, 1].")
        if problem == "hull":
            try:
                geometry.convex_hull(e)
            except ValueError:
                raise ConfigError(f"hull instance {i}: the points lie on one line, so their hull has no area.") from None
        elements.append(e)
    require(len(elements) > 0, f"no {problem} instance was given.")
    return assemble(problem, elements, max(len(e) for e in elements))


class PointerBatches:
    """Deterministic batches of one problem for the loop: ``train_batch(step)`` and fixed evaluation sets.

    Args:
      problem: one of :data:`PROBLEMS`.
      seed: the run's seed.
      batch_size: B of a training batch.
      train_lengths: ``(lo, hi)``: each training instance has n uniform in lo..hi; batches are
        padded to N = hi.
      train_examples: 0: a fresh batch every step; else a pool of this many examples
        (``train_examples // batch_size`` fixed batches, cycled).
    """

    def __init__(self, problem: str, seed: int, batch_size: int, train_lengths: tuple[int, int],
                 train_examples: int = 0):
        self.problem, self.seed, self.batch_size = problem, seed, batch_size
        self.lo, self.hi = train_lengths
        self.pool_batches = train_examples // batch_size if train_examples else 0

    def train_batch(self, step: int) -> dict[str, np.ndarray]:
        """Batch ``step`` (the same for the same seed and step, whatever came before)."""
        position = step % self.pool_batches if self.pool_batches else step
        rng = np.random.default_rng((self.seed, position))
        lengths = rng.integers(self.lo, self.hi + 1, self.batch_size)
        return draw(self.problem, rng, lengths, self.hi)

    @functools.lru_cache(maxsize=64)  # noqa: B019 (a handful of sets per run, reused at every evaluation)
    def eval_set(self, n: int, size: int) -> dict[str, np.ndarray]:
        """``size`` instances of exactly n elements, unpadded (N = n): the same at every call."""
        rng = np.random.default_rng((self.seed, EVAL_STREAM, n))
        return draw(self.problem, rng, np.full(size, n), n)

    @functools.lru_cache(maxsize=8)  # noqa: B019
    def mixed_eval_set(self, lengths: tuple[int, ...]) -> dict[str, np.ndarray]:
        """One instance of each n in ``lengths``, padded to the longest: the same at every call."""
        rng = np.random.default_rng((self.seed, EVAL_STREAM, 0))
        return draw(self.problem, rng, np.asarray(lengths), max(lengths))

    def eval_batches(self, lengths: Sequence[int], size: int, batch_size: int):
        """Evaluation batches: ``size`` instances of each n in ``lengths``, at most ``batch_size`` rows each."""
        for n in lengths:
            full = self.eval_set(n, size)
            for start in range(0, size, batch_size):
                yield {k: v[start:start + batch_size] for k, v in full.items()}
