"""Chapters 4 and 5 figures: optimiser curves and paths, throughput, overfitting and regularisers.

Every function takes plain numbers (NumPy arrays, dicts of them) and returns a
``matplotlib.figure.Figure``; save it with :func:`p2t_jax.viz.style.save_figure`.
A "curve" below is a dict with ``epoch`` ``[E]`` and one ``[E]`` array per metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from p2t_jax.viz.style import PALETTE, figure_style, new_figure


def optimizer_curves(curves: Mapping[str, Mapping[str, np.ndarray]]) -> Figure:
    """Per optimiser: training loss and test accuracy after each epoch.

    Args:
      curves: optimiser name -> ``{"epoch", "train_loss", "test_accuracy"}``, each ``[E]``.
    """
    with figure_style():
        fig, (ax_loss, ax_acc) = new_figure(1, 2, width=4.0, height=3.0)
        for i, (name, c) in enumerate(curves.items()):
            ax_loss.plot(c["epoch"], c["train_loss"], color=PALETTE[i % len(PALETTE)], marker="o", ms=3, label=name)
            ax_acc.plot(c["epoch"], 100 * np.asarray(c["test_accuracy"]), color=PALETTE[i % len(PALETTE)],
                        marker="o", ms=3, label=name)
        ax_loss.set_yscale("log")
        ax_loss.set_title("training loss (mean over the epoch)")
        ax_acc.set_title("test accuracy after each epoch")
        ax_acc.set_ylabel("%")
        for ax in (ax_loss, ax_acc):
            ax.set_xlabel("epoch")
        ax_acc.legend(loc="lower right")
    return fig


def batch_throughput(rows: Sequence[Mapping], timelines: Mapping[str, Mapping[str, np.ndarray]]) -> Figure:
    """Full-batch vs mini-batch: updates per second, and test accuracy against wall-clock time.

    Args:
      rows: ``{"name", "updates_per_s", "examples_per_s"}`` per setting.
      timelines: setting name -> ``{"seconds": [T], "test_accuracy": [T]}`` (seconds since the
        first evaluation's step began, training time only).
    """
    with figure_style():
        fig, (ax_rate, ax_time) = new_figure(1, 2, width=4.0, height=3.0)
        names = [r["name"] for r in rows]
        rates = [r["updates_per_s"] for r in rows]
        bars = ax_rate.bar(names, rates, color=[PALETTE[i % len(PALETTE)] for i in range(len(rows))])
        for bar, r in zip(bars, rows):
            ax_rate.annotate(f"{r['updates_per_s']:,.0f} upd/s\n{r['examples_per_s']:,.0f} ex/s",
                             (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                             fontsize=7)
        ax_rate.set_yscale("log")
        ax_rate.set_ylabel("updates per second")
        ax_rate.set_title("updates per second")
        ax_rate.margins(y=0.3)
        for i, (name, t) in enumerate(timelines.items()):
            ax_time.plot(t["seconds"], 100 * np.asarray(t["test_accuracy"]), color=PALETTE[i % len(PALETTE)],
                         marker="o", ms=3, label=name)
        ax_time.set_xlabel("training seconds")
        ax_time.set_ylabel("test accuracy (%)")
        ax_time.set_title("accuracy against wall-clock time")
        ax_time.legend(loc="lower right")
    return fig


def surface_paths(xs: np.ndarray, ys: np.ndarray, values: np.ndarray, paths: Mapping[str, np.ndarray],
                  minimum: tuple[float, float], title: str) -> Figure:
    """Each optimiser's path over a 2-D loss surface.

    Args:
      xs: ``[X]``; ys: ``[Y]``; values: ``[Y, X]`` loss at ``(xs[j], ys[i])``.
      paths: optimiser name -> points ``[T, 2]``.
      minimum: the minimiser, marked with a star.
    """
    with figure_style():
        fig, ax = new_figure(width=6.0, height=4.6)
        positive = np.maximum(values, 1e-3)
        levels = np.logspace(np.log10(positive.min()), np.log10(positive.max()), 25)
        ax.contour(xs, ys, positive, levels=levels, norm=LogNorm(), cmap="Greys", linewidths=0.6)
        for i, (name, points) in enumerate(paths.items()):
            points = np.asarray(points)
            inside = (np.all(np.isfinite(points), axis=1) & (points[:, 0] >= xs[0]) & (points[:, 0] <= xs[-1])
                      & (points[:, 1] >= ys[0]) & (points[:, 1] <= ys[-1]))
            shown = points[: np.argmin(inside) if not inside.all() else len(points)]
            ax.plot(shown[:, 0], shown[:, 1], color=PALETTE[i % len(PALETTE)], lw=1.2, marker=".", ms=2,
                    ls=("-", "--", ":", "-.")[i % 4], label=name)
        ax.plot(*paths[next(iter(paths))][0], "ko", ms=5, label="start")
        ax.plot(*minimum, marker="*", color="black", ms=12, ls="none", label="minimum")
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(ys[0], ys[-1])
        ax.set_xlabel("$x$")
        ax.set_ylabel("$y$")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=7, ncols=2)
    return fig


def train_test_curves(curves: Mapping[str, Mapping[str, np.ndarray]], ncols: int = 4) -> Figure:
    """One panel per run: training and test accuracy per epoch, and the gap at the end.

    Args:
      curves: run name -> ``{"epoch", "train_accuracy", "test_accuracy"}``; the training
        accuracy is the running mean over the epoch's batches (dropout on, as trained). An
        optional ``"gap"`` (points) is the gap the title states (e.g. the one measured in
        evaluation mode, as a page shows beside the figure); without it, the curves' last gap.

    The y-axis spans 85-100 % unless a curve goes lower (a short run): then it starts just
    below the lowest point.
    """
    names = list(curves)
    lowest = min((100 * float(np.min(curves[n][k])) for n in names for k in ("train_accuracy", "test_accuracy")
                  if np.size(curves[n][k])), default=85.0)
    bottom = 85.0 if lowest >= 85.0 else max(0.0, 5.0 * np.floor((lowest - 2.0) / 5.0))
    nrows = (len(names) + ncols - 1) // ncols
    with figure_style():
        fig, axes = new_figure(nrows, ncols, width=2.6, height=2.3)
        axes = np.atleast_1d(axes).reshape(-1)
        for ax, name in zip(axes, names):
            c = curves[name]
            train, test = 100 * np.asarray(c["train_accuracy"]), 100 * np.asarray(c["test_accuracy"])
            ax.plot(c["epoch"], train, color=PALETTE[0], label="train")
            ax.plot(c["epoch"], test, color=PALETTE[1], label=c.get("eval_name", "test"))
            shown_gap = f"gap {c['gap']:.2f}" if "gap" in c else f"last gap {train[-1] - test[-1]:.1f}"
            ax.set_title(f"{name}\n{shown_gap} points", fontsize=8)
            ax.set_xlabel("epoch")
            ax.set_ylim(bottom, 100.5)
        for ax in axes[len(names):]:
            ax.set_visible(False)
        axes[0].set_ylabel("accuracy (%)")
        axes[0].legend(loc="lower right")
    return fig


def weight_histograms(histograms: Mapping[str, Mapping]) -> Figure:
    """Histograms of first-layer weights, one line per run (log counts).

    Args:
      histograms: run name -> ``{"edges": [N + 1], "counts": [N], "std": float}`` (values
        beyond the edges counted in the end bins).
    """
    with figure_style():
        fig, ax = new_figure(width=5.5, height=3.4)
        for i, (name, h) in enumerate(histograms.items()):
            ax.stairs(np.asarray(h["counts"]), np.asarray(h["edges"]),
                      color=PALETTE[i % len(PALETTE)], lw=1.2, label=f"{name} (std {h['std']:.3f})")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.8)
        ax.set_xlabel("first-layer weight (end bins hold everything beyond)")
        ax.set_ylabel("count")
        ax.set_title("first-layer weights after training")
        ax.legend(loc="upper right", fontsize=7)
    return fig


def early_stopping(epoch: np.ndarray, validation_loss: np.ndarray, best_epoch: int, stop_epoch: int | None,
                   reference: Mapping[str, np.ndarray] | None = None) -> Figure:
    """Validation loss per epoch, the best epoch (the checkpoint kept) and the stop.

    Args:
      epoch, validation_loss: ``[E]`` of the early-stopped run.
      reference: optional ``{"epoch", "test_loss"}`` of the unregularised run trained to the end.
    """
    with figure_style():
        fig, ax = new_figure(width=5.0, height=3.2)
        if reference is not None:
            ax.plot(reference["epoch"], reference["test_loss"], color="0.6", label="baseline, test loss (no stop)")
        ax.plot(epoch, validation_loss, color=PALETTE[0], marker="o", ms=3, label="validation loss")
        ax.axvline(best_epoch, color=PALETTE[2], ls="--", label=f"best (epoch {best_epoch:g}): checkpoint kept")
        if stop_epoch is not None:
            ax.axvline(stop_epoch, color=PALETTE[1], ls=":", label=f"stopped (epoch {stop_epoch:g})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy")
        ax.set_title("early stopping on a validation split")
        ax.legend(loc="upper right", fontsize=7)
    return fig
