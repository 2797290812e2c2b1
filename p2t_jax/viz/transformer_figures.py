"""Chapter 10 figures: a Transformer's attention weights over a text, head by head."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from p2t_jax.viz.style import figure_style, new_figure

SHOWN = {"\n": "⏎", " ": "␣"}  # characters that would be invisible as tick labels


def attention_heads(weights_HTT: np.ndarray, chars: Sequence[str], title: str, ncols: int = 2) -> Figure:
    """One panel per head of one layer: how much each character (row) attends to each earlier one (column).

    Args:
      weights_HTT: ``[H, T, T]`` attention probabilities (row t sums to 1 over columns s <= t).
      chars: the T characters of the text, for the tick labels.
      title: the figure's title.
      ncols: panels per row.
    """
    weights = np.asarray(weights_HTT)
    H, T = weights.shape[0], weights.shape[1]
    labels = [SHOWN.get(c, c) for c in chars]
    nrows = (H + ncols - 1) // ncols
    side = min(6.0, max(2.6, 0.13 * T + 1.0))
    with figure_style():
        fig, axes = new_figure(nrows, min(ncols, H), width=side, height=side)
        axes = np.atleast_1d(axes).reshape(-1)
        for h, ax in enumerate(axes):
            if h >= H:
                ax.set_visible(False)
                continue
            image = ax.imshow(np.where(np.tril(np.ones((T, T), bool)), weights[h], np.nan), cmap="magma_r",
                              vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.grid(False)
            ax.set_xticks(range(T), labels, fontsize=6, fontfamily="monospace")
            ax.set_yticks(range(T), labels, fontsize=6, fontfamily="monospace")
            ax.set_title(f"head {h}", fontsize=8)
            ax.set_xlabel("attends to (key)")
            ax.set_ylabel("character (query)")
        fig.colorbar(image, ax=list(axes[:H]), label="attention weight", shrink=0.8)
        fig.suptitle(title, fontsize=9)
    return fig
