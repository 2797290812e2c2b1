"""Exact answers for chapter 11's problems: planar convex hulls and optimal travelling-salesman tours.

NumPy, on the host: these make the training targets of :mod:`p2t_jax.data.pointer`, and
the references its metrics are checked against.

* :func:`convex_hull`: Andrew's monotone chain, then the output convention of Vinyals et
  al. (2015): the hull's vertices counter-clockwise, starting from the vertex of lowest index.
* :func:`held_karp`: the exact shortest closed tour by dynamic programming over subsets
  (Held & Karp 1962), O(2^n n^2), vectorised over a batch of instances and over every
  subset of one size at a time; its subset tables are cached per n.
* :func:`polygon_area` (shoelace) and :func:`tour_length`.

Coordinates are ``[n, 2]`` (or ``[B, n, 2]``) arrays of x, y.
"""

from __future__ import annotations

import functools

import numpy as np

HELD_KARP_MAX = 12  # 2^11 subsets x 11 x 11 per instance: beyond this, exact targets get slow


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def convex_hull(points_N2: np.ndarray) -> np.ndarray:
    """The convex hull's vertices as indices into ``points_N2``: counter-clockwise, starting
    from the lowest index (Vinyals et al.'s order). Collinear points on an edge are not vertices.
    A location held by several points (duplicates) is one vertex, named by the lowest index
    among them, so the answer is well defined (the metrics of :mod:`p2t_jax.tasks.pointer_metrics`
    score an output through another copy the same).

    Args:
      points_N2: ``[n, 2]`` with n >= 3 and not all points on one line (random points in
        the unit square are, with probability one).

    Returns:
      ``int64[h]``, 3 <= h <= n.
    """
    points = np.asarray(points_N2, np.float64)
    first: dict[tuple[float, float], int] = {}  # each location -> the lowest index holding it
    for i, (x, y) in enumerate(points):
        first.setdefault((float(x), float(y)), i)
    order = sorted(first.values(), key=lambda i: (points[i, 0], points[i, 1]))
    lower: list[int] = []
    for i in order:
        while len(lower) >= 2 and _cross(points[lower[-2]], points[lower[-1]], points[i]) <= 0:
            lower.pop()
        lower.append(i)
    upper: list[int] = []
    for i in reversed(order):
        while len(upper) >= 2 and _cross(points[upper[-2]], points[upper[-1]], points[i]) <= 0:
            upper.pop()
        upper.append(i)
    hull = lower[:-1] + upper[:-1]  # counter-clockwise from the leftmost point
    if len(hull) < 3:
        raise ValueError(f"the {len(points)} points lie on one line: their hull has no area.")
    start = int(np.argmin(hull))
    return np.asarray(hull[start:] + hull[:start], np.int64)


def polygon_area(points_N2: np.ndarray, order: np.ndarray | None = None) -> float:
    """The area enclosed by the polygon visiting ``points_N2`` in ``order`` (shoelace formula; the
    absolute value, so either orientation counts; a self-crossing polygon gives its signed sum)."""
    p = np.asarray(points_N2, np.float64)
    if order is not None:
        p = p[np.asarray(order)]
    x, y = p[:, 0], p[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def tour_length(points_N2: np.ndarray, tour: np.ndarray) -> float:
    """The length of the closed tour visiting ``points_N2`` in the order ``tour`` and back to its start."""
    p = np.asarray(points_N2, np.float64)[np.asarray(tour)]
    return float(np.linalg.norm(p - np.roll(p, -1, axis=0), axis=1).sum())


def canonical_tour(points_N2: np.ndarray, tour: np.ndarray) -> np.ndarray:
    """The same closed tour written from city 0, counter-clockwise (positive signed area).

    A closed tour has 2n spellings (n starts, two directions); the targets use this one,
    the convention of the convex hull's output. An optimal tour never crosses itself, so
    its orientation is well defined.
    """
    tour = np.asarray(tour, np.int64)
    start = int(np.argmin(tour))
    tour = np.concatenate([tour[start:], tour[:start]])
    p = np.asarray(points_N2, np.float64)[tour]
    signed = np.dot(p[:, 0], np.roll(p[:, 1], -1)) - np.dot(p[:, 1], np.roll(p[:, 0], -1))
    if len(tour) > 2 and signed < 0:
        tour = np.concatenate([tour[:1], tour[1:][::-1]])
    return tour


@functools.cache
def _subsets_by_size(m: int) -> tuple[np.ndarray, ...]:
    """For each size k = 1..m, the bit masks over m items holding k of them (index k - 1)."""
    masks = np.arange(1 << m)
    sizes = np.array([bin(s).count("1") for s in masks])
    return tuple(masks[sizes == k] for k in range(1, m + 1))


def held_karp(points_BN2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact shortest closed tours of B instances of n cities each (Euclidean distances).

    City 0 is the start. ``cost[S, j]``, the shortest path from city 0 through the set S of
    the other cities ending at ``j`` in S, is computed for all S of one size at once:
    ``cost[S, j] = min_k cost[S - {j}, k] + d(k, j)``; the tour closes with ``d(j, 0)``.

    Args:
      points_BN2: ``[B, n, 2]``, 2 <= n <= :data:`HELD_KARP_MAX`.

    Returns:
      ``(tours int64[B, n]`` in :func:`canonical_tour` form (from city 0, counter-clockwise), ``lengths float64[B])``.
    """
    points = np.asarray(points_BN2, np.float64)
    B, n, _ = points.shape
    if not 2 <= n <= HELD_KARP_MAX:
        raise ValueError(f"held_karp solves 2 to {HELD_KARP_MAX} cities exactly, got {n}.")
    dist_BNN = np.linalg.norm(points[:, :, None, :] - points[:, None, :, :], axis=-1)
    if n == 2:
        return np.tile(np.arange(2), (B, 1)), 2 * dist_BNN[:, 0, 1]
    m = n - 1  # cities 1..n-1 are items 0..m-1 of the subset masks
    d_MMB = np.moveaxis(dist_BNN[:, 1:, 1:], 0, -1)  # batch last: each gather below reads whole rows
    d_kj = np.swapaxes(d_MMB, 0, 1)[None]  # [1, j, k, B] = d(k, j)
    cost = np.full((1 << m, m, B), np.inf)  # cost[S, j, b]
    items = np.arange(m)
    cost[1 << items, items, :] = dist_BNN[:, 0, 1:].T
    for masks_K in _subsets_by_size(m)[1:]:
        has_KM = (masks_K[:, None] >> items[None, :]) & 1 == 1  # [K, m]: j in S
        prev_KM = masks_K[:, None] ^ (1 << items)[None, :]  # S - {j} (meaningful where j in S)
        best = (cost[prev_KM] + d_kj).min(2)  # min over k of cost[S - {j}, k] + d(k, j)
        cost[masks_K] = np.where(has_KM[..., None], best, np.inf)
    full = (1 << m) - 1
    closing_MB = cost[full] + dist_BNN[:, 1:, 0].T
    last = closing_MB.argmin(0)
    rows = np.arange(B)
    lengths = closing_MB[last, rows]
    tours = np.zeros((B, n), np.int64)
    mask = np.full(B, full)
    for position in range(n - 1, 0, -1):  # walk back: the k that attained cost[S, last]
        tours[:, position] = last + 1
        mask = mask ^ (1 << last)
        if position > 1:
            last = (cost[mask, :, rows] + d_MMB[:, last, rows].T).argmin(1)
    return np.stack([canonical_tour(p, t) for p, t in zip(points, tours)]), lengths
