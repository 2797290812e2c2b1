"""Shared matplotlib helpers: figures built without pyplot, saved as PNG.

Figures are ``matplotlib.figure.Figure`` objects made directly (no pyplot, no global
state, no display needed), so they work on headless machines and in tests. Build a figure
inside ``with figure_style():`` so that its axes and text get the shared look; call
:func:`use_agg` first if code elsewhere in the process is going to import pyplot.
"""

from __future__ import annotations

import os
import pathlib

import matplotlib
from matplotlib.figure import Figure

# A colour per series, in order (colour-blind-friendly, after Okabe & Ito).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")

# Defaults applied to every figure made by new_figure.
RC = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.5,
}


def figure_style():
    """A context in which figures get :data:`RC`; build a whole figure inside it."""
    return matplotlib.rc_context(RC)


def use_agg() -> None:
    """Selects the non-interactive Agg backend (for scripts that also use pyplot)."""
    matplotlib.use("Agg")


def new_figure(nrows: int = 1, ncols: int = 1, *, width: float = 4.0, height: float = 3.2, **subplot_kw):
    """A constrained-layout figure of ``nrows x ncols`` panels, each about ``width x height`` inches.

    Returns:
      ``(fig, axes)``: ``axes`` is a single Axes for 1x1, else an array ``[nrows, ncols]``
      squeezed like ``plt.subplots``.
    """
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=True, subplot_kw=subplot_kw or None)
    return fig, axes


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 100) -> pathlib.Path:
    """Writes ``fig`` as a PNG at ``path`` (folders created; an old file is replaced only when done).

    Returns:
      The path written.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with matplotlib.rc_context(RC):
        fig.savefig(tmp, format="png", dpi=dpi)
    tmp.replace(path)
    return path
