"""Chapter 11: a pointer network's answer for points you place (convex hull, tour) or numbers you sort.

Restores one problem's run of ``experiments/11_pointer.py`` (``WORKDIR/<problem>/``, a run of
the training loop) with :func:`p2t_jax.training.loop.restore_state`, builds the instance with
:func:`p2t_jax.data.pointer.instances` (the exact answer included) padded to the run's
``data.max_length`` (one compiled decoder per problem), decodes it greedily and with the beam
by :func:`p2t_jax.tasks.pointer.measure`, and draws it with the chapter's figures.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import pandas as pd
import streamlit as st

from p2t_jax import runs
from p2t_jax.data import pointer as problems
from p2t_jax.playground import ui
from p2t_jax.tasks import pointer as pointer_task
from p2t_jax.training.loop import restore_state
from p2t_jax.viz import chapter11 as figures

TITLE = "11 · Pointer networks"
ICON = ":material/polyline:"
URL = "pointer"

EXPERIMENT = "python experiments/11_pointer.py --workdir {folder}"
WHAT = {"hull": "Convex hull", "tsp": "Travelling salesman tour", "sort": "Sorting"}


def pointer_runs(folder: pathlib.Path) -> list[str]:
    """The problems with a trained run (``<problem>/config.json`` and checkpoints) in ``folder``."""
    return [p for p in ("hull", "tsp", "sort") if (folder / p / "config.json").is_file()
            and (folder / p / "checkpoints").is_dir()]


@st.cache_resource(show_spinner=False, max_entries=6)
def load_pointer(run_dir: str, stamp: float) -> dict:
    """The run's config, model and parameters, restored as the experiment restores a finished run."""
    config = runs.load_run(run_dir)
    task, config = pointer_task.build(config)
    state, _ = restore_state(task.init_variables, config, run_dir)
    return {"config": config, "model": pointer_task.make_model(config), "params": jax.device_get(state.params),
            "step": int(state.step), "older": ui.newer_unreadable(run_dir, int(state.step))}


def render(settings: ui.Settings) -> None:
    controls, plots = ui.layout(
        "Pointer networks: answers that point at the input",
        "A pointer network's output is a sequence of positions in its own input: the corners of the convex hull "
        "in order, the order of a tour through the cities, the order that sorts the numbers. Place the points "
        "(draw them from a seed, then edit the table) and see what the trained network points at, greedily and "
        "with beam search, against the exact answer (dashed).")
    with controls:
        folder = ui.folder_input("Run folder of experiments/11_pointer.py", settings.runs_dir / "11_pointer",
                                 key="ptr_folder")
        found = pointer_runs(folder)
        if not found:
            ui.missing(f"`{folder}` holds no trained problem (`hull/`, `tsp/` or `sort/` run folders).",
                       EXPERIMENT.format(folder=folder))
            return
        problem = st.selectbox("Problem", found, format_func=WHAT.get, key="ptr_problem")
        run_dir = folder / problem
        with st.spinner(f"Restoring {run_dir} ..."):
            run = load_pointer(str(run_dir), (run_dir / "checkpoints").stat().st_mtime)
        ui.warn_if_older(run)
        config = run["config"]
        lo = problems.MIN_LENGTH[problem]
        hi = min(config.data.max_length, problems.TSP_MAX_LENGTH) if problem == "tsp" else config.data.max_length
        trained = tuple(config.data.train_lengths)
        n = ui.number("Points" if problem != "sort" else "Numbers", min(max(trained[1], lo), hi), low=lo, high=hi,
                      integer=True, key="ptr_n", help=f"Trained on {trained[0]}-{trained[1]}.")
        seed = ui.number("Seed", 0, low=0, high=2**31 - 1, integer=True, key="ptr_seed")
        drawn = np.random.default_rng(seed).random((n, problems.ELEMENT_WIDTH[problem]))
        columns = ["value"] if problem == "sort" else ["x", "y"]
        st.caption("Edit the table to move " + ("a number." if problem == "sort" else "a point (coordinates in [0, 1])."))
        table = st.data_editor(pd.DataFrame(drawn.round(3), columns=columns), key=f"ptr_table_{problem}_{n}_{seed}",
                               num_rows="fixed", hide_index=False)

    ui.checked()
    values = table[columns].to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise ui.InputError("Every cell of the table needs a number.")
    batch = problems.instances(problem, [values[:, 0] if problem == "sort" else values], config.data.max_length)
    batch = problems.pad(problem, batch, config.data.max_length)  # one shape for every n: no recompiling
    K = config.decode.beam_width
    measured = pointer_task.measure(run["model"], problem, run["params"], batch, K)
    decoder = "beam" if K > 1 else "greedy"
    predicted = [int(p) - 1 for p in measured[f"{decoder}_positions"][0] if p >= 1]
    target = [int(p) - 1 for p in batch["targets"][0] if p >= 1]
    with controls:
        st.caption(f"Run `{problem}`, step {run['step']:,}; " + (f"beam width {K}." if K > 1 else "greedy decoding."))
    if problem == "sort":
        right = predicted == target
        with plots:
            st.metric("Sorted correctly", "yes" if right else "no",
                      f"{np.mean(np.asarray(predicted[:len(target)]) == np.asarray(target)):.0%} of pointers right",
                      delta_color="off")
        ui.figure(figures.pointer_attention(values[:, 0], measured["greedy_weights"][0, :n, :n + 1],
                                            [int(p) for p in measured["greedy_positions"][0, :n]]), plots.columns([2, 1])[0])
        return
    metric = (f"{measured[f'{decoder}_area_coverage'][0]:.0%} of the hull's area" if problem == "hull" else
              f"{100 * measured[f'{decoder}_tour_excess'][0]:+.1f}% vs the optimal tour")
    with plots:
        st.metric("Exactly right", "yes" if measured[f"{decoder}_exact_match"][0] else "no", metric, delta_color="off")
    example = {"points": values, "predicted": predicted, "target": target, "kind": problem,
               "title": f"{WHAT[problem].lower()}, n={n} ({decoder}): {metric}"}
    ui.figure(figures.hulls_and_tours([example]), plots.columns([1, 1])[0])
