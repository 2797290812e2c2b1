"""Chapters 8 and 9 figures: memory by filler count, gradients by distance, attention maps and saturation.

Every function takes plain numbers and returns a ``matplotlib.figure.Figure``; save it
with :func:`p2t_jax.viz.style.save_figure`. ``[N, S]`` arrays hold one value per point and seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
        ax.set_title(f"Who was the subject? Trained on {train_range[0]}-{train_range[1]} fillers; band: min-max over seeds")
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


def attention_heatmaps(panels: Sequence[Mapping]) -> Figure:
    """One heat map per sentence: the decoder's attention over the source words at every output word.

    Args:
      panels: each ``{"source": [S] words, "output": [T] words, "weights": [T, S], "title": str}``.
    """
    with figure_style():
        widths = [max(len(p["source"]), 3) for p in panels]
        fig, axes = new_figure(1, len(panels), width=max(widths) * 0.42 + 1.2, height=max(widths) * 0.42 + 1.4)
        axes = np.atleast_1d(axes)
        for ax, p in zip(axes, panels):
            w = np.asarray(p["weights"], float)
            image = ax.imshow(w, cmap="Blues", vmin=0, vmax=1, aspect="equal")
            ax.set_xticks(range(len(p["source"])), p["source"], rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(p["output"])), p["output"], fontsize=7)
            ax.grid(False)
            ax.set_xlabel("source (verb-final)")
            ax.set_title(p.get("title", ""), fontsize=8)
        axes[0].set_ylabel("output (verb-second)")
        fig.colorbar(image, ax=list(axes), shrink=0.6, label="attention weight")
    return fig


def exact_match_by_length(lengths: Sequence[int], curves: Mapping[str, np.ndarray]) -> Figure:
    """Exact-match accuracy on held-out sentences against their length: the mean over seeds, min-max band.

    Args:
      lengths: ``[N]`` sentence lengths in words.
      curves: model name -> ``[N, S]`` exact match per length and seed.
    """
    with figure_style():
        fig, ax = new_figure(width=5.2, height=3.4)
        for i, (name, values) in enumerate(curves.items()):
            values = np.asarray(values, float)
            color = PALETTE[i % len(PALETTE)]
            ax.plot(lengths, 100 * values.mean(1), color=color, marker="o", ms=3,
                    label=f"{name} ({values.shape[1]} seeds)")
            ax.fill_between(lengths, 100 * values.min(1), 100 * values.max(1), color=color, alpha=0.15, lw=0)
        ax.set_ylim(0, 102)
        ax.set_xlabel("sentence length (words)")
        ax.set_ylabel("exact match, held-out sentences (%)")
        ax.set_title("Greedy translations, word for word right")
        ax.legend(loc="lower left")
    return fig


def softmax_saturation(result: Mapping[str, np.ndarray], num_keys: int) -> Figure:
    """Max weight and entropy of ``softmax(q . k)`` for random queries and keys against their width d.

    Args:
      result: :func:`p2t_jax.chapters.reordering.softmax_saturation`'s output.
      num_keys: the keys per query (the entropy's ceiling is ``log(num_keys)``).
    """
    with figure_style():
        fig, (ax_max, ax_ent) = new_figure(1, 2, width=3.8, height=3.2)
        d = np.asarray(result["dims"])
        for i, (name, label) in enumerate((("scaled", "q.k / sqrt(d)"), ("unscaled", "q.k"))):
            color = PALETTE[i]
            ax_max.plot(d, result[f"max_weight_{name}"], color=color, marker="o", ms=3, label=label)
            ax_ent.plot(d, result[f"entropy_{name}"], color=color, marker="o", ms=3, label=label)
        ax_max.axhline(1 / num_keys, color="0.5", ls=":", lw=1, label=f"uniform (1/{num_keys})")
        ax_ent.axhline(np.log(num_keys), color="0.5", ls=":", lw=1, label=f"uniform (log {num_keys})")
        for ax in (ax_max, ax_ent):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("query/key width d")
        ax_max.set_ylabel("largest weight (mean over queries)")
        ax_ent.set_ylabel("entropy of the weights (nats)")
        ax_max.set_title(f"softmax over {num_keys} random keys")
        ax_ent.set_title("with 1/sqrt(d) it stays spread")
        ax_max.legend(fontsize=7, loc="center left")
    return fig
