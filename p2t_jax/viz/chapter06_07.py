"""Chapters 6 and 7 figures: filters, feature maps, accuracy vs parameters; per-layer gradient
norms, pre-activation statistics and loss by depth.

Every function takes plain numbers (NumPy arrays, dicts of them) and returns a
``matplotlib.figure.Figure``; save it with :func:`p2t_jax.viz.style.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from p2t_jax.viz.style import PALETTE, figure_style, new_figure


def conv_filters(kernel_HWIF: np.ndarray, title: str, ncols: int = 8) -> Figure:
    """Each output channel's kernel as a small image (input channel 0; RGB when there are 3).

    Args:
      kernel_HWIF: ``[kh, kw, C_in, F]``. Each filter is drawn on its own symmetric colour
        scale (blue negative, red positive), since what matters is its pattern.
    """
    k = np.asarray(kernel_HWIF)
    F = k.shape[-1]
    nrows = (F + ncols - 1) // ncols
    with figure_style():
        fig, axes = new_figure(nrows, ncols, width=0.9, height=0.95)
        axes = np.atleast_1d(axes).reshape(-1)
        for f, ax in enumerate(axes):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if f >= F:
                ax.set_visible(False)
                continue
            if k.shape[2] == 3:
                w = k[..., f]
                ax.imshow((w - w.min()) / (np.ptp(w) + 1e-12), interpolation="nearest")
            else:
                w = k[:, :, 0, f]
                m = np.abs(w).max() + 1e-12
                ax.imshow(w, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
            ax.set_title(str(f), fontsize=6, pad=1)
        fig.suptitle(title, fontsize=9)
    return fig


def feature_maps(image_HWC: np.ndarray, maps: Mapping[str, np.ndarray], label: str, per_layer: int = 8) -> Figure:
    """One digit and its feature maps layer by layer: a row per sown map, ``per_layer`` channels each.

    Args:
      image_HWC: the input ``[H, W, C]``.
      maps: layer name -> ``[h, w, F]`` (e.g. ``relu_0``: the first conv after its ReLU, ``pool_0``, ...).
      label: the digit's label, for the title.
    """
    names = list(maps)
    with figure_style():
        fig, axes = new_figure(len(names) + 1, per_layer, width=1.0, height=1.05)
        for ax in axes.reshape(-1):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            ax.set_frame_on(False)
        axes[0, 0].imshow(np.asarray(image_HWC)[..., 0] if image_HWC.shape[-1] == 1 else image_HWC, cmap="gray_r")
        axes[0, 0].set_title(f"input (label {label})", fontsize=7)
        for ax in axes[0, 1:]:
            ax.set_visible(False)
        for row, name in enumerate(names, start=1):
            m = np.asarray(maps[name])
            for c in range(per_layer):
                ax = axes[row, c]
                if c >= m.shape[-1]:
                    ax.set_visible(False)
                    continue
                ax.imshow(m[..., c], cmap="viridis", interpolation="nearest")
                ax.set_title(f"{name} [{c}] {m.shape[0]}x{m.shape[1]}" if c == 0 else f"[{c}]", fontsize=6, pad=1)
        fig.suptitle(f"feature maps of one test digit, layer by layer (first {per_layer} channels of each)",
                     fontsize=9)
    return fig


def accuracy_vs_parameters(families: Mapping[str, Sequence[Mapping]]) -> Figure:
    """Test accuracy against parameter count, one line per family (error bars: std over seeds).

    Args:
      families: family name -> points ``{"parameters", "mean", "std", "label", "first_layer_weights"}``.
    """
    with figure_style():
        fig, ax = new_figure(width=5.6, height=3.6)
        for i, (name, points) in enumerate(families.items()):
            points = sorted(points, key=lambda p: p["parameters"])
            x = [p["parameters"] for p in points]
            y = [100 * p["mean"] for p in points]
            err = [100 * p["std"] for p in points]
            ax.errorbar(x, y, yerr=err, color=PALETTE[i % len(PALETTE)], marker="o", ms=4, capsize=3, label=name)
            for p, xi, yi in zip(points, x, y):
                ax.annotate(f"{p['label']}\n1st layer {p['first_layer_weights']:,}", (xi, yi), fontsize=6,
                            textcoords="offset points", xytext=(4, -14))
        ax.set_xscale("log")
        ax.margins(x=0.2)
        ax.set_xlabel("parameters")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("same digits, same training budget: accuracy vs parameters")
        ax.legend(loc="lower right")
    return fig


def layer_grad_norms(panels: Mapping[str, Mapping[str, np.ndarray]]) -> Figure:
    """Per-layer gradient norms (log scale), one panel per setting, one line per net and time.

    Args:
      panels: panel title -> series name -> ``[L]`` gradient norm of each layer's kernel,
        layer 1 first. Names ending in ``"at init"`` are drawn dashed.
    """
    with figure_style():
        fig, axes = new_figure(1, len(panels), width=4.2, height=3.2)
        axes = np.atleast_1d(axes)
        for ax, (title, series) in zip(axes, panels.items()):
            colours: dict[str, str] = {}
            for name, norms in series.items():
                net = name.rsplit(",", 1)[0]
                colours.setdefault(net, PALETTE[len(colours) % len(PALETTE)])
                norms = np.asarray(norms)
                ax.plot(np.arange(1, len(norms) + 1), norms, color=colours[net],
                        ls="--" if name.endswith("at init") else "-", marker=".", ms=3, label=name)
            ax.set_yscale("log")
            ax.set_xlabel("layer")
            ax.set_title(title)
            ax.legend(fontsize=6, loc="best")
        axes[0].set_ylabel("|| dL / d kernel ||")
    return fig


def preactivation_stats(panels: Mapping[str, Mapping[str, np.ndarray]], steps: np.ndarray,
                        band: tuple[float, float] | None = None) -> Figure:
    """Mean (top row) and std (bottom row) of each layer's ReLU input, one column per net, one line
    per logged step (dark: early, light: late).

    Args:
      panels: column title -> ``{"mean": [T, L], "std": [T, L]}``.
      steps: ``[T]`` the step of each row (0: the initial parameters).
      band: the std range drawn as a shaded band, if any.
    """
    cmap = colormaps["viridis"]
    with figure_style():
        fig, axes = new_figure(2, len(panels), width=3.6, height=2.7)
        axes = np.asarray(axes).reshape(2, len(panels))
        for col, (title, stats) in enumerate(panels.items()):
            for row, key in enumerate(("mean", "std")):
                ax = axes[row, col]
                values = np.asarray(stats[key])
                for t in range(values.shape[0]):
                    ax.plot(np.arange(1, values.shape[1] + 1), values[t], color=cmap(t / max(1, len(steps) - 1)),
                            lw=1.0, label=f"step {int(steps[t])}" if t in (0, len(steps) // 2, len(steps) - 1) else None)
                if key == "std":
                    ax.set_yscale("log")
                    if band is not None:
                        ax.axhspan(*band, color="0.85", zorder=0)
                else:
                    ax.axhline(0.0, color="0.6", lw=0.8, zorder=0)
                ax.set_xlabel("layer")
                ax.set_title(f"{title}: {key}", fontsize=9)
            axes[0, col].legend(fontsize=6, loc="best")
        axes[0, 0].set_ylabel("mean of the ReLU input")
        axes[1, 0].set_ylabel("std of the ReLU input")
    return fig


def loss_by_depth(panels: Mapping[str, Mapping[int, Mapping[str, np.ndarray]]]) -> Figure:
    """Training loss against step, one panel per net, one line per depth.

    Args:
      panels: panel title -> depth -> ``{"step": [T], "loss": [T]}``.
    """
    ncols = 2
    nrows = (len(panels) + ncols - 1) // ncols
    with figure_style():
        fig, axes = new_figure(nrows, ncols, width=3.8, height=2.8)
        axes = np.atleast_1d(axes).reshape(-1)
        for ax, (title, curves) in zip(axes, panels.items()):
            for i, (depth, c) in enumerate(sorted(curves.items())):
                ax.plot(c["step"], c["loss"], color=PALETTE[i % len(PALETTE)], label=f"depth {depth}")
            ax.set_yscale("log")
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        axes[0].set_ylabel("training loss (interval mean)")
        if nrows > 1:
            axes[ncols].set_ylabel("training loss (interval mean)")
    return fig


def layer_profiles(panels: Mapping[str, Mapping[str, np.ndarray]], *, log: Sequence[str] = (),
                   bands: Mapping[str, tuple[float, float]] | None = None, title: str | None = None) -> Figure:
    """Values by layer, one panel per quantity, one line per net (the playground's chapter 7 page).

    Args:
      panels: panel title -> net -> ``[L]`` (one value per layer, layer 1 first) or ``[S, L]``
        (one row per seed: the mean is drawn, the range over the seeds shaded).
      log: titles of the panels drawn on a log scale.
      bands: panel title -> a ``(low, high)`` range drawn as a grey band.
      title: the figure's title.
    """
    bands = bands or {}
    with figure_style():
        fig, axes = new_figure(1, len(panels), width=3.9, height=3.0)
        axes = np.atleast_1d(axes)
        for ax, (name, series) in zip(axes, panels.items()):
            for i, (net, values) in enumerate(series.items()):
                values = np.atleast_2d(np.asarray(values, np.float64))
                layers = np.arange(1, values.shape[1] + 1)
                colour = PALETTE[i % len(PALETTE)]
                ax.plot(layers, values.mean(0), color=colour, marker=".", ms=3, label=net)
                if values.shape[0] > 1:
                    ax.fill_between(layers, values.min(0), values.max(0), color=colour, alpha=0.15, lw=0)
            if name in bands:
                ax.axhspan(*bands[name], color="0.88", zorder=0)
            if name in log:
                ax.set_yscale("log")
            ax.set_xlabel("layer")
            ax.set_title(name, fontsize=9)
        axes[0].legend(fontsize=7, loc="best")
        if title:
            fig.suptitle(title, fontsize=10)
    return fig
