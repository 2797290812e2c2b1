"""Chapter 4: the optimisers race across a 2-D loss surface; their MNIST curves from a saved run.

Calls :func:`p2t_jax.chapters.optimisers.make_trajectory` (each hand-written optimiser of
:mod:`p2t_jax.optim.scratch` compiled once, the learning rate traced), the surfaces of
:data:`~p2t_jax.chapters.optimisers.SURFACES`, and reads the run folders that
``experiments/04_optimisers.py`` writes.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from p2t_jax.chapters import optimisers as surfaces
from p2t_jax.configuration import load_config
from p2t_jax.optim import scratch
from p2t_jax.playground import ui
from p2t_jax.viz import chapter04_05 as figures

TITLE = "4 · Optimisers"
ICON = ":material/trending_down:"
URL = "optimisers"

STEP_CHOICES = (100, 500, 2000)  # static path lengths: one compilation per optimiser each
CONFIG = "configs/mnist_optimizers.py"  # the experiment's config: surface learning rates and decay
EXPERIMENT = "python experiments/04_optimisers.py --workdir {folder}"


def optimiser_runs(folder) -> dict[str, dict]:
    """The finished runs the experiment trains one per optimiser (``<optimiser>/result.json``)."""
    return ui.read_results(folder, tuple(scratch.OPTIMIZERS))


@st.cache_resource(show_spinner=False)
def experiment_config():
    """The chapter's experiment settings (surface learning rates, decoupled decay, steps)."""
    return load_config(CONFIG).experiment


@st.cache_resource(show_spinner=False)
def path_fn(name: str, surface: str, num_steps: int, weight_decay: float):
    """One optimiser's compiled path (cached across reruns: a new learning rate does not recompile)."""
    return surfaces.make_trajectory(name, surface, num_steps, weight_decay)


@st.cache_data(show_spinner=False)
def surface_grid(surface: str, size: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xs [X], ys [Y], values [Y, X])`` of the surface over its window (NumPy)."""
    fn = surfaces.SURFACES[surface][0]
    (x0, x1), (y0, y1) = surfaces.WINDOWS[surface]
    xs, ys = np.linspace(x0, x1, size), np.linspace(y0, y1, size)
    return xs, ys, np.asarray(fn(np.stack(np.meshgrid(xs, ys), axis=-1)))


def render(settings: ui.Settings) -> None:
    e = experiment_config()
    controls, plots = ui.layout(
        "Optimisers: a race across a loss surface",
        "The seven optimisers of `p2t_jax/optim/scratch.py`, each an `optax.GradientTransformation` "
        "written by hand, start from the same point. Rosenbrock's curved valley punishes plain SGD; "
        "the quadratic punishes any step above 2 / curvature. Each path is one compiled `lax.scan` "
        "(`optimisers.make_trajectory`); a new learning rate reuses it.")
    with controls:
        surface = st.selectbox("Surface", tuple(surfaces.SURFACES), key="opt_surface")
        names = st.multiselect("Optimisers", tuple(scratch.OPTIMIZERS), default=tuple(scratch.OPTIMIZERS),
                               key="opt_names", wrap=True)  # every chosen one shown, not 2 of 7
        num_steps = st.select_slider("Steps", STEP_CHOICES, value=int(e.surface_steps)
                                     if e.surface_steps in STEP_CHOICES else STEP_CHOICES[1], key="opt_steps")
        shown = st.slider("Race: steps shown", 0, num_steps, num_steps, key=f"opt_shown_{num_steps}")
        with st.expander("Learning rates", expanded=False):
            rates = {name: ui.number(name, float(e.surface_learning_rates[name]), low=0.0, high=100.0,
                                     low_inclusive=False, key=f"opt_lr_{name}") for name in names}
    with ui.errors_shown_here(plots):  # a bad rate leaves the MNIST section below as it is
        ui.checked()
        if not names:
            raise ui.InputError("Pick at least one optimiser.")

        paths, rows = {}, []
        fn, start, minimum = surfaces.SURFACES[surface]
        for name in names:
            points, losses = path_fn(name, surface, num_steps, float(e.decoupled_weight_decay))(rates[name])
            points, losses = np.asarray(points), np.asarray(losses)
            paths[f"{name} (lr {rates[name]:g}): loss {losses[shown]:.2g}"] = points[:shown + 1]
            rows.append({"optimiser": name, "learning rate": rates[name], f"loss at step {shown}": float(losses[shown]),
                         "distance to the minimum": float(np.linalg.norm(points[shown] - np.asarray(minimum)))})
        xs, ys, values = surface_grid(surface)
        ui.figure(figures.surface_paths(xs, ys, values, paths, minimum,
                                        title=f"{surface}: step {shown} of {num_steps} from {start}"), plots)
        plots.dataframe(rows, hide_index=True)

    st.header("On MNIST: the same optimisers training one MLP")
    folder = ui.folder_input("Run folder of experiments/04_optimisers.py", settings.runs_dir / "04_optimisers",
                             key="opt_folder")
    results = optimiser_runs(folder)
    if not results:
        ui.missing(f"`{folder}` holds no optimiser runs (`<optimiser>/result.json`).",
                   EXPERIMENT.format(folder=folder))
        return
    curves, table = {}, []
    for name, r in results.items():
        c = r["curves"]
        curves[name] = {"epoch": np.asarray(c["eval_epoch"]), "test_accuracy": np.asarray(c["eval_accuracy"]),
                        "train_loss": np.asarray(c["train_loss"])}
        epoch1 = c["eval_accuracy"][c["eval_epoch"].index(1.0)] if 1.0 in c["eval_epoch"] else float("nan")
        table.append({"optimiser": name, "learning rate": r["config"]["optim"]["learning_rate"],
                      "test acc. after epoch 1 (%)": round(100 * epoch1, 1), "epochs": r["epochs"],
                      "final test acc. (%)": round(100 * r["test_accuracy"], 1),
                      "final train acc. (%)": round(100 * r["splits"]["train"]["accuracy"], 1)})
    left, _ = st.columns([3, 1])
    ui.figure(figures.optimizer_curves(curves), left)
    left.dataframe(table, hide_index=True)
    left.caption(f"Read from `{folder}`: {r['data_source']}, batch {r['batch_size']}.")
