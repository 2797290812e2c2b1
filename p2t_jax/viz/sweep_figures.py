"""A sweep's table and figure: final validation loss against each swept value, with seed bands.

Both read the plain results of a sweep (``members.json``'s labels and ``summary.json``'s
per-member ``eval`` and ``train`` dicts), so they can be redrawn from a finished run folder.
"""

from __future__ import annotations

import itertools
import math
import pathlib
import statistics

from p2t_jax.viz.style import PALETTE, new_figure, save_figure


def sweep_table(labels: list[dict], evals: list[dict], trains: list[dict]) -> str:
    """A Markdown table: one row per member, its swept values, final validation and train loss."""
    keys = list(labels[0])
    head = ["member", *keys, "validation loss", "train loss"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, (label, ev, tr) in enumerate(zip(labels, evals, trains)):
        rows.append("| " + " | ".join([str(i), *(f"{label[k]:g}" for k in keys), _fmt(ev.get("loss")),
                                      _fmt(tr.get("loss"))]) + " |")
    return "\n".join(rows) + "\n"


def _fmt(value) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"


def sweep_figure(labels: list[dict], evals: list[dict], path: str | pathlib.Path) -> pathlib.Path:
    """One panel per swept key other than ``seed``: final validation loss against its values,
    one line per combination of the other non-seed keys; the line is the mean over seeds and
    the band spans the seeds' lowest to highest. A seed-only sweep plots each seed's loss."""
    keys = [k for k in labels[0] if k != "seed"]
    losses = [ev.get("loss") for ev in evals]
    fig, axes = new_figure(1, max(1, len(keys)), width=4.8, height=3.4)
    axes = [axes] if not hasattr(axes, "__len__") else list(axes)
    if not keys:
        seeds = [label["seed"] for label in labels]
        axes[0].plot(seeds, losses, "o", color=PALETTE[0])
        axes[0].set(xlabel="seed", ylabel="final validation loss", title="seeds")
        return save_figure(fig, path)
    for ax, key in zip(axes, keys):
        others = [k for k in keys if k != key]
        xs = sorted({label[key] for label in labels})
        combos = sorted({tuple(label[k] for k in others) for label in labels})
        for colour, combo in zip(itertools.cycle(PALETTE), combos):
            means, lows, highs = [], [], []
            for x in xs:
                vals = [loss for label, loss in zip(labels, losses)
                        if label[key] == x and tuple(label[k] for k in others) == combo
                        and loss is not None and math.isfinite(loss)]
                means.append(statistics.fmean(vals) if vals else math.nan)
                lows.append(min(vals) if vals else math.nan)
                highs.append(max(vals) if vals else math.nan)
            seeds = len({label.get("seed") for label in labels})
            name = ", ".join(f"{k}={v:g}" for k, v in zip(others, combo)) or (
                f"mean of {seeds} seeds (band: lowest..highest)" if seeds > 1 else "final validation loss")
            ax.plot(xs, means, "o-", color=colour, label=name)
            ax.fill_between(xs, lows, highs, color=colour, alpha=0.2, linewidth=0)
        if all(x > 0 for x in xs) and max(xs) / min(xs) >= 10:
            ax.set_xscale("log")
        ax.set(xlabel=key, ylabel="final validation loss", title=key)
        ax.legend()
    return save_figure(fig, path)
