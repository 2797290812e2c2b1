"""Chapter 2 figures: activations and their derivatives, the XOR band and the hidden space."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from p2t_jax.viz.perceptron_figures import LIMITS, draw_line, draw_points
from p2t_jax.viz.style import PALETTE, figure_style, new_figure


def activations(z: np.ndarray, values: dict[str, np.ndarray], derivatives: dict[str, np.ndarray]) -> Figure:
    """Two panels: each activation ``f(z)`` and its derivative ``f'(z)``; arrays ``[Z]``."""
    with figure_style():
        fig, (ax_f, ax_d) = new_figure(1, 2, width=4.0, height=3.0)
        for i, name in enumerate(values):
            ax_f.plot(z, values[name], color=PALETTE[i], label=name)
            ax_d.plot(z, derivatives[name], color=PALETTE[i], label=name)
        ax_f.set_title("activation $f(z)$")
        ax_d.set_title("derivative $f'(z)$")
        for ax in (ax_f, ax_d):
            ax.axhline(0, color="black", lw=0.5)
            ax.set_xlabel("$z$")
        ax_f.set_ylim(-1.5, 3.0)
        ax_f.legend(loc="upper left")
    return fig


HAND_SET_TITLE = "Hand-set 2-2-1 net: output 1 only in the band\nbetween the OR line and the AND line"


def xor_band(grid: np.ndarray, probs: np.ndarray, x: np.ndarray, y: np.ndarray,
             lines: Sequence[tuple[float, float, float]], line_names: Sequence[str], *,
             title: str = HAND_SET_TITLE) -> Figure:
    """A network's output over the input square, with its hidden units' lines.

    Args:
      grid: ``[G]`` coordinates along each axis; probs: ``[G, G]`` output probability at
        ``(grid[j], grid[i])`` (row i is x2, column j is x1).
      x: XOR inputs ``[4, 2]``; y: targets ``[4]``.
      lines: each hidden unit's line ``(a, b, c)``: ``a x1 + b x2 + c = 0``.
      line_names: a label per line.
      title: the panel's title.
    """
    with figure_style():
        fig, ax = new_figure(width=4.6, height=3.8)
        image = ax.contourf(grid, grid, probs, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.55)
        ax.contour(grid, grid, probs, levels=[0.5], colors="black", linewidths=1.0)
        colors = (PALETTE[2], PALETTE[4]) + tuple(c for i, c in enumerate(PALETTE) if i not in (2, 4))
        for i, ((a, b, c), name) in enumerate(zip(lines, line_names)):
            draw_line(ax, np.array([a, b]), c, color=colors[i % len(colors)], lw=2, ls="--", label=name)
        draw_points(ax, x, y)
        ax.set_xlim(*LIMITS)
        ax.set_ylim(*LIMITS)
        ax.set_aspect("equal")
        ax.set_xlabel("$x_1$")
        ax.set_ylabel("$x_2$")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=7)
        fig.colorbar(image, ax=ax, label="output probability", shrink=0.85)
    return fig


def hidden_space(hidden: np.ndarray, y: np.ndarray, inputs: np.ndarray, output_line: tuple[float, float, float],
                 grid_hidden: np.ndarray | None = None) -> Figure:
    """The XOR rows seen by the output unit: hidden activations ``[4, 2]``, and its line.

    Args:
      hidden: ``[4, 2]`` (h_or, h_and) for each row; y: ``[4]`` targets; inputs: ``[4, 2]``
        (for the labels).
      output_line: the output unit's line ``(a, b, c)`` in hidden space.
      grid_hidden: optional ``[M, 2]``: where the whole input square lands (drawn faintly).
    """
    with figure_style():
        fig, ax = new_figure(width=4.0, height=3.8)
        limits = (-0.15, 1.15)
        if grid_hidden is not None:
            ax.scatter(grid_hidden[:, 0], grid_hidden[:, 1], s=2, color="0.75", lw=0,
                       label="image of the input square")
        grid = np.linspace(*limits, 200)
        gx, gy = np.meshgrid(grid, grid)
        a, b, c = output_line
        ax.contourf(gx, gy, (a * gx + b * gy + c > 0).astype(float), levels=[0.5, 1.5], colors=[PALETTE[1]],
                    alpha=0.12)
        draw_line(ax, np.array([a, b]), c, limits=limits, color="black", lw=1.5, label="output unit's line")
        draw_points(ax, hidden, y)
        offsets: dict[tuple, int] = {}
        for h, xin in zip(hidden, inputs):
            spot = (round(float(h[0]), 2), round(float(h[1]), 2))
            k = offsets.get(spot, 0)
            offsets[spot] = k + 1
            ax.annotate(f"x=({int(xin[0])},{int(xin[1])})", (h[0], h[1]), xytext=(8, -12 - 11 * k),
                        textcoords="offset points", fontsize=7)
        ax.set_xlim(*limits)
        ax.set_ylim(*limits)
        ax.set_aspect("equal")
        ax.set_xlabel("$h_1$ (OR unit)")
        ax.set_ylabel("$h_2$ (AND unit)")
        ax.set_title("Hidden space: XOR is linearly separable")
        ax.legend(loc="upper left", fontsize=7)
    return fig

