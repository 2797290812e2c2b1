"""Chapters 2 and 3: an MLP trained on XOR with the hand-written backward pass, over many seeds at once.

Calls :func:`p2t_jax.chapters.xor_training.make_sweep_with_params` (every seed in one
``vmap``-ped, jitted call; the learning rate traced), :func:`~p2t_jax.chapters.xor_training.output_grid`
for the decision band, and the chapters' figures.
"""

from __future__ import annotations

import jax
import numpy as np
import streamlit as st

from p2t_jax.chapters import hand_mlp, xor_training
from p2t_jax.chapters.backprop import DERIVATIVES, LOSSES
from p2t_jax.playground import ui
from p2t_jax.viz import backprop_figures, mlp_figures

TITLE = "2-3 · MLP and backprop"
ICON = ":material/hub:"
URL = "mlp"

MAX_SEEDS = 1024
STEP_CHOICES = (500, 2000, 5000)  # static scan lengths: one compilation each
GRID = 101  # points per side of the decision-band grid
RISE_TOLERANCE = 1e-3  # a step "raises the loss" when it grows by more than this fraction (chapter 3)


@st.cache_resource(show_spinner=False)
def seed_keys() -> np.ndarray:
    """``[MAX_SEEDS, 2]`` keys; the first n seeds of any run are ``seed_keys()[:n]``."""
    return np.asarray(jax.random.split(jax.random.PRNGKey(0), MAX_SEEDS))


@st.cache_resource(show_spinner=False)
def sweep_fn(width: int, activation: str, loss: str, num_steps: int):
    """The compiled sweep for one architecture (cached across reruns: a new rate does not recompile)."""
    return xor_training.make_sweep_with_params((width, 1), activation, loss, num_steps)


def bucket(n: int) -> int:
    """The smallest power of two >= n: the batch of seeds actually run, so that few sizes compile."""
    return 1 << max(0, n - 1).bit_length()


def render(settings: ui.Settings) -> None:
    controls, plots = ui.layout(
        "An MLP learns XOR: width, activation, learning rate, seeds",
        "A 2-H-1 network trained by full-batch gradient descent with the hand-written backward pass "
        "of chapter 3. All seeds train at once in one `vmap`-ped, compiled call "
        "(`xor_training.make_sweep_with_params`); a new learning rate or seed count reuses it. "
        "With 2 hidden units some seeds get stuck; with 4 almost none do.")
    with controls:
        width = st.slider("Hidden units", 1, 16, 2, key="mlp_width")
        activation = st.selectbox("Activation", tuple(DERIVATIVES), key="mlp_activation")
        loss = st.selectbox("Loss", LOSSES, key="mlp_loss", help="bce: cross-entropy; mse: squared error, both on "
                                                                   "sigmoid(output)")
        lr = ui.number("Learning rate", 0.5, low=0.0, high=1000.0, low_inclusive=False, key="mlp_lr")
        num_seeds = ui.number("Seeds", 64, low=1, high=MAX_SEEDS, integer=True, key="mlp_seeds")
        num_steps = st.select_slider("Steps", STEP_CHOICES, value=2000, key="mlp_steps")
        shown = ui.number("Seed shown", 0, low=0, high=num_seeds - 1, integer=True, key="mlp_shown")

    ui.checked()
    run = sweep_fn(width, activation, loss, num_steps)
    with plots, st.spinner(f"Training {bucket(num_seeds)} networks for {num_steps} steps ..."):
        params, trace = run(seed_keys()[:bucket(num_seeds)], lr)
        params, trace = jax.tree.map(np.asarray, (params, trace))
    rise = np.asarray(xor_training.rise_share(trace.loss, RISE_TOLERANCE))[:num_seeds]
    final = trace.final_accuracy[:num_seeds]
    solved = int(np.sum(final == 1.0))
    arch = f"2-{width}-1"

    with controls:
        st.metric("Seeds solving XOR", f"{solved} / {num_seeds}", f"{solved / num_seeds:.1%}", delta_color="off")
        st.markdown(f"Seed {shown}'s outputs for 00, 01, 10, 11: **"
                    + " ".join(f"{p:.2f}" for p in trace.final_probs[shown]) + "**")
        st.caption(f"Median share of steps that raised the loss: {np.median(rise):.1%} "
                   "(chapter 3: the loss starts rising near lr 4 for 2-4-1 sigmoid, 2 / the Hessian's top eigenvalue).")

    one = jax.tree.map(lambda a: a[shown], params)
    probs = np.asarray(xor_training.output_grid(one, activation, GRID))
    x, y = xor_training.xor_data()
    lines = hand_mlp.hidden_lines(one)
    left, right = plots.columns(2)
    ui.figure(mlp_figures.xor_band(np.linspace(*xor_training.GRID_LIMITS, GRID), probs, np.asarray(x),
                                   np.asarray(y)[:, 0], lines, [f"h{j + 1}" for j in range(len(lines))],
                                   title=f"{arch} {activation}, seed {shown}: output and hidden lines"), left)
    ui.figure(backprop_figures.success_by_arch({arch: final}), right)
    ui.figure(backprop_figures.loss_by_lr({lr: trace.loss[:num_seeds]}, {lr: float(np.median(rise))}, points=200,
                                          band=(0.1, 0.9), architecture=f"{arch} {activation}"),
              plots.columns([2, 1])[0])
