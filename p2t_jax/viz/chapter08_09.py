"""Chapters 8 and 9 figures: memory by filler count, gradients by distance, attention maps and saturation.

Every function takes plain numbers and returns a ``matplotlib.figure.Figure``; save it
with :func:`p2t_jax.viz.style.save_figure`. ``[N, S]`` arrays hold one value per point and seed.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from p2t_jax.viz.style import PALETTE, figure_style, new_figure


def accuracy_by_fillers(fillers: Sequence[int], accuracy: Mapping[str, np.ndarray], *, train_range: tuple[int, int],
                        chance: float) -> Figure:
    """Accuracy against the number of fillers per cell: the mean over seeds and a min-max band.

    Args:
      fillers: ``[N]`` filler counts.
      accuracy: cell name -> ``[N, S]`` accuracy per filler count and seed.
      train_range: the filler counts seen in training (shaded).
      chance: the accuracy of guessing (dashed).
    """
    with figure_style():
        fig, ax = new_figure(width=6.0, height=3.6)
        ax.axvspan(train_range[0], train_range[1], color="0.9", lw=0, label="trained range")
        for i, (name, values) in enumerate(accuracy.items()):
            values = np.asarray(values, float)
            color = PALETTE[i % len(PALETTE)]
            ax.plot(fillers, 100 * values.mean(1), color=color, marker="o", ms=2.5,
                    label=f"{name} (mean of {values.shape[1]} seeds)")
            ax.fill_between(fillers, 100 * values.min(1), 100 * values.max(1), color=color, alpha=0.15, lw=0)
        ax.axhline(100 * chance, color="0.3", ls="--", lw=1, label=f"chance ({chance:.0%})")
        ax.axhline(50, color="0.6", ls=":", lw=1)
        ax.set_ylim(0, 102)
        ax.set_xlabel("filler words between the subject and the verb")
        ax.set_ylabel("accuracy (%)")
        ax.set_title("Who was the subject? Trained on 2-5 fillers; band: min-max over seeds")
        ax.legend(fontsize=7, loc="lower left")
    return fig


def gradient_by_distance(distance: np.ndarray, panels: Mapping[str, Mapping[str, np.ndarray]],
                         slopes: Mapping[str, Mapping[str, float]]) -> Figure:
    """``||dLoss/dx_0||`` against the distance from the first word, log scale, one panel per model state.

    Args:
      distance: ``[N]`` steps from the first word to the end of the sentence.
      panels: title (e.g. "trained") -> cell name -> ``[N, S]`` gradient norms.
      slopes: title -> cell name -> the median fitted slope (log10 per step), for the legend.
    """
    with figure_style():
        fig, axes = new_figure(1, len(panels), width=4.2, height=3.4)
        axes = np.atleast_1d(axes)
        for ax, (title, cells) in zip(axes, panels.items()):
            for i, (name, values) in enumerate(cells.items()):
                values = np.asarray(values, float)
                color = PALETTE[i % len(PALETTE)]
                slope = slopes[title][name]
                ax.plot(distance, np.exp(np.log(values).mean(1)), color=color, marker="o", ms=2.5,
                        label=f"{name}: x{10 ** slope:.2f} per step")
                ax.fill_between(distance, values.min(1), values.max(1), color=color, alpha=0.15, lw=0)
            ax.set_yscale("log")
            ax.set_xlabel("distance from the first word (steps)")
            ax.set_title(title)
            ax.legend(fontsize=7, loc="lower left")
        axes[0].set_ylabel("||dLoss / dx_0|| (geometric mean)")
    return fig
