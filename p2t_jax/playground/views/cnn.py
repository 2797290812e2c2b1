"""Chapter 6: what a trained CNN's filters and feature maps look like, for a digit you choose.

Restores a CNN run of ``experiments/06_cnn.py`` the way the experiment does
(:func:`p2t_jax.tasks.image_classification.build_with_batches` and
:func:`p2t_jax.training.loop.restore_state`), and draws
:func:`p2t_jax.chapters.convolution.logits_and_maps` (compiled once per run) with the chapter's figures.
"""

from __future__ import annotations

import pathlib

import jax
import ml_collections
import numpy as np
import streamlit as st

from p2t_jax.chapters import convolution
from p2t_jax.data import image_datasets
from p2t_jax.playground import ui
from p2t_jax.tasks import image_classification as ic
from p2t_jax.tasks import image_models
from p2t_jax.training.loop import restore_state
from p2t_jax.viz import chapter06_07 as figures

TITLE = "6 · CNN"
ICON = ":material/grid_on:"
URL = "cnn"

EXPERIMENT = "python experiments/06_cnn.py --workdir {folder}"


def cnn_runs(folder: pathlib.Path) -> dict[str, dict]:
    """The CNN runs (``model.name == "cnn"``) among the run folders in ``folder``, by name."""
    return {name: r for name, r in ui.read_results(folder).items() if r["config"]["model"].get("name") == "cnn"}


@st.cache_resource(show_spinner=False, max_entries=4)
def load_cnn(run_dir: str, stamp: float) -> dict:
    """The run's model, parameters and test images, restored as the chapter's experiment does."""
    result = ui.read_results(pathlib.Path(run_dir).parent, (pathlib.Path(run_dir).name,))
    config = ml_collections.ConfigDict(result[pathlib.Path(run_dir).name]["config"])
    d = config.data
    splits, source = image_datasets.load_splits(d.source, d.name, d.tfds_data_dir or None)
    task, batches, resolved = ic.build_with_batches(config, splits=splits, source=source)
    state, _ = restore_state(task.init_variables, resolved, run_dir)
    return {"config": resolved, "model": ic.make_model(resolved), "params": jax.device_get(state.params),
            "test": batches.splits["test"], "step": int(state.step),
            "older": ui.newer_unreadable(run_dir, int(state.step))}


def render(settings: ui.Settings) -> None:
    controls, plots = ui.layout(
        "Convolutions: filters and feature maps",
        "A CNN trained by the chapter on the same digits as the MLP. Its first layer holds a few hundred "
        "weights (a 3x3 kernel per channel, shared across the image); choose a test digit and see what each "
        "layer of the trained network computes from it.")
    with controls:
        folder = ui.folder_input("Run folder of experiments/06_cnn.py", settings.runs_dir / "06_cnn", key="cnn_folder")
        runs = cnn_runs(folder)
        if not runs:
            ui.missing(f"`{folder}` holds no CNN runs (`<run>/result.json` with model.name cnn).",
                       EXPERIMENT.format(folder=folder))
            return
        name = st.selectbox("Run", tuple(runs), key="cnn_run")
        run_dir = folder / name
        with st.spinner(f"Restoring {run_dir} ..."):
            run = load_cnn(str(run_dir), (run_dir / "checkpoints").stat().st_mtime
                           if (run_dir / "checkpoints").exists() else 0.0)
        ui.warn_if_older(run)
        test = run["test"]
        index = ui.number("Test digit (index)", 0, low=0, high=len(test) - 1, integer=True, key="cnn_digit")
        per_layer = st.slider("Channels shown per layer", 4, 16, 8, key="cnn_channels")

    ui.checked()
    image = test.images[index].astype(np.float32) / 255.0
    logits, maps = convolution.logits_and_maps(run["model"], {"params": run["params"]}, image)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    with controls:
        st.metric("Predicted digit", int(probs.argmax()), f"label {int(test.labels[index])}", delta_color="off")
        st.caption(f"Probability {probs.max():.1%}; run `{name}`, step {run['step']:,}, test accuracy "
                   f"{runs[name]['test_accuracy']:.1%}.")
    kernel = np.asarray(run["params"][image_models.first_layer(run["config"])]["kernel"])
    ui.figure(figures.feature_maps(image, maps, str(int(test.labels[index])), per_layer=per_layer), plots)
    ui.figure(figures.conv_filters(kernel, f"learned first-layer filters ({kernel.shape[0]}x{kernel.shape[1]}, "
                                           f"{kernel.shape[-1]} channels)"), plots.columns([2, 1])[0])
