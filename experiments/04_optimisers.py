"""Chapter 4: the same MLP on MNIST with SGD, momentum and Adam side by side; paths on a loss surface.

    python experiments/04_optimisers.py [--workdir runs/04_optimisers] [--config configs/mnist_optimizers.py]
        [--config.experiment.optimizers="('sgd', 'momentum', 'nesterov', 'rmsprop', 'adam', 'adamw', 'lion')"]

Each optimiser trains the config's MLP through the one training loop (in
``WORKDIR/<optimiser>/``); one more run (``WORKDIR/full_batch/``) takes every update on the
whole training split. Claims checked: after the first epoch Adam's test accuracy is ahead of
SGD's; on full MNIST from TFDS (``:full``) the best run reaches 98% test accuracy.
Writes ``optimizer_curves.png``, ``batch_throughput.png``, ``loss_surface.png`` and
``results.json``; exits 1 if the claim fails. A finished run found in its folder (same
config) is read back instead of trained again; an interrupted one resumes.
"""

from __future__ import annotations

import copy
import pathlib
import sys

import jax.numpy as jnp
import ml_collections
import numpy as np

from p2t_jax.chapters import optimisers as surfaces
from p2t_jax.configuration import require, require_choice, require_names, require_positive
from p2t_jax.data import image_datasets
from p2t_jax.experiment import Claims, main
from p2t_jax.optim import chains, scratch
from p2t_jax.tasks import image_classification as ic
from p2t_jax.viz import chapter04_05 as figures
from p2t_jax.viz.style import save_figure

FULL_MNIST_ACCURACY = 0.98  # what an MLP should reach on the full 60,000 / 10,000 split


def validate(config: ml_collections.ConfigDict) -> None:
    ic.validate(config)
    e = config.experiment
    require_names(config, "experiment.optimizers", chains.CLASSIC, "optimiser")
    for group in ("learning_rates", "surface_learning_rates"):
        for name in chains.CLASSIC:
            value = e[group].get(name)
            require(isinstance(value, (int, float)) and value > 0,
                    f"config key 'experiment.{group}.{name}' must be a positive number, got {value!r}.")
    require_choice(config, "experiment.full_batch_optimizer", chains.CLASSIC)
    require(e.full_batch_steps >= 0, f"config key 'experiment.full_batch_steps' must be >= 0, got {e.full_batch_steps}.")
    require(e.decoupled_weight_decay >= 0, "config key 'experiment.decoupled_weight_decay' must be >= 0.")
    require(e.surface in surfaces.SURFACES,
            f"config key 'experiment.surface' must be one of {', '.join(surfaces.SURFACES)}, got {e.surface!r}.")
    require_positive(config, "experiment.surface_steps")


def optimizer_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """``config`` with ``optim`` set to optimiser ``name`` at its learning rate from ``experiment``."""
    c = copy.deepcopy(config)
    c.optim.name = name
    c.optim.learning_rate = float(config.experiment.learning_rates[name])
    c.optim.weight_decay = float(config.experiment.decoupled_weight_decay) if name in chains.WITH_WEIGHT_DECAY else 0.0
    return c


def _number(value, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


def surface_figure(config: ml_collections.ConfigDict) -> tuple[object, dict]:
    """Every hand-written optimiser's path on the configured surface; the figure and the end points."""
    e = config.experiment
    fn, start, minimum = surfaces.SURFACES[e.surface]
    paths, ends = {}, {}
    for name in scratch.OPTIMIZERS:
        lr = float(e.surface_learning_rates[name])
        path = surfaces.make_trajectory(name, e.surface, e.surface_steps, float(e.decoupled_weight_decay))
        points, losses = path(lr)
        paths[f"{name} (lr {lr:g}): loss {float(losses[-1]):.2g}"] = np.asarray(points)
        ends[name] = {"learning_rate": lr, "end_point": np.asarray(points[-1]).tolist(),
                      "end_loss": float(losses[-1]), "distance_to_minimum": float(
                          np.linalg.norm(np.asarray(points[-1]) - np.asarray(minimum)))}
    (x0, x1), (y0, y1) = surfaces.WINDOWS[e.surface]
    xs, ys = np.linspace(x0, x1, 300), np.linspace(y0, y1, 300)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)
    values = np.asarray(fn(jnp.asarray(grid)))
    fig = figures.surface_paths(xs, ys, values, paths, minimum,
                                title=f"{e.surface}: {e.surface_steps} steps of each optimiser from {start}")
    return fig, ends


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, claims: Claims) -> dict:
    e = config.experiment
    splits, source = image_datasets.load_splits(config.data.source, config.data.name,
                                                config.data.tfds_data_dir or None)
    results: dict = {"data_source": source, "runs": {}}
    trained: dict[str, dict] = {}
    print(f"data: {source}; model hidden {tuple(config.model.hidden)}, batch {config.train.batch_size}, "
          f"{config.train.num_epochs} epochs")
    for name in e.optimizers:
        r = trained[name] = ic.train_or_reuse(optimizer_config(config, name), workdir / name, splits, source)
        c = r["curves"]
        first = c["eval_accuracy"][c["eval_epoch"].index(1.0)] if 1.0 in c["eval_epoch"] else float("nan")
        results["runs"][name] = {
            "learning_rate": r["config"]["optim"]["learning_rate"], "implementation": r["config"]["optim"]["implementation"],
            "test_accuracy_epoch1": first, "test_accuracy": r["test_accuracy"], "test_loss": r["test_loss"],
            "train_accuracy": r["splits"]["train"]["accuracy"], "epochs": r["epochs"], "wall_s": r["wall_s"],
            "ms_per_step": r["ms_per_step"], "compile_s": r["compile_s"]}
        print(f"  {name:9s} lr {results['runs'][name]['learning_rate']:<7g} test acc after epoch 1 {100 * first:5.1f}%  "
              f"after {r['epochs']:.0f} epochs {100 * r['test_accuracy']:5.1f}%  "
              f"wall {_number(r['wall_s'], '5.1f')} s  {_number(r['ms_per_step'], '.2f')} ms/step", flush=True)

    runs = results["runs"]
    if "sgd" in runs and "adam" in runs:
        claims.check("adam_ahead_after_epoch1", runs["adam"]["test_accuracy_epoch1"] > runs["sgd"]["test_accuracy_epoch1"],
                     "after the first epoch Adam's test accuracy is ahead of SGD's",
                     {"adam": runs["adam"]["test_accuracy_epoch1"], "sgd": runs["sgd"]["test_accuracy_epoch1"]})
    else:
        print("  (the Adam-vs-SGD claim needs both 'sgd' and 'adam' in experiment.optimizers; not checked)")
    if source == "tfds:mnist" and not config.data.train_size:
        best = max(runs, key=lambda n: runs[n]["test_accuracy"])
        claims.check("full_mnist_98", runs[best]["test_accuracy"] >= FULL_MNIST_ACCURACY,
                     f"on full MNIST the MLP reaches >= {100 * FULL_MNIST_ACCURACY:.0f}% test accuracy ({best})",
                     runs[best]["test_accuracy"])

    files = []
    curves = {}
    for name, r in trained.items():
        c = r["curves"]
        curves[name] = {"epoch": np.asarray(c["eval_epoch"]), "test_accuracy": np.asarray(c["eval_accuracy"]),
                        "train_loss": np.asarray(c["train_loss"])}
    files.append(save_figure(figures.optimizer_curves(curves), workdir / "optimizer_curves.png").name)

    if e.full_batch_steps > 0:
        mini = trained.get(e.full_batch_optimizer)
        if mini is None:
            mini = ic.train_or_reuse(optimizer_config(config, e.full_batch_optimizer),
                                     workdir / f"{e.full_batch_optimizer}_minibatch", splits, source)
        full_config = optimizer_config(config, e.full_batch_optimizer)
        num_train = len(ic.carve(splits, config.data.train_size, config.data.validation_size, config.seed)["train"])
        full_config.train.batch_size = num_train
        full_config.train.num_epochs = e.full_batch_steps
        every = max(1, e.full_batch_steps // 20)
        full_config.train.log_every = full_config.train.eval_every = full_config.train.checkpoint_every = every
        full = ic.train_or_reuse(full_config, workdir / "full_batch", splits, source)
        rows, timelines = [], {}
        for label, r in ((f"mini-batch {mini['batch_size']}", mini), (f"full batch {full['batch_size']}", full)):
            if not r["ms_per_step"]:
                print(f"  ({label}: no timing, its folder held a finished run; use a new --workdir to time it)")
                continue
            rows.append({"name": label, "updates_per_s": 1000 / r["ms_per_step"],
                         "examples_per_s": 1000 * r["batch_size"] / r["ms_per_step"],
                         "test_accuracy": r["test_accuracy"], "steps": r["steps"], "wall_s": r["wall_s"]})
            timelines[label] = {"seconds": np.asarray(r["curves"]["eval_seconds"]),
                                "test_accuracy": np.asarray(r["curves"]["eval_accuracy"])}
            print(f"  {label:18s} {rows[-1]['updates_per_s']:8,.0f} updates/s  {rows[-1]['examples_per_s']:10,.0f} "
                  f"examples/s  test acc {100 * r['test_accuracy']:5.1f}% after {r['steps']} updates")
        results["full_vs_mini_batch"] = rows
        if rows:
            files.append(save_figure(figures.batch_throughput(rows, timelines), workdir / "batch_throughput.png").name)

    fig, ends = surface_figure(config)
    results["surface"] = {"name": e.surface, "steps": e.surface_steps, "optimizers": ends}
    print(f"  {e.surface}, {e.surface_steps} steps: " + ", ".join(
        f"{n} {v['end_loss']:.2g}" for n, v in ends.items()) + " (final loss)")
    files.append(save_figure(fig, workdir / "loss_surface.png").name)
    results["figures"] = files
    return results


def cli(argv=None) -> int:
    """The command line: ``--workdir``, ``--config``, ``--config.KEY=VALUE``; returns the exit status."""
    return main(run, script=__file__,
                description="Chapter 4: optimisers", default_workdir="runs/04_optimisers",
                default_config="configs/mnist_optimizers.py", validate=validate, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
