"""Chapter 7: plain, residual and batch-normalised deep nets, layer by layer.

Two views of the chapter's four nets (:data:`p2t_jax.chapters.deep_nets.NETS`):

* live, at initialisation, for a depth you choose: the first training step's per-layer
  kernel gradient norms and ReLU-input statistics for every net and several seeds, in one
  compiled, ``vmap``-ped call (:func:`p2t_jax.chapters.deep_nets.first_step_of_nets`, on the
  task's own model and loss; a new seed or batch reuses it, a new depth compiles once);
* from the chapter's runs (``experiments/07_batchnorm_residual.py`` writes
  ``<net>_depth<D>_seed<S>/`` run folders): the same measurements as the loop logged them
  during training (``metrics.jsonl``), at the logged step you choose, and each run's final
  training loss by depth.
"""

from __future__ import annotations

import json
import math
import pathlib
import re

import jax
import ml_collections
import numpy as np
import streamlit as st

from p2t_jax.chapters import deep_nets
from p2t_jax.configuration import load_config
from p2t_jax.data import image_datasets
from p2t_jax.playground import ui
from p2t_jax.tasks import image_classification as ic
from p2t_jax.training.metrics import read_metrics
from p2t_jax.viz import chapter06_07 as figures

TITLE = "7 · Batch norm and residuals"
ICON = ":material/stacks:"
URL = "batchnorm"

EXPERIMENT = "python experiments/07_batchnorm_residual.py --workdir {folder}"
CONFIG = "configs/deep_nets.py"  # the chapter's config: used when no run gives one
SEEDS = 8  # seeds measured at once (a fixed size: one compilation per depth)
DEPTHS = (2, 5, 10, 20, 30, 40, 50)  # the depth slider's stops (with the runs' own depths)
MAX_BATCH = 10_000
RUN_NAME = re.compile(r"^(plain|residual|plain_BN|residual_BN)_depth(\d+)_seed(\d+)$")
GRADIENT, MEAN, STD = "kernel gradient norm", "ReLU input mean", "ReLU input std"


def chapter_runs(folder: pathlib.Path) -> dict[tuple[str, int, int], dict]:
    """``(net, depth, seed) -> result`` for every run folder of the chapter's nets in ``folder``
    (``<net>_depth<D>_seed<S>``, ``+`` written ``_``; the Adam comparisons are left out). Each
    result is the run's ``result.json`` with its ``folder`` added."""
    runs = {}
    for name, result in ui.read_results(folder).items():
        match = RUN_NAME.match(name)
        if match and result.get("config", {}).get("model", {}).get("name") == "deep_mlp":
            net, depth, seed = match.group(1).replace("_", "+"), int(match.group(2)), int(match.group(3))
            runs[(net, depth, seed)] = dict(result, folder=str(folder / name))
    return dict(sorted(runs.items(), key=lambda item: (list(deep_nets.NETS).index(item[0][0]), *item[0][1:])))


def _stamp(folder: str) -> float:
    path = pathlib.Path(folder) / "metrics.jsonl"
    return path.stat().st_mtime if path.exists() else 0.0


@st.cache_data(show_spinner=False, max_entries=64)
def logged_records(folder: str, stamp: float) -> list[dict]:
    """The run's training records, one per logged step (the last wins), in step order; values the
    file holds as non-finite (None) become NaN."""
    del stamp  # part of the cache key only
    by_step = {r["step"]: r for r in read_metrics(folder, "train")}
    return [{k: (math.nan if v is None else v) for k, v in by_step[s].items()} for s in sorted(by_step)]


def profiles(rows: list[dict]) -> dict[str, np.ndarray]:
    """``{GRADIENT: [R, L + 1], MEAN: [R, L], STD: [R, L]}`` from metric records (one row each)."""
    return {GRADIENT: deep_nets.layer_series(rows, "grad_norm"), MEAN: deep_nets.layer_series(rows, "preact_mean"),
            STD: deep_nets.layer_series(rows, "preact_std")}


def base_config(runs: dict[tuple[str, int, int], dict]) -> ml_collections.ConfigDict:
    """The config the live measurement uses: the chapter's runs' (their data, width, batch and
    optimiser), else the chapter's config file's."""
    if runs:
        return ml_collections.ConfigDict(next(iter(runs.values()))["config"])
    return ic.run_config(load_config(CONFIG))


@st.cache_resource(show_spinner=False, max_entries=8)
def measurement(config_json: str, depth: int) -> dict:
    """The compiled measurement of the four nets at ``depth`` and the training batches it reads."""
    config = ml_collections.ConfigDict(json.loads(config_json))
    d = config.data
    splits, source = image_datasets.load_splits(d.source, d.name, d.tfds_data_dir or None)
    built = {net: ic.build_with_batches(deep_nets.net_config(config, net, depth), splits=splits, source=source)
             for net in deep_nets.NETS}
    task, batches, resolved = built["plain"]
    return {"measure": deep_nets.first_step_of_nets({net: b[0] for net, b in built.items()}),
            "train_batch": task.train_batch, "steps_per_epoch": batches.steps_per_epoch, "source": source,
            "config": resolved}


def _band() -> tuple[float, float] | None:
    try:
        return tuple(load_config(CONFIG).experiment.bn_std_range)
    except Exception:  # noqa: BLE001 - no config file beside the package: no band
        return None


def render(settings: ui.Settings) -> None:
    controls, output = ui.layout(
        "Batch norm and residual connections: gradients and activations by layer",
        "Four deep MLPs on MNIST: plain or residual, without or with batch norm. Without either, the "
        "gradient reaching the first layers of a deep plain net shrinks layer by layer and the ReLU inputs "
        "drift away from mean 0 / std 1; the skips carry the gradient back unchanged, batch norm keeps "
        "every layer's input normal. Above: the first training step of fresh nets at the depth you choose, "
        "measured live; below: the same measurements logged while the chapter's nets trained.")
    with controls:
        folder = ui.folder_input("Run folder of experiments/07_batchnorm_residual.py",
                                 settings.runs_dir / "07_batchnorm_residual", key="bn_folder")
        runs = chapter_runs(folder)
        config = base_config(runs)
        run_depths = sorted({depth for _, depth, _ in runs})
        stops = sorted(set(DEPTHS) | set(run_depths))
        depth = st.select_slider("Depth (layers)", stops, value=max(run_depths) if run_depths else 30,
                                 key="bn_depth", help="Each new depth compiles the four nets once.")
        first = ui.number("First seed", 0, low=0, high=2**31 - SEEDS, integer=True, key="bn_seed",
                          help=f"The nets start from seeds first .. first + {SEEDS - 1}, as runs with those "
                               f"seeds do.")
        index = ui.number("Training batch", 0, low=0, high=MAX_BATCH, integer=True, key="bn_batch")
    ui.checked()
    with output, st.spinner(f"Measuring four depth-{depth} nets at initialisation ..."):
        live = measurement(config.to_json(), depth)
        measured = jax.device_get(live["measure"](np.arange(first, first + SEEDS), live["train_batch"](index)))
    shown = {net: profiles(deep_nets.seed_rows(measured[net])) for net in deep_nets.NETS}
    band = _band()
    c = live["config"]
    with output:
        ui.figure(figures.layer_profiles(
            {what: {net: shown[net][what] for net in shown} for what in (GRADIENT, MEAN, STD)}, log=(GRADIENT, STD),
            bands={STD: band} if band else None,
            title=f"At initialisation, depth {depth}: the first step on training batch {index}, seeds {first}.."
                  f"{first + SEEDS - 1} (line: mean, shade: range)"))
        ratio = np.mean(shown["residual"][GRADIENT][:, 0] / shown["plain"][GRADIENT][:, 0])
        left, right = st.columns(2)
        left.metric("Layer-1 gradient, residual ÷ plain (no BN)", f"{ratio:.3g}x",
                    help="The mean over the seeds of the ratio of the first layer's kernel gradient norms.")
        right.metric("Loss at initialisation, plain (no BN)", f"{np.mean(measured['plain']['loss']):.3f}")
        st.dataframe([{"net": net, "loss": float(np.mean(measured[net]["loss"])),
                       "layer-1 gradient norm": float(np.mean(shown[net][GRADIENT][:, 0])),
                       f"layer-{depth} gradient norm": float(np.mean(shown[net][GRADIENT][:, -2])),
                       "layer-1 ReLU input std": float(np.mean(shown[net][STD][:, 0])),
                       f"layer-{depth} ReLU input std": float(np.mean(shown[net][STD][:, -1]))}
                      for net in deep_nets.NETS], hide_index=True)
        st.caption(f"Seeds {first}..{first + SEEDS - 1} on training batch {index}; width {c.model.width}, batch "
                   f"{c.train.batch_size}, {c.data.name} from {live['source']}, as in the "
                   f"{'runs' if runs else 'chapter'}' config{'' if runs else f' ({CONFIG})'}.")

    st.subheader(f"During training: the chapter's runs in `{folder}`")
    if not runs:
        ui.missing(f"`{folder}` holds no runs of the chapter's nets (`<net>_depth<D>_seed<S>/result.json`).",
                   EXPERIMENT.format(folder=folder))
        return
    render_runs(runs, band)


def render_runs(runs: dict[tuple[str, int, int], dict], band: tuple[float, float] | None) -> None:
    """The logged per-layer measurements at a chosen depth, seed and step; final losses by depth."""
    controls, output = st.columns([1, 3], gap="large")
    with controls:
        depths = sorted({depth for _, depth, _ in runs})
        depth = st.select_slider("Depth of the runs", depths, value=depths[-1], key="bn_run_depth") \
            if len(depths) > 1 else depths[0]
        seeds = sorted({seed for _, d, seed in runs if d == depth})
        seed = st.selectbox("Seed", seeds, key="bn_run_seed") if len(seeds) > 1 else seeds[0]
        chosen = {net: runs[(net, d, s)] for (net, d, s) in runs if d == depth and s == seed}
        records = {net: logged_records(r["folder"], _stamp(r["folder"])) for net, r in chosen.items()}
        records = {net: rows for net, rows in records.items() if rows}
        if not records:
            raise ui.InputError(f"The depth-{depth} runs (seed {seed}) have no logged training records "
                                f"(metrics.jsonl).")
        steps = sorted(set.intersection(*({r["step"] for r in rows} for rows in records.values())))
        step = st.select_slider("Logged step", steps, value=steps[-1], key=f"bn_run_step_{depth}_{seed}",
                                help="Each point is the mean over the interval that ends at this step.")
    at = {net: profiles([next(r for r in rows if r["step"] == step)]) for net, rows in records.items()}
    with output:
        ui.figure(figures.layer_profiles(
            {what: {net: at[net][what][0] for net in at} for what in (GRADIENT, MEAN, STD)}, log=(GRADIENT, STD),
            bands={STD: band} if band else None,
            title=f"The chapter's depth-{depth} nets (seed {seed}), logged at step {step} (interval means)"))
    st.markdown("**Final training loss** (evaluation mode, whole training split) by depth; test accuracy in brackets")
    table = []
    for net in deep_nets.NETS:
        row = {"net": net}
        for d in depths:
            mine = [r for (n, dd, _), r in runs.items() if n == net and dd == d]
            if mine:
                loss = np.mean([r["splits"]["train"]["loss"] for r in mine])
                accuracy = np.mean([r["test_accuracy"] for r in mine])
                row[f"depth {d}"] = f"{loss:.4f} ({100 * accuracy:.1f}%)"
        table.append(row)
    st.dataframe(table, hide_index=True)
