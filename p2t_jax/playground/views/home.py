"""The first page: what each page shows, which runs the pages that need one have found, and
whether each is a quick run or a full one."""

from __future__ import annotations

import pathlib

import streamlit as st

from p2t_jax.playground import budgets, ui
from p2t_jax.playground.views import attention, batchnorm, cnn, optimisers, pointer, regularisation, rnn, transformer

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
    ("batchnorm", "Plain, residual and batch-normalised deep nets: each layer's gradient norm and ReLU-input "
                  "statistics, measured live at initialisation for the depth you choose (every net and seed in "
                  "one vmapped call) and as the chapter's runs logged them while training."),
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
    st.markdown(f"Make every run folder below at once with `{make_runs_command(settings.runs_dir)}`: the quick "
                f"budget of `p2t reproduce` (small runs, marked quick here). The full "
                f"runs, the chapters' own budgets: `p2t reproduce --budget full --out {settings.runs_dir}`.")
    for what, folders, status, command in run_rows(settings.runs_dir):
        if not folders:
            st.markdown(f"- **{what}**: none — make them with `{command}`")
            continue
        kinds = "; ".join(f"`{folder}`: {budgets.run_budget(folder).label()}" for folder in folders)
        st.markdown(f"- **{what}**: {status} — {kinds}")


def make_runs_command(runs_dir: pathlib.Path) -> str:
    """The command that makes every run folder the pages read into ``runs_dir``."""
    return "p2t playground --make-runs" + ("" if runs_dir == pathlib.Path("runs") else f" --runs {runs_dir}")


def _count(n: int) -> str | None:
    return f"{n} run{'s' if n != 1 else ''}" if n else None


def run_rows(runs_dir: pathlib.Path) -> list[tuple[str, list[pathlib.Path], str, str]]:
    """``(what, folders found, what was found, the command that makes them)`` for every kind of run a page reads."""
    found = transformer.language_model_runs(runs_dir)
    rows = [("Transformer (language model) runs", found, f"{len(found)} found",
             transformer.TRAIN.format(folder=runs_dir / "small"))]
    chapters = (("Optimiser runs", "04_optimisers", lambda f: _count(len(optimisers.optimiser_runs(f))), optimisers),
                ("Regularisation runs", "05_regularisation", lambda f: _count(len(ui.read_results(f))), regularisation),
                ("CNN runs", "06_cnn", lambda f: _count(len(cnn.cnn_runs(f))), cnn),
                ("Batch-norm and residual runs", "07_batchnorm_residual",
                 lambda f: _count(len(batchnorm.chapter_runs(f))), batchnorm),
                ("Recurrent-memory results", "08_rnn", lambda f: "found" if rnn.read_run(f) else None, rnn),
                ("Attention results", "09_attention", lambda f: "found" if attention.read_run(f) else None, attention),
                ("Pointer-network runs", "11_pointer", lambda f: ", ".join(pointer.pointer_runs(f)) or None, pointer))
    for what, name, status_of, page in chapters:
        folder = runs_dir / name
        status = status_of(folder)
        rows.append((what, [folder] if status else [], status or "none", page.EXPERIMENT.format(folder=folder)))
    return rows
