"""The first page: what each page shows, and which runs the pages that need one have found."""

from __future__ import annotations

import streamlit as st

from p2t_jax.playground import ui
from p2t_jax.playground.views import attention, cnn, optimisers, pointer, regularisation, rnn, transformer

TITLE = "Overview"
ICON = ":material/home:"
URL = "home"

CHAPTERS = (
    ("perceptron", "Which logic gates can one perceptron learn? Step through the epochs and watch its line: "
                   "AND, OR and NAND settle, XOR never does."),
    ("xor_mlp", "A hidden layer solves XOR. Choose the width, activation, loss and learning rate; every seed "
                "trains at once (vmap) and the page counts how many succeed."),
    ("optimisers", "Seven hand-written optimisers race across a 2-D loss surface; their MNIST curves from the "
                   "chapter's runs."),
    ("regularisation", "Dropout and weight decay against the train/test gap, from the chapter's runs."),
    ("cnn", "A trained CNN's first-layer filters and its feature maps, layer by layer, for a test digit you choose."),
    ("rnn", "Who was the subject? A vanilla RNN, an LSTM and a GRU by the number of filler words, and a sentence "
            "you type, classified by every trained seed of each."),
    ("attention", "Type a verb-final sentence: the trained encoder-decoder translates it to verb-second order and "
                  "the heat map shows where its attention went for every word it wrote."),
    ("transformer", "Type a prompt: a trained character-level Transformer continues it, streamed as it is "
                    "sampled with the key/value cache."),
    ("pointer", "Place points (or numbers): the trained pointer network draws their convex hull, a tour through "
                "them, or their sorted order, against the exact answer."),
)


def render(settings: ui.Settings) -> None:
    from p2t_jax.playground import views

    st.title("p2t playground")
    st.markdown("From a single perceptron to a Transformer, live. Every page calls the library's own functions "
                "(the chapters' compiled training and sampling code, the run folders `p2t train` and the "
                "experiments write), so what moves here is what the tests and experiments measure.")
    for name, blurb in CHAPTERS:
        page = views.load(name)
        if name in settings.links:  # served by the app: a link to the page
            st.page_link(settings.links[name], label=page.TITLE, icon=page.ICON)
        else:
            st.markdown(f"**{page.TITLE}**")
        st.caption(blurb)

    st.subheader(f"Runs in `{settings.runs_dir}`")
    found = transformer.language_model_runs(settings.runs_dir)
    rows = [("Transformer (language model) runs", ", ".join(f"`{p}`" for p in found) or "none",
             transformer.TRAIN.format(folder=settings.runs_dir / "small")),
            ("Optimiser runs", f"{len(optimisers.optimiser_runs(settings.runs_dir / '04_optimisers'))} runs",
             optimisers.EXPERIMENT.format(folder=settings.runs_dir / "04_optimisers")),
            ("Regularisation runs", f"{len(ui.read_results(settings.runs_dir / '05_regularisation'))} runs",
             regularisation.EXPERIMENT.format(folder=settings.runs_dir / "05_regularisation")),
            ("CNN runs", f"{len(cnn.cnn_runs(settings.runs_dir / '06_cnn'))} runs",
             cnn.EXPERIMENT.format(folder=settings.runs_dir / "06_cnn")),
            ("Recurrent-memory results", "found" if rnn.read_run(settings.runs_dir / "08_rnn") else "none",
             rnn.EXPERIMENT.format(folder=settings.runs_dir / "08_rnn")),
            ("Attention results", "found" if attention.read_run(settings.runs_dir / "09_attention") else "none",
             attention.EXPERIMENT.format(folder=settings.runs_dir / "09_attention")),
            ("Pointer-network runs", ", ".join(pointer.pointer_runs(settings.runs_dir / "11_pointer")) or "none",
             pointer.EXPERIMENT.format(folder=settings.runs_dir / "11_pointer"))]
    for what, status, command in rows:
        st.markdown(f"- **{what}**: {status}" + ("" if status not in ("none", "0 runs") else
                                                 f" — make them with `{command}`"))

