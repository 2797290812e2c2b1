"""Chapter 9: where does the decoder look? Attention heat map for a verb-final sentence you type.

Reads ``results.json`` of ``experiments/09_attention.py`` and the attention model's trained
parameters (``with_attention/params.msgpack``, every seed stacked, as
:func:`p2t_jax.training.sweep.save_params` wrote them), translates the typed sentence with
:func:`p2t_jax.chapters.reordering.greedy` (one compiled call: the source padded to the run's
``model.max_len``, ``max_len + 1`` decoder steps, vmapped over the seeds) and draws the
decoder's alignment with the chapter's figure.
"""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import numpy as np
import streamlit as st

from p2t_jax.chapters import reordering
from p2t_jax.data import reorder
from p2t_jax.playground import ui
from p2t_jax.tasks import reorder as reorder_task
from p2t_jax.training import sweep
from p2t_jax.viz import chapter08_09 as figures

TITLE = "9 · Attention"
ICON = ":material/visibility:"
URL = "attention"

EXPERIMENT = "python experiments/09_attention.py --workdir {folder}"
MODEL = "with attention"  # the model of the experiment whose alignment is drawn
SENTENCE = "anna die alt hund heute sieht"  # "anna sees the old dog today", verb-final


def read_run(folder: pathlib.Path) -> dict | None:
    """``folder/results.json`` of the chapter's experiment, or None if there is none (or it is not one)."""
    try:
        results = json.loads((folder / "results.json").read_text())
    except (OSError, ValueError):  # missing, not JSON, or not UTF-8
        return None
    return results if isinstance(results, dict) and MODEL in results.get("models", {}) else None


@st.cache_resource(show_spinner=False, max_entries=4)
def load_model(params_file: str, config_json: str, stamp: float) -> tuple:
    """``(model, stacked parameters)`` of the attention model."""
    config = ml_collections.ConfigDict(json.loads(config_json))
    with config.unlocked():
        config.model.use_attention = True
    model = reorder_task.make_model(config)
    like = jax.eval_shape(lambda: reorder_task.init_variables(model, config.model.max_len, jax.random.PRNGKey(0)))
    return model, sweep.load_params(pathlib.Path(params_file), like=like["params"])


def render(settings: ui.Settings) -> None:
    controls, plots = ui.layout(
        "Attention: where does the decoder look?",
        "An encoder-decoder trained to translate verb-final sentences (as in a German subordinate clause: "
        "*anna die alt hund sieht*) into verb-second order (*anna sees the old dog*). Type a source sentence: the "
        "trained model translates it word by word (greedy decoding), and the heat map shows, for every word it "
        "writes, how much attention it pays to each source word. The verb comes second in the output but last in "
        "the source: the alignment leaves the diagonal to fetch it.")
    with controls:
        folder = ui.folder_input("Run folder of experiments/09_attention.py", settings.runs_dir / "09_attention",
                                 key="att_folder")
        results = read_run(folder)
        if results is None:
            ui.missing(f"`{folder}` holds no results of the chapter's experiment (`results.json`).",
                       EXPERIMENT.format(folder=folder))
            return
        run = results["models"][MODEL]
        if "params" not in run or not (folder / run["params"]).exists():
            ui.missing(f"`{folder}` holds the results but not the attention model's trained parameters "
                       "(`with_attention/params.msgpack`), which the experiment writes since they were added; run it "
                       "again.", EXPERIMENT.format(folder=folder))
            return
        config = results["config"]
        max_len = config["model"]["max_len"]
        sentence = st.text_input("Source sentence (verb-final)", SENTENCE, key="att_sentence",
                                 help=f"At most {max_len} words of the source vocabulary: names "
                                      f"({', '.join(reorder.NAMES)}), verbs ({', '.join(reorder.VERBS.values())}), "
                                      f"die, {', '.join(reorder.ADJECTIVES.values())}, "
                                      f"{', '.join(reorder.NOUNS.values())}, {', '.join(reorder.PREPOSITIONS.values())}, "
                                      f"{', '.join(reorder.ADVERBS.values())}.")
        seeds = results["seeds"]
        seed = st.selectbox("Seed", seeds, key="att_seed") if len(seeds) > 1 else seeds[0]

    rows, lengths = reordering.source_rows([sentence], max_len)  # ConfigError for an unknown word or a long one
    path = folder / run["params"]
    with st.spinner(f"Restoring {path} ..."):
        model, params = load_model(str(path), json.dumps(config), path.stat().st_mtime)
    tokens_SNT, weights_SNTL = reordering.greedy(model, params, rows, max_len + 1)
    s, n = seeds.index(seed), int(lengths[0])
    output = reorder.decode_target(tokens_SNT[s, 0]).split() + ["<eos>"]
    weights = weights_SNTL[s, 0, :len(output), :n]
    source = reorder.SOURCE_VOCAB.decode(rows[0]).split()
    with controls:
        written = " ".join(output[:-1])
        st.markdown(f"**Translation** (seed {seed}): " + (f"*{written}*" if written else "nothing (`<eos>` first)"))
        st.metric("Attention on the source verb when writing word 2", f"{weights_SNTL[s, 0, 1, n - 1]:.0%}",
                  f"'{output[1] if len(output) > 2 else '-'}' from '{source[-1]}'", delta_color="off")
        exact = np.asarray(run["exact_match"], float)[:, s]
        lengths_run = results["lengths"]
        if n in lengths_run:
            st.caption(f"Exact match of this seed on held-out {n}-word sentences: {exact[lengths_run.index(n)]:.1%}.")
    panel = {"source": source, "output": output, "weights": weights, "title": f"{n} words, seed {seed}"}
    ui.figure(figures.attention_heatmaps([panel]), plots.columns([2, 1])[0])
