"""Chapter 11 figures: a pointer network's attention while it sorts, accuracy by length, hulls and tours.

Every function takes plain numbers and returns a ``matplotlib.figure.Figure``; save it
with :func:`p2t_jax.viz.style.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from p2t_jax.viz.style import PALETTE, figure_style, new_figure


def pointer_attention(values: Sequence[float], weights_TS: np.ndarray, positions_T: Sequence[int]) -> Figure:
    """The pointer distribution at each output step while sorting ``values``.

    Args:
      values: the n inputs, in input order.
      weights_TS: ``[n, n + 1]``, the decoder's softmax over the encoder positions (0: the end) per step.
      positions_T: the positions pointed at (1-based; the element ``values[p - 1]``).
    """
    values = list(values)
    w = np.asarray(weights_TS, float)[:, 1:]  # the end position is never allowed when sorting
    with figure_style():
        n = len(values)
        fig, ax = new_figure(width=0.42 * n + 2.2, height=0.42 * n + 1.4)
        image = ax.imshow(w, cmap="Blues", vmin=0, vmax=1, aspect="equal")
        ax.set_xticks(range(n), [f"{v:.2f}" for v in values], rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(positions_T)), [f"{t + 1}: {values[p - 1]:.2f}" for t, p in enumerate(positions_T)],
                      fontsize=7)
        ax.grid(False)
        ax.set_xlabel("input (in the order given)")
        ax.set_ylabel("output step: the value pointed at")
        ax.set_title("Pointer attention while sorting", fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.7, label="pointer probability")
    return fig


def accuracy_by_length(panels: Mapping[str, Mapping[str, tuple[Sequence[int], Sequence[float]]]],
                       train_ranges: Mapping[str, tuple[int, int]]) -> Figure:
    """Accuracy against the number of inputs, one panel per problem, the trained range shaded.

    Args:
      panels: problem title -> curve label -> ``(lengths, values in [0, 1])``.
      train_ranges: problem title -> ``(lo, hi)`` trained on.
    """
    with figure_style():
        fig, axes = new_figure(1, len(panels), width=4.2, height=3.4)
        axes = np.atleast_1d(axes)
        for ax, (title, curves) in zip(axes, panels.items()):
            lo, hi = train_ranges[title]
            ax.axvspan(lo - 0.5, hi + 0.5, color="0.9", lw=0, label="trained lengths")
            for i, (label, (lengths, values)) in enumerate(curves.items()):
                ax.plot(lengths, 100 * np.asarray(values, float), color=PALETTE[i % len(PALETTE)], marker="o", ms=3,
                        label=label)
            ax.set_ylim(0, 102)
            ax.set_xlabel("n (inputs per instance)")
            ax.set_title(title)
            ax.legend(fontsize=7, loc="lower left")
        axes[0].set_ylabel("accuracy (%)")
    return fig


def _draw_order(ax, points: np.ndarray, order: Sequence[int], color: str, label: str, *, closed: bool = True,
                dashed: bool = False) -> None:
    p = points[np.asarray(order)]
    if closed:
        p = np.concatenate([p, p[:1]])
    ax.plot(p[:, 0], p[:, 1], color=color, ls="--" if dashed else "-", lw=1.0 if dashed else 1.4, label=label,
            zorder=2 if dashed else 3)
    if not dashed and len(p) > 1:
        a, b = p[0], p[1]  # an arrow on the first edge shows the direction
        ax.annotate("", xy=(a + 0.6 * (b - a)), xytext=a, arrowprops={"arrowstyle": "->", "color": color, "lw": 1.4})


def hulls_and_tours(examples: Sequence[Mapping], per_row: int = 4) -> Figure:
    """Panels (at most ``per_row`` to a row): the points, the true answer (dashed) and the network's output in its order.

    Args:
      examples: each ``{"points": [n, 2], "predicted": [k] element indices (0-based), "target": [m], "kind":
        "hull" or "tsp", "title": str}``; the first element pointed at is ringed.
    """
    with figure_style():
        cols = min(per_row, len(examples))
        rows = -(-len(examples) // cols)
        fig, axes = new_figure(rows, cols, width=2.9, height=3.1)
        axes = np.atleast_1d(axes).ravel()
        for ax in axes[len(examples):]:
            ax.axis("off")
        for ax, ex in zip(axes, examples):
            points = np.asarray(ex["points"], float)
            ax.scatter(points[:, 0], points[:, 1], s=10, color="0.25", zorder=4)
            truth = "true hull" if ex["kind"] == "hull" else "optimal tour"
            _draw_order(ax, points, ex["target"], "0.55", truth, dashed=True)
            if len(ex["predicted"]):
                _draw_order(ax, points, ex["predicted"], PALETTE[1], "pointer network")
                first = points[ex["predicted"][0]]
                ax.scatter([first[0]], [first[1]], s=60, facecolors="none", edgecolors=PALETTE[1], zorder=5)
            ax.set_xlim(-0.03, 1.03)
            ax.set_ylim(-0.03, 1.03)
            ax.set_aspect("equal")
            ax.set_title(ex.get("title", ""), fontsize=8)
            ax.tick_params(labelsize=6)
        axes[0].legend(fontsize=6, loc="upper left")
    return fig
