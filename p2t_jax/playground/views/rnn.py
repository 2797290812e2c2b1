"""Chapter 8: how far back can a recurrent cell remember? Accuracy by filler count, and a sentence you type.

Reads ``results.json`` of ``experiments/08_rnn.py`` (each cell's accuracy per filler count and
seed) and each cell's trained parameters (``CELL/params.msgpack``, every seed stacked, as
:func:`p2t_jax.training.sweep.save_params` wrote them), and classifies the typed sentence with
:func:`p2t_jax.chapters.recurrent_memory.predictions` (one compiled call per cell, rows padded
to the run's ``model.max_len``).
"""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import numpy as np
import pandas as pd
import streamlit as st

from p2t_jax.chapters import recurrent_memory as rm
from p2t_jax.data import memory
from p2t_jax.data import words as words_lib
from p2t_jax.playground import ui
from p2t_jax.tasks import memory as memory_task
from p2t_jax.training import sweep
from p2t_jax.viz import chapter08_09 as figures

TITLE = "8 · RNN vs LSTM"
ICON = ":material/repeat:"
URL = "rnn"

EXPERIMENT = "python experiments/08_rnn.py --workdir {folder}"


def read_run(folder: pathlib.Path) -> dict | None:
    """``folder/results.json`` of the chapter's experiment, or None if there is none (or it is not one)."""
    try:
        results = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):  # missing, not JSON, or not UTF-8
        return None
    return results if isinstance(results, dict) and "cells" in results and "fillers" in results else None


@st.cache_resource(show_spinner=False, max_entries=4)
def load_cells(folder: str, stamp: float) -> dict:
    """cell -> (model, stacked parameters) for each cell whose parameters the run saved."""
    results = read_run(pathlib.Path(folder))
    config = ml_collections.ConfigDict(results["config"])
    cells = {}
    for cell in config.experiment.cells:
        r = results["cells"].get(cell, {})
        if "params" not in r or not (pathlib.Path(folder) / r["params"]).exists():  # results from before they were kept
            continue
        c = ml_collections.ConfigDict(config.to_dict())
        c.model.cell = cell
        model = memory_task.make_model(c)
        like = jax.eval_shape(lambda m=model, n=c.model.max_len: memory_task.init_variables(m, n, jax.random.PRNGKey(0)))
        cells[cell] = (model, sweep.load_params(pathlib.Path(folder) / r["params"], like=like["params"]))
    return cells


def render(settings: ui.Settings) -> None:
    controls, plots = ui.layout(
        "Recurrent networks: how far back can a cell remember?",
        "Each sentence names its subject first, then a run of filler words, then a verb and an object: "
        "*alice very old saw bob*. After the last word the network must say who the subject was. The cells were "
        "trained on a few fillers only; the curve shows how each holds the subject as the fillers grow, and your "
        "sentence goes through every trained seed of every cell.")
    with controls:
        folder = ui.folder_input("Run folder of experiments/08_rnn.py", settings.runs_dir / "08_rnn", key="rnn_folder")
        results = read_run(folder)
        if results is None:
            ui.missing(f"`{folder}` holds no results of the chapter's experiment (`results.json`).",
                       EXPERIMENT.format(folder=folder))
            return
        config = results["config"]
        fillers = results["fillers"]
        cells = [c for c in config["experiment"]["cells"] if c in results["cells"]]  # results.json sorts its keys
        lo, hi = fillers[0], fillers[-1]
        shown = st.slider("Filler count", lo, hi, min(max(lo, 10), hi), key="rnn_fillers")
        sentence = st.text_input("Your sentence", "alice very old saw bob", key="rnn_sentence",
                                 help=f"Subjects: {', '.join(memory.SUBJECTS)}; fillers: {', '.join(memory.FILLERS)}; "
                                      f"verbs: {', '.join(memory.VERBS)}.")

    accuracy = {cell: np.asarray(results["cells"][cell]["accuracy"], float) for cell in cells}
    train_range = tuple(config["data"]["train_fillers"])
    at = fillers.index(shown)
    table = pd.DataFrame({"cell": cells,
                          f"accuracy at {shown} fillers": [f"{accuracy[c][at].mean():.1%}" for c in cells],
                          "seeds (min-max)": [f"{accuracy[c][at].min():.0%}-{accuracy[c][at].max():.0%}"
                                              for c in cells],
                          "first below 50%": [str(results["cells"][c].get("first_below_half") or "never") for c in cells]})
    with plots:
        st.dataframe(table, hide_index=True)
    ui.figure(figures.accuracy_by_fillers(fillers, accuracy, train_range=train_range, chance=1 / memory.NUM_CLASSES),
              plots.columns([3, 1])[0])

    max_len = config["model"]["max_len"]
    ids = memory.VOCAB.encode(sentence, max_words=max_len, what="sentence")  # ConfigError: one message
    words = sentence.split()
    subject = words[0] if words[0] in memory.SUBJECTS else None
    n = max(len(words) - memory.EXTRA_WORDS, 0)  # words between the subject and the verb
    with controls:
        st.metric("Fillers in your sentence", n,
                  f"{'inside' if train_range[0] <= n <= train_range[1] else 'outside'} the trained "
                  f"{train_range[0]}-{train_range[1]}", delta_color="off")
    with st.spinner("Restoring the trained cells ..."):
        trained = load_cells(str(folder), (folder / "results.json").stat().st_mtime)
    if not trained:
        ui.missing(f"`{folder}` holds the results but not the trained parameters (`CELL/params.msgpack`), which "
                   "the experiment writes since they were added; run it again to classify sentences.",
                   EXPERIMENT.format(folder=folder))
        return
    row = words_lib.pad_rows([ids], max_len)  # [1, max_len]: the same shape for every sentence
    answers = {cell: rm.predictions(model, params, row)[:, 0] for cell, (model, params) in trained.items()}  # [S]
    seeds = results["seeds"]
    out = pd.DataFrame({"cell": list(answers)} | {
        f"seed {s}": [memory.SUBJECTS[int(a[i])] for a in answers.values()] for i, s in enumerate(seeds)})
    if subject is not None:
        out["right"] = [f"{int(np.sum(a == memory.SUBJECTS.index(subject)))} / {len(a)}" for a in answers.values()]
    with plots:
        st.markdown(f"**Who was the subject?** *{' '.join(words)}* ({n} filler{'s' if n != 1 else ''})"
                    + ("" if subject else " — the first word is not a subject, so no answer is right."))
        st.dataframe(out, hide_index=True)
