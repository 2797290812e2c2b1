"""Chapter 11: how good a pointer network's outputs are, per example, in ``jax.numpy``.

Every function takes a batch of :mod:`p2t_jax.data.pointer` (``inputs``, ``targets``, ...)
and decoded ``positions_BT`` (encoder positions: element i is i + 1, the end 0, -1 after
the end) and returns one value per example, ``[B]``, so the loop's evaluation can average
them and the experiment can break them down by length.

* :func:`pointer_accuracy`: the fraction of the target's steps where the output points at
  the same position (the "per-pointer accuracy" of the sorting reproductions);
  :func:`exact_match`: the whole output equals the target. For the hull both compare
  locations, not indices (:func:`same_location_positions`): an output through another copy
  of a duplicated point is the same hull.
* :func:`polygon_area`, :func:`is_simple_polygon`, :func:`area_coverage`: the convex-hull
  metric of Vinyals et al. (2015): the area of the output polygon over the true hull's,
  counted only when the output is a simple polygon (no two edges cross) of at least 3
  vertices, else 0.
* :func:`tour_length`: the length of the closed tour the output visits.

:data:`PAPER` holds the published numbers the experiment prints beside ours.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

PAPER = {  # Vinyals, Fortunato & Jaitly (2015), Tables 1 and 2; sorting: a PyTorch reproduction
    "hull": {"trained_on": "5-50", "exact_match": {5: 0.920, 10: 0.870, 50: 0.696}, "area": 0.992},
    "tsp": {"ptr_net": {5: 2.12, 10: 2.88}, "optimal": {5: 2.12, 10: 2.87}},
    "sort": {"per_pointer": {5: 0.986, 10: 0.924}},
}


def _real(positions_BT: jax.Array) -> jax.Array:
    return positions_BT >= 0


def pointer_accuracy(positions_BT: jax.Array, targets_BT: jax.Array) -> jax.Array:
    """``[B]``: the fraction of each target's steps (its end included) where ``positions`` equals it."""
    real_BT = _real(targets_BT)
    hits = ((positions_BT == targets_BT) & real_BT).sum(-1)
    return hits / jnp.maximum(real_BT.sum(-1), 1)


def exact_match(positions_BT: jax.Array, targets_BT: jax.Array) -> jax.Array:
    """``float[B]``: 1 where the output is the target exactly (same positions, same length)."""
    return jnp.all(positions_BT == targets_BT, axis=-1).astype(jnp.float32)


def same_location_positions(points_BND: jax.Array, mask_BN: jax.Array, positions_BT: jax.Array) -> jax.Array:
    """``positions_BT`` with each element replaced by the lowest-index element at the same location
    (ends and padding unchanged): outputs that visit the same locations become equal."""
    same_BNN = jnp.all(points_BND[:, :, None] == points_BND[:, None, :], axis=-1) & mask_BN[:, None, :]
    first_BN = jnp.argmax(same_BNN, axis=-1)  # the lowest index at each element's location
    index_BT = jnp.clip(positions_BT - 1, 0, points_BND.shape[1] - 1)
    return jnp.where(positions_BT >= 1, jnp.take_along_axis(first_BN, index_BT, axis=1) + 1, positions_BT)


def _vertices(points_BN2: jax.Array, positions_BT: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The visited points ``[B, T, 2]`` and which steps hold an element (``bool[B, T]``, a prefix)."""
    is_element_BT = positions_BT >= 1
    index_BT = jnp.clip(positions_BT - 1, 0, points_BN2.shape[1] - 1)
    return jnp.take_along_axis(points_BN2, index_BT[..., None], axis=1), is_element_BT


def _next_vertex(v_BT2: jax.Array, valid_BT: jax.Array) -> jax.Array:
    """Each vertex's successor around the closed polygon (the last element's is the first)."""
    rolled = jnp.roll(v_BT2, -1, axis=1)
    next_valid = jnp.roll(valid_BT, -1, axis=1) & (jnp.arange(valid_BT.shape[1]) < valid_BT.shape[1] - 1)
    return jnp.where(next_valid[..., None], rolled, v_BT2[:, :1])


def polygon_area(points_BN2: jax.Array, positions_BT: jax.Array) -> jax.Array:
    """``[B]``: the shoelace area of the polygon through the visited elements, closed (absolute value)."""
    v, valid = _vertices(points_BN2, positions_BT)
    w = _next_vertex(v, valid)
    twice = jnp.where(valid, v[..., 0] * w[..., 1] - w[..., 0] * v[..., 1], 0.0).sum(-1)
    return 0.5 * jnp.abs(twice)


def _orientation(a, b, c):
    return (b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0])


def is_simple_polygon(points_BN2: jax.Array, positions_BT: jax.Array) -> jax.Array:
    """``bool[B]``: the closed polygon through the visited elements has at least 3 vertices and no two
    non-adjacent edges cross (edges ``[B, T, T]`` pairwise; distinct random points are never collinear)."""
    v, valid = _vertices(points_BN2, positions_BT)
    w = _next_vertex(v, valid)
    k_B = valid.sum(-1)
    a, b = v[:, :, None], w[:, :, None]  # edge i, against ...
    c, d = v[:, None, :], w[:, None, :]  # ... edge j
    crosses = ((_orientation(a, b, c) * _orientation(a, b, d) < 0)
               & (_orientation(c, d, a) * _orientation(c, d, b) < 0))
    T = positions_BT.shape[1]
    i, j = jnp.arange(T)[:, None], jnp.arange(T)[None, :]
    last_B11 = (k_B - 1)[:, None, None]
    adjacent = (jnp.abs(i - j) <= 1)[None] | ((i == 0) & (j == last_B11)) | ((j == 0) & (i == last_B11))
    pair_valid = valid[:, :, None] & valid[:, None, :] & ~adjacent
    return (k_B >= 3) & ~jnp.any(crosses & pair_valid, axis=(1, 2))


def area_coverage(points_BN2: jax.Array, positions_BT: jax.Array, targets_BT: jax.Array) -> jax.Array:
    """``[B]``: the output polygon's area over the true hull's where the output is a simple polygon, else 0."""
    ratio = polygon_area(points_BN2, positions_BT) / polygon_area(points_BN2, targets_BT)
    return jnp.where(is_simple_polygon(points_BN2, positions_BT), ratio, 0.0)


def tour_length(points_BN2: jax.Array, positions_BT: jax.Array) -> jax.Array:
    """``[B]``: the length of the closed tour through the visited elements, back to the first."""
    v, valid = _vertices(points_BN2, positions_BT)
    w = _next_vertex(v, valid)
    return jnp.where(valid, jnp.linalg.norm(w - v, axis=-1), 0.0).sum(-1)


def output_metrics(problem: str, batch: dict, positions_BT: jax.Array) -> dict[str, jax.Array]:
    """Every metric of ``problem``'s outputs, ``[B]`` each: ``pointer_accuracy``, ``exact_match``;
    hull: ``area_coverage``, ``simple_polygon``; tsp: ``tour_length``, ``optimal_length``, ``tour_excess``
    (tour / optimal - 1)."""
    targets = batch["targets"]
    if problem == "hull":  # the hull is a set of locations: a duplicated point's copies are one vertex
        mask = batch.get("mask", jnp.ones(batch["inputs"].shape[:2], bool))
        positions_BT = same_location_positions(batch["inputs"], mask, positions_BT)
        targets = same_location_positions(batch["inputs"], mask, targets)
    out = {"pointer_accuracy": pointer_accuracy(positions_BT, targets), "exact_match": exact_match(positions_BT, targets)}
    if problem == "hull":
        out["area_coverage"] = area_coverage(batch["inputs"], positions_BT, targets)
        out["simple_polygon"] = is_simple_polygon(batch["inputs"], positions_BT).astype(jnp.float32)
    elif problem == "tsp":
        length = tour_length(batch["inputs"], positions_BT)
        out.update(tour_length=length, optimal_length=batch["optimal"], tour_excess=length / batch["optimal"] - 1)
    return out
