"""Chapter 1 figures: perceptron decision lines, errors per epoch, updates against the bound."""

from __future__ import annotations

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from p2t_jax.viz.style import PALETTE, figure_style, new_figure

LIMITS = (-0.5, 1.5)


def draw_points(ax, x: np.ndarray, y: np.ndarray) -> None:
    """Class-1 points filled, class-0 points hollow; ``x`` ``[N, 2]``, ``y`` ``[N]``."""
    x, y = np.asarray(x), np.asarray(y)
    ones, zeros = x[y > 0.5], x[y <= 0.5]
    ax.scatter(ones[:, 0], ones[:, 1], s=70, c="black", zorder=5, label="target 1")
    ax.scatter(zeros[:, 0], zeros[:, 1], s=70, facecolors="white", edgecolors="black", linewidths=1.5, zorder=5,
               label="target 0")


def draw_line(ax, w: np.ndarray, b: float, limits=LIMITS, **style) -> None:
    """The line ``w0 x0 + w1 x1 + b = 0`` across the square ``limits``; nothing if ``w = 0``."""
    w0, w1 = float(w[0]), float(w[1])
    lo, hi = limits
    if abs(w1) > 1e-9 and abs(w1) >= abs(w0) * 1e-3:
        xs = np.array([lo, hi])
        ax.plot(xs, -(w0 * xs + b) / w1, **style)
    elif abs(w0) > 1e-9:
        ax.plot([-b / w0, -b / w0], [lo, hi], **style)


def _square(ax, limits=LIMITS) -> None:
    ax.set_xlim(*limits)
    ax.set_ylim(*limits)
    ax.set_aspect("equal")
    ax.set_xlabel("$x_1$")
    ax.set_ylabel("$x_2$")


def decision_lines(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: np.ndarray, errors: np.ndarray, *,
                   title: str, shade_final: bool, first_epoch: int = 1) -> Figure:
    """The decision line after each epoch, coloured from early (dark) to late (yellow).

    Args:
      x: inputs ``[N, 2]``; y: targets ``[N]``.
      w: weights after each epoch ``[E, 2]``; b: biases ``[E]``; errors: ``[E]``.
      title: panel title.
      shade_final: shade the half-plane the last line classifies as 1.
      first_epoch: the number of the epoch in row 0 (for the colour bar).
    """
    w, b, errors = np.asarray(w), np.asarray(b), np.asarray(errors)
    epochs = len(b)
    with figure_style():
        fig, ax = new_figure(width=4.4, height=3.8)
        cmap, norm = matplotlib.colormaps["viridis"], Normalize(first_epoch, first_epoch + max(epochs, 2) - 1)
        if shade_final:
            grid = np.linspace(*LIMITS, 200)
            gx, gy = np.meshgrid(grid, grid)
            fires = (gx * w[-1, 0] + gy * w[-1, 1] + b[-1]) > 0
            ax.contourf(gx, gy, fires.astype(float), levels=[0.5, 1.5], colors=[PALETTE[0]], alpha=0.12)
        for e in range(epochs):
            last = e == epochs - 1
            draw_line(ax, w[e], b[e], color=cmap(norm(first_epoch + e)), lw=2.5 if last else 1.2,
                      alpha=1.0 if last else 0.8)
        draw_points(ax, x, y)
        _square(ax)
        ax.set_title(f"{title}\nerrors after each epoch: {' '.join(str(int(v)) for v in errors)}", fontsize=8)
        fig.colorbar(ScalarMappable(norm, cmap), ax=ax, label="epoch", shrink=0.85)
        ax.legend(loc="upper left", fontsize=7)
    return fig


def errors_per_epoch(errors: dict[str, np.ndarray], *, epochs: int) -> Figure:
    """Mean end-of-epoch errors over seeds (line) and their min-max (band), one colour per gate.

    Args:
      errors: gate name -> ``[S, E]`` errors after each epoch for S seeds.
      epochs: how many epochs to show.
    """
    with figure_style():
        fig, ax = new_figure(width=5.0, height=3.2)
        for i, (name, errs) in enumerate(errors.items()):
            errs = np.asarray(errs)[:, :epochs].astype(float)
            t = np.arange(1, errs.shape[1] + 1)
            color = PALETTE[i % len(PALETTE)]
            label = f"{name} (fewest errors in any epoch: {int(np.asarray(errors[name]).min())})"
            ax.plot(t, errs.mean(0), color=color, label=label)
            ax.fill_between(t, errs.min(0), errs.max(0), color=color, alpha=0.15, lw=0)
        ax.set_xlabel("epoch")
        ax.set_ylabel("misclassified rows (of 4)")
        ax.set_ylim(-0.1, 4.1)
        ax.set_title(f"Errors per epoch: mean, min-max band over {errs.shape[0]} seeds")
        ax.legend()
    return fig


def updates_vs_bound(updates: np.ndarray, bounds: np.ndarray) -> Figure:
    """Each data set's total updates against its Novikoff bound ``(R/gamma)^2`` (log-log)."""
    updates, bounds = np.asarray(updates, float), np.asarray(bounds, float)
    with figure_style():
        fig, ax = new_figure(width=4.2, height=3.6)
        ax.scatter(bounds, np.maximum(updates, 0.8), s=14, color=PALETTE[0], alpha=0.7, label="one data set")
        lo, hi = 0.8, max(bounds.max(), updates.max()) * 1.3
        ax.plot([lo, hi], [lo, hi], color="black", lw=1, ls="--", label="updates = bound")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(bounds.min() / 1.5, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(r"Novikoff bound $(R/\gamma)^2$")
        ax.set_ylabel("updates until zero errors")
        ax.set_title("Separable data: every run stays under the bound")
        ax.legend(loc="upper left")
    return fig
