"""Chapter 5: an over-sized MLP overfits the embedded MNIST digits; regularisers narrow the gap.

    python experiments/05_regularisation.py [--workdir runs/05_regularisation]
        [--config configs/mnist_regularisation.py] [--config.experiment.runs="('baseline', 'dropout+decay')"]

Runs (each the base config plus the named change; ``WORKDIR/<run>/``):

* ``baseline``        nothing added;
* ``dropout``         ``model.dropout_rate = experiment.dropout_rate``;
* ``weight_decay``    decoupled decay ``optim.weight_decay = experiment.weight_decay`` (AdamW);
* ``dropout+decay``   both of the above;
* ``l2``              an L2 penalty in the loss, ``loss.l2 = experiment.l2``;
* ``label_smoothing`` ``loss.label_smoothing = experiment.label_smoothing``;
* ``early_stopping``  evaluates on the validation split each epoch, stops after
  ``experiment.patience`` epochs without a lower validation loss and keeps the best checkpoint.

``baseline`` and ``dropout+decay`` are trained with ``experiment.claim_seeds`` seeds.
Every run is measured at the end in evaluation mode on train, validation and test; the
gap is train accuracy minus test accuracy. Claims checked: the baseline overfits (train
accuracy >= 99% while test accuracy gains under a point over the second half of
training), and dropout + decay has a smaller mean gap than the baseline. Writes
``train_test_curves.png``, ``weight_histograms.png``, ``early_stopping.png`` and
``results.json``; exits 1 if a claim fails.

Run time: the runs are independent, so ``experiment.workers`` (2) of them train side by side,
each in a worker process (:func:`p2t_jax.tasks.image_classification.train_each_or_reuse`);
the numbers do not depend on it. Every run trains the config's epochs (20: the measures have
settled, see ``configs/mnist_regularisation.py``): nothing stops early (the claims read the end
of the cosine schedule, and the gap claim's margin is a fraction of a point). Each run saves
every 10 epochs and at the end, not at every evaluation (``train.save_on_eval = False``),
except early stopping, which keeps its best checkpoint.
"""

from __future__ import annotations

import copy
import pathlib
import sys

import ml_collections
import numpy as np

from p2t_jax.configuration import require, require_names
from p2t_jax.data import image_datasets
from p2t_jax.experiment import Claims, main, require_workers
from p2t_jax.optim import chains
from p2t_jax.tasks import image_classification as ic
from p2t_jax.viz import chapter04_05 as figures
from p2t_jax.viz.style import save_figure

RUNS = ("baseline", "dropout", "weight_decay", "dropout+decay", "l2", "label_smoothing", "early_stopping")
CLAIM_RUNS = ("baseline", "dropout+decay")
OVERFIT_TRAIN_ACCURACY = 0.99  # the baseline's train accuracy must reach this ...
STALL_POINTS = 1.0  # ... while its test accuracy gains less than this over the second half of training


def changes(e: ml_collections.ConfigDict) -> dict[str, dict[str, object]]:
    """Run name -> the ``(dotted key, value)`` changes it makes to the base config."""
    return {
        "baseline": {},
        "dropout": {"model.dropout_rate": e.dropout_rate},
        "weight_decay": {"optim.weight_decay": e.weight_decay},
        "dropout+decay": {"model.dropout_rate": e.dropout_rate, "optim.weight_decay": e.weight_decay},
        "l2": {"loss.l2": e.l2},
        "label_smoothing": {"loss.label_smoothing": e.label_smoothing},
        "early_stopping": {"train.early_stop_patience": e.patience, "data.eval_split": "validation"},
    }


def validate(config: ml_collections.ConfigDict) -> None:
    ic.validate(config)
    e = config.experiment
    runs = require_names(config, "experiment.runs", RUNS, "run")
    require(0.0 < e.dropout_rate < 1.0, f"config key 'experiment.dropout_rate' must be in (0, 1), got {e.dropout_rate}.")
    require(e.weight_decay > 0 and e.l2 > 0, "config keys 'experiment.weight_decay' and 'experiment.l2' must be > 0.")
    require(0.0 < e.label_smoothing < 1.0,
            f"config key 'experiment.label_smoothing' must be in (0, 1), got {e.label_smoothing}.")
    require(e.patience > 0 and e.claim_seeds > 0 and e.histogram_range > 0,
            "config keys 'experiment.patience', 'experiment.claim_seeds' and 'experiment.histogram_range' must be > 0.")
    require_workers(config)
    require(not ({"weight_decay", "dropout+decay"} & set(runs)) or config.optim.name in chains.WITH_WEIGHT_DECAY,
            f"the weight-decay runs need optim.name to be one of {', '.join(chains.WITH_WEIGHT_DECAY)}, "
            f"got {config.optim.name!r}.")
    require(not ({"early_stopping"} & set(runs)) or config.data.validation_size > 0,
            "the early_stopping run needs a validation split; set data.validation_size > 0.")


def _seconds(value) -> str:
    return f"{value:6.1f}" if value is not None else "     -"


def run_config(config: ml_collections.ConfigDict, name: str, seed: int) -> ml_collections.ConfigDict:
    c = copy.deepcopy(config)
    c.seed = seed
    for key, value in changes(config.experiment)[name].items():
        group, field = key.split(".")
        c[group][field] = value
    return c


def row_of(name: str, seed: int, r: dict) -> dict:
    """The table row of one run (accuracies as fractions, losses in nats)."""
    train, test = r["splits"]["train"], r["splits"]["test"]
    return {"run": name, "seed": seed, "train_accuracy": train["accuracy"], "test_accuracy": test["accuracy"],
            "gap": train["accuracy"] - test["accuracy"], "train_loss": train["loss"], "test_loss": test["loss"],
            "loss_gap": test["loss"] - train["loss"], "epochs": r["epochs"], "kept_epoch": r["kept_step"] / r["steps_per_epoch"],
            "early_stopped": r["early_stopped_at"] is not None, "wall_s": r["wall_s"],
            "first_layer_std": r["weights"]["std"], "weights_l2_norm": r["weights"]["weights_l2_norm"]}


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, claims: Claims) -> dict:
    e = config.experiment
    splits, source = image_datasets.load_splits(config.data.source, config.data.name,
                                                config.data.tfds_data_dir or None)
    carved = ic.carve(splits, config.data.train_size, config.data.validation_size, config.seed)
    print(f"data: {source}; train {len(carved['train'])}, validation {len(carved.get('validation', []))}, "
          f"test {len(carved['test'])}; model hidden {tuple(config.model.hidden)}, {config.optim.name} "
          f"lr {config.optim.learning_rate} ({config.optim.schedule}), batch {config.train.batch_size}, "
          f"{config.train.num_epochs} epochs")
    print(f"  {'run':16s} {'seed':>4s} {'train acc':>9s} {'test acc':>8s} {'gap':>6s} {'test loss':>9s} "
          f"{'epochs':>6s} {'wall s':>6s}")
    results: dict = {"data_source": source, "rows": []}
    trained: dict[str, dict] = {}
    runs = [(name, config.seed + i) for name in e.runs for i in range(e.claim_seeds if name in CLAIM_RUNS else 1)]
    folders = [name.replace("+", "_and_") + ("" if seed == config.seed else f"_seed{seed}") for name, seed in runs]
    jobs = [(run_config(config, name, seed), workdir / folder) for (name, seed), folder in zip(runs, folders)]
    measured = ic.train_each_or_reuse(jobs, splits, source, workers=e.workers)
    for (name, seed), folder, r in zip(runs, folders, measured):
        r["folder"] = folder
        if seed == config.seed:
            trained[name] = r
        row = row_of(name, seed, r)
        results["rows"].append(row)
        print(f"  {name:16s} {seed:4d} {100 * row['train_accuracy']:8.1f}% {100 * row['test_accuracy']:7.1f}% "
              f"{100 * row['gap']:5.1f}p {row['test_loss']:9.3f} {row['epochs']:6.0f} {_seconds(row['wall_s'])}",
              flush=True)

    rows = results["rows"]
    mean_gap = {name: float(np.mean([r["gap"] for r in rows if r["run"] == name])) for name in e.runs}
    results["mean_gap"] = mean_gap
    if "baseline" in trained:
        c = trained["baseline"]["curves"]
        test = np.asarray(c["eval_accuracy"])
        half = len(test) // 2
        gain = 100 * (test[-1] - test[half - 1]) if half > 0 else float("nan")
        train_acc = trained["baseline"]["splits"]["train"]["accuracy"]
        results["baseline_test_gain_second_half_points"] = gain
        claims.check("baseline_overfits", train_acc >= OVERFIT_TRAIN_ACCURACY and gain < STALL_POINTS,
                     f"baseline: train accuracy >= {100 * OVERFIT_TRAIN_ACCURACY:.0f}% while test accuracy gains "
                     f"< {STALL_POINTS} point over the second half of training",
                     {"train_accuracy": train_acc, "test_gain_points": gain})
    if all(name in trained for name in CLAIM_RUNS):
        claims.check("dropout_and_decay_shrink_gap", mean_gap["dropout+decay"] < mean_gap["baseline"],
                     f"dropout {e.dropout_rate} + weight decay {e.weight_decay}: smaller train/test accuracy gap than "
                     f"the baseline (mean over {e.claim_seeds} seeds)",
                     {"baseline": mean_gap["baseline"], "dropout+decay": mean_gap["dropout+decay"]})
    else:
        print("  (the gap claim needs the 'baseline' and 'dropout+decay' runs; not checked)")

    files = []
    curves = {}
    for name, r in trained.items():
        c = r["curves"]
        curves[name] = {"epoch": np.asarray(c["eval_epoch"]), "test_accuracy": np.asarray(c["eval_accuracy"]),
                        "train_accuracy": np.asarray(c["train_accuracy"]),
                        "eval_name": "validation" if name == "early_stopping" else "test"}
    files.append(save_figure(figures.train_test_curves(curves), workdir / "train_test_curves.png").name)
    hists = {}
    for name in ("baseline", "dropout+decay", "l2"):
        if name in trained:
            kernel = np.load(workdir / trained[name]["folder"] / "first_layer_kernel.npy")
            edges = np.linspace(-e.histogram_range, e.histogram_range, 81)
            counts, _ = np.histogram(np.clip(kernel, edges[0], edges[-1]), edges)
            hists[name] = {"edges": edges, "counts": counts, "std": float(kernel.std())}
    if hists:
        files.append(save_figure(figures.weight_histograms(hists), workdir / "weight_histograms.png").name)
    if "early_stopping" in trained:
        r = trained["early_stopping"]
        c = r["curves"]
        reference = None
        if "baseline" in trained:
            b = trained["baseline"]["curves"]
            reference = {"epoch": np.asarray(b["eval_epoch"]), "test_loss": np.asarray(b["eval_loss"])}
        stop = r["early_stopped_at"] / r["steps_per_epoch"] if r["early_stopped_at"] is not None else None
        fig = figures.early_stopping(np.asarray(c["eval_epoch"]), np.asarray(c["eval_loss"]),
                                     best_epoch=r["kept_step"] / r["steps_per_epoch"], stop_epoch=stop,
                                     reference=reference)
        files.append(save_figure(fig, workdir / "early_stopping.png").name)
    results["figures"] = files
    return results


def cli(argv=None) -> int:
    """The command line: ``--workdir``, ``--config``, ``--config.KEY=VALUE``; returns the exit status."""
    return main(run, script=__file__,
                description="Chapter 5: regularisation", default_workdir="runs/05_regularisation",
                default_config="configs/mnist_regularisation.py", validate=validate, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
