"""Chapter 1: which gates can one perceptron learn? Its decision line, epoch by epoch.

Calls :func:`p2t_jax.chapters.perceptron_rule.train_many` (every seed in one compiled call,
the learning rate and initial scale traced) and the chapter's figures.
"""

from __future__ import annotations

import jax
import numpy as np
import streamlit as st

from p2t_jax.chapters import perceptron_rule
from p2t_jax.data.logic import GATES, truth_table
from p2t_jax.playground import ui
from p2t_jax.viz import perceptron_figures as figures

TITLE = "1 · Perceptron"
ICON = ":material/linear_scale:"
URL = "perceptron"

EPOCHS = 60  # epochs per run (a static size: one compilation per shuffle setting)
NUM_SEEDS = 32  # runs per gate, all in one call
LINES_SHOWN = 12  # decision lines drawn: the chosen epoch and the ones just before it


@st.cache_resource(show_spinner=False)
def seed_keys() -> np.ndarray:
    """``[NUM_SEEDS, 2]`` PRNG keys, the same on every rerun."""
    return np.asarray(jax.random.split(jax.random.PRNGKey(0), NUM_SEEDS))


def render(settings: ui.Settings) -> None:
    controls, plots = ui.layout(
        "The perceptron: which gates can one line learn?",
        "Rosenblatt's rule moves the line only when an example is misclassified. AND, OR and NAND "
        "settle after a few epochs; XOR and XNOR never do, because no line separates them. "
        f"Each setting runs {NUM_SEEDS} seeds x {EPOCHS} epochs in one compiled call of "
        "`perceptron_rule.train_many`.")
    with controls:
        gate = st.selectbox("Gate", tuple(GATES), index=tuple(GATES).index("XOR"), key="pc_gate")
        lr = ui.number("Learning rate", 1.0, low=0.0, high=100.0, low_inclusive=False, key="pc_lr")
        scale = ui.number("Initial weight scale", 0.5, low=0.0, high=10.0, key="pc_scale",
                          help="Initial w and b are drawn from N(0, scale^2); 0 starts at zero.")
        shuffle = st.checkbox("New example order every epoch", value=True, key="pc_shuffle")
        seed = st.slider("Seed shown", 0, NUM_SEEDS - 1, 0, key="pc_seed")
        epoch = st.slider("Epoch", 1, EPOCHS, 8, key="pc_epoch")

    ui.checked()
    x, y = truth_table(gate)
    history = jax.tree.map(lambda a: np.asarray(a)[0], perceptron_rule.train_many(
        x, np.asarray(y)[None], seed_keys(), lr=lr, init_scale=scale, num_epochs=EPOCHS, shuffle=shuffle))
    errors, mistakes = history.errors, history.mistakes  # [S, E]
    w, b = history.w[seed], history.b[seed]  # [E, 2], [E]
    first = perceptron_rule.first_zero(errors)  # [S], -1: never
    solved = first >= 0

    with controls:
        st.metric(f"Errors after epoch {epoch} (seed {seed})", int(errors[seed, epoch - 1]))
        st.metric(f"Updates during epoch {epoch}", int(mistakes[seed, epoch - 1]))
        st.metric(f"Seeds at zero errors within {EPOCHS} epochs", f"{int(solved.sum())} / {NUM_SEEDS}")
        if solved.any():
            st.caption(f"Median epoch of the first error-free pass: {float(np.median(first[solved] + 1)):g}.")
        else:
            st.caption(f"Not one seed reaches zero errors: the fewest errors in any epoch is {int(errors.min())}.")

    start = max(0, epoch - LINES_SHOWN)
    left, right = plots.columns(2)
    ui.figure(figures.decision_lines(x, y, w[start:epoch], b[start:epoch], errors[seed, start:epoch],
                                     title=f"{gate}, seed {seed}: the line after epochs {start + 1}-{epoch}",
                                     shade_final=True, first_epoch=start + 1), left)
    ui.figure(figures.errors_per_epoch({gate: errors}, epochs=EPOCHS), right)
