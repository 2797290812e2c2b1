"""Chapter 3 figures: loss curves per learning rate, success by architecture, gradient sizes per layer."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from p2t_jax.viz.style import PALETTE, figure_style, new_figure


def _steps(num_steps: int, points: int) -> np.ndarray:
    """Up to ``points`` step indices spread evenly on a log scale over ``[0, num_steps)``."""
    return np.unique(np.geomspace(1, num_steps, min(points, num_steps)).astype(int)) - 1


def loss_by_lr(losses: dict[float, np.ndarray], rise: dict[float, float], *, points: int,
               band: tuple[float, float], architecture: str = "2-4-1") -> Figure:
    """Median loss over seeds per learning rate, with a quantile band (log scale).

    Args:
      losses: learning rate -> ``[S, T]`` loss per seed and step.
      rise: learning rate -> median share of steps that raised the loss (for the legend).
      points: steps drawn per curve.
      band: lower and upper quantile of the band.
      architecture: the network's name for the title.
    """
    with figure_style():
        fig, ax = new_figure(width=6.0, height=3.6)
        for i, (lr, values) in enumerate(losses.items()):
            values = np.asarray(values, float)
            t = _steps(values.shape[1], points)
            v = np.where(np.isfinite(values[:, t]), values[:, t], np.nan)
            color = PALETTE[i % len(PALETTE)]
            ax.plot(t + 1, np.nanmedian(v, 0), color=color, label=f"lr {lr:g}: {rise[lr]:.1%} of steps rise")
            ax.fill_between(t + 1, np.nanquantile(v, band[0], 0), np.nanquantile(v, band[1], 0), color=color,
                            alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"{architecture} on XOR: median loss over {values.shape[0]} seeds, "
                     f"{band[0]:.0%}-{band[1]:.0%} band")
        ax.legend(fontsize=7, loc="lower left")
    return fig


def success_by_arch(final_accuracy: dict[str, np.ndarray]) -> Figure:
    """Stacked bars: the share of seeds ending at each accuracy, per architecture.

    Args:
      final_accuracy: architecture name -> ``[S]`` final accuracy per seed (multiples of 1/4).
    """
    levels = (1.0, 0.75, 0.5, 0.25, 0.0)
    colors = (PALETTE[2], PALETTE[4], PALETTE[1], PALETTE[3], "0.4")
    with figure_style():
        fig, ax = new_figure(width=4.4, height=3.4)
        names = list(final_accuracy)
        for j, name in enumerate(names):
            acc = np.asarray(final_accuracy[name])
            bottom = 0.0
            for level, color in zip(levels, colors):
                share = float(np.mean(np.isclose(acc, level)))
                if share == 0:
                    continue
                ax.bar(j, share, bottom=bottom, color=color, width=0.6, label=f"{level:.0%} accuracy")
                count = int(np.sum(np.isclose(acc, level)))
                if share >= 0.06:
                    ax.text(j, bottom + share / 2, f"{share:.1%}\n({count})", ha="center", va="center", fontsize=8)
                else:
                    ax.annotate(f"{count} at {level:.0%}", (j + 0.3, bottom + share / 2), xytext=(j + 0.36, bottom),
                                fontsize=7, va="center", arrowprops={"arrowstyle": "-", "lw": 0.6})
                bottom += share
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_xticks(range(len(names)), [f"{n}\n{int(np.sum(np.asarray(final_accuracy[n]) == 1.0))}/"
                                          f"{len(final_accuracy[n])} solved" for n in names])
        ax.set_ylim(0, 1)
        ax.set_ylabel("share of seeds")
        ax.set_title(f"Final XOR accuracy over {len(acc)} seeds")
    return fig


def grad_norms(panels: dict[str, dict[str, np.ndarray]], *, points: int) -> Figure:
    """Per-layer gradient size over training: one panel per group of runs, median and 10-90% band.

    Series whose label contains "stuck" are dashed.

    Args:
      panels: panel title -> {series label -> ``[S, T]`` gradient norms}.
      points: steps drawn per curve.
    """
    with figure_style():
        fig, axes = new_figure(1, len(panels), width=4.0, height=3.2)
        axes = np.atleast_1d(axes)
        for ax, (title, series) in zip(axes, panels.items()):
            for i, (label, values) in enumerate(series.items()):
                values = np.asarray(values, float)
                if values.shape[0] == 0:
                    continue
                t = _steps(values.shape[1], points)
                v = values[:, t]
                color = PALETTE[i % len(PALETTE)]
                ax.plot(t + 1, np.median(v, 0), color=color, ls="--" if "stuck" in label else "-",
                        label=f"{label} ({values.shape[0]} seeds)")
                ax.fill_between(t + 1, np.quantile(v, 0.1, 0), np.quantile(v, 0.9, 0), color=color, alpha=0.1,
                                lw=0)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.set_title(title)
            ax.legend(fontsize=7, loc="lower left")
        axes[0].set_ylabel("|dL/dW| per layer")
    return fig
