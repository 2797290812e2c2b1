"""Chapter 5: dropout and weight decay against the train/test gap, from the chapter's runs.

Reads the run folders that ``experiments/05_regularisation.py`` writes (each trained by the
one loop, measured by :func:`p2t_jax.tasks.image_classification.train_or_reuse`): the
sliders pick the run with that dropout rate and decay, and its curves are drawn with the
chapter's figure beside the baseline's.
"""

from __future__ import annotations

import numpy as np
import streamlit as st

from p2t_jax.playground import ui
from p2t_jax.viz import chapter04_05 as figures

TITLE = "5 · Regularisation"
ICON = ":material/tune:"
URL = "regularisation"

EXPERIMENT = "python experiments/05_regularisation.py --workdir {folder}"


def knobs(result: dict) -> dict:
    """The regularisers a run used, from its saved config."""
    c = result["config"]
    return {"dropout": c["model"]["dropout_rate"], "weight decay": c["optim"]["weight_decay"], "l2": c["loss"]["l2"],
            "label smoothing": c["loss"]["label_smoothing"], "early stopping": c["train"]["early_stop_patience"],
            "seed": c["seed"]}


def accuracy_curves(result: dict) -> dict:
    """``{"epoch", "train_accuracy", "test_accuracy", "eval_name"}`` per evaluation, for the figure."""
    c = result["curves"]
    return {"epoch": np.asarray(c["eval_epoch"]), "train_accuracy": np.asarray(c["train_accuracy"]),
            "test_accuracy": np.asarray(c["eval_accuracy"]),
            "eval_name": "validation" if result["config"]["data"]["eval_split"] == "validation" else "test"}


def gap(result: dict) -> float:
    """Train minus test accuracy at the end, in points (evaluation mode)."""
    return 100 * (result["splits"]["train"]["accuracy"] - result["splits"]["test"]["accuracy"])


def render(settings: ui.Settings) -> None:
    st.title("Regularisation: does the train/test gap shrink?")
    st.markdown("An over-sized MLP reaches 100% training accuracy on the embedded MNIST digits while test "
                "accuracy stalls. Pick a dropout rate and a decoupled weight decay: the page shows the run the "
                "chapter trained with them, beside the baseline.")
    folder = ui.folder_input("Run folder of experiments/05_regularisation.py", settings.runs_dir / "05_regularisation",
                             key="reg_folder")
    results = ui.read_results(folder)
    if not results:
        ui.missing(f"`{folder}` holds no runs (`<run>/result.json`).", EXPERIMENT.format(folder=folder))
        return
    settings_of = {name: knobs(r) for name, r in results.items()}
    # The dropout x decay grid: runs without the other regularisers.
    plain = {n: k for n, k in settings_of.items()
             if not (k["l2"] or k["label smoothing"] or k["early stopping"])}
    if not plain:
        raise ui.InputError(f"`{folder}` holds runs, but none with only dropout and weight decay.")
    controls, plots = st.columns([1, 3], gap="large")
    with controls:
        dropout = st.select_slider("Dropout rate", sorted({k["dropout"] for k in plain.values()}), key="reg_dropout")
        decay = st.select_slider("Weight decay (decoupled, AdamW)",
                                 sorted({k["weight decay"] for k in plain.values()}), key="reg_decay")
        matching = {k["seed"]: n for n, k in plain.items() if k["dropout"] == dropout and k["weight decay"] == decay}
        if not matching:
            raise ui.InputError(f"No run in `{folder}` used dropout {dropout:g} with weight decay {decay:g}; "
                                f"the chapter trains each regulariser alone and the two together.")
        seeds = sorted(matching)
        seed = st.selectbox("Seed", seeds, key="reg_seed") if len(seeds) > 1 else seeds[0]
        name = matching[seed]
        baselines = {k["seed"]: n for n, k in plain.items() if k["dropout"] == 0 and k["weight decay"] == 0}
        baseline = baselines.get(seed, baselines[min(baselines)] if baselines else None)
        chosen = results[name]
        st.metric("Train accuracy", f"{100 * chosen['splits']['train']['accuracy']:.1f}%")
        st.metric("Test accuracy", f"{100 * chosen['splits']['test']['accuracy']:.1f}%")
        st.metric("Gap (points)", f"{gap(chosen):.2f}",
                  None if baseline is None or baseline == name else f"{gap(chosen) - gap(results[baseline]):+.2f} vs "
                                                                     "baseline", delta_color="inverse")
    # The titles state the gap the metric shows (evaluation mode), not the curves' last points.
    shown = {f"{name} (dropout {dropout:g}, decay {decay:g})": {**accuracy_curves(chosen), "gap": gap(chosen)}}
    if baseline is not None and baseline != name:
        shown[f"{baseline} (baseline)"] = {**accuracy_curves(results[baseline]), "gap": gap(results[baseline])}
    ui.figure(figures.train_test_curves(shown, ncols=2), plots)

    st.subheader(f"Every run in `{folder}`")
    st.dataframe([{"run": n, **settings_of[n], "train acc. (%)": round(100 * r["splits"]["train"]["accuracy"], 2),
                   "test acc. (%)": round(100 * r["splits"]["test"]["accuracy"], 2), "gap (points)": round(gap(r), 2),
                   "epochs": r["epochs"]} for n, r in results.items()], hide_index=True)
