"""Chapter 6: on the same MNIST digits and the same training budget, a small CNN beats the MLP.

    python experiments/06_cnn.py [--workdir runs/06_cnn] [--config configs/mnist_cnn.py]
        [--config.experiment.seeds=5]

Runs (each through the one training loop, in ``WORKDIR/<run>/``): the config's CNN and the
fully connected baseline (``experiment.mlp_hidden``, chapter 4's 784-128-10 MLP) with
``experiment.seeds`` seeds each, then one more CNN per ``experiment.cnn_sizes`` and MLP per
``experiment.mlp_sizes`` (seed ``seed``) for the accuracy-vs-parameters figure. Every run
has the config's data, optimiser, batch size and epochs; accuracy is measured at the end
in evaluation mode on the test split.

Claims checked: the CNN's worst seed beats the MLP's best seed on test accuracy (mean ±
std over the seeds printed), with at least 100 times fewer first-layer weights (both counts
printed). Writes ``filters.png`` (the first conv layer's learned kernels),
``feature_maps.png`` (one test digit layer by layer), ``accuracy_vs_parameters.png`` and
``results.json``; exits 1 if a claim fails. A finished run found in its folder (same
config) is read back instead of trained again; an interrupted one resumes.

Run time: ``experiment.workers`` (2) runs train side by side, each in a worker process
(:func:`p2t_jax.tasks.image_classification.train_each_or_reuse`); the numbers do not depend
on it. Every run trains the config's epochs (5: the comparison has settled, see
``configs/mnist_cnn.py``; nothing stops early) and saves every 5 epochs and at the end
(``train.save_on_eval = False``). Runs of one shape (the seeds) share their compiled programs
through the persistent compilation cache when one is set (``p2t reproduce`` sets it).
"""

from __future__ import annotations

import copy
import pathlib
import sys

import ml_collections
import numpy as np

from p2t_jax.chapters import convolution
from p2t_jax.configuration import require
from p2t_jax.data import image_datasets
from p2t_jax.experiment import Claims, main, require_workers
from p2t_jax.tasks import image_classification as ic
from p2t_jax.training.loop import restore_state
from p2t_jax.viz import chapter06_07 as figures
from p2t_jax.viz.style import save_figure

FIRST_LAYER_RATIO = 100  # the CNN's first layer must hold at least this many times fewer weights


def _widths(value, key: str) -> tuple:
    value = tuple(value)
    require(len(value) > 0 and all(isinstance(w, int) and w > 0 for w in value),
            f"config key '{key}' must hold positive widths, got {value!r}.")
    return value


def validate(config: ml_collections.ConfigDict) -> None:
    ic.validate(config)
    e = config.experiment
    require(config.model.name == "cnn", f"config key 'model.name' must be cnn for this experiment, got "
                                        f"{config.model.name!r}.")
    _widths(e.mlp_hidden, "experiment.mlp_hidden")
    for size in e.cnn_sizes:
        _widths(size, "experiment.cnn_sizes")
    for size in e.mlp_sizes:
        _widths(size, "experiment.mlp_sizes")
    require(isinstance(e.seeds, int) and e.seeds >= 3,
            f"config key 'experiment.seeds' must be at least 3 (the claim is over seeds), got {e.seeds!r}.")
    require(e.digit >= 0, f"config key 'experiment.digit' must be >= 0, got {e.digit}.")
    require_workers(config)


def cnn_config(config: ml_collections.ConfigDict, features: tuple, seed: int) -> ml_collections.ConfigDict:
    c = copy.deepcopy(config)
    c.seed, c.model.conv_features = seed, tuple(features)
    return c


def mlp_config(config: ml_collections.ConfigDict, hidden: tuple, seed: int) -> ml_collections.ConfigDict:
    c = copy.deepcopy(config)
    c.seed, c.model.name, c.model.hidden = seed, "mlp", tuple(hidden)
    return c


def _label(c: ml_collections.ConfigDict) -> str:
    if c.model.name == "cnn":
        return "conv " + "-".join(map(str, c.model.conv_features)) + "".join(f"-{w}" for w in c.model.hidden)
    return "784-" + "-".join(map(str, c.model.hidden)) + f"-{c.model.num_classes}"


def _seconds(value) -> str:
    return f"{value:6.1f}" if value is not None else "     -"


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, claims: Claims) -> dict:
    e = config.experiment
    d = config.data
    splits, source = image_datasets.load_splits(d.source, d.name, d.tfds_data_dir or None)
    carved = ic.carve(splits, d.train_size, d.validation_size, config.seed)
    image_shape = tuple(carved["train"].images.shape[1:])
    print(f"data: {source}; train {len(carved['train'])}, test {len(carved['test'])}; {config.optim.name} "
          f"lr {config.optim.learning_rate}, batch {config.train.batch_size}, {config.train.num_epochs} epochs")
    print(f"  {'run':22s} {'seed':>4s} {'params':>8s} {'1st layer':>9s} {'test acc':>8s} {'train acc':>9s} "
          f"{'ms/step':>7s} {'wall s':>6s}")
    seeds = [config.seed + i for i in range(e.seeds)]
    jobs = [("cnn", cnn_config(config, config.model.conv_features, s)) for s in seeds]
    jobs += [("mlp", mlp_config(config, e.mlp_hidden, s)) for s in seeds]
    jobs += [("cnn", cnn_config(config, size, config.seed)) for size in e.cnn_sizes
             if tuple(size) != tuple(config.model.conv_features)]
    jobs += [("mlp", mlp_config(config, size, config.seed)) for size in e.mlp_sizes if tuple(size) != tuple(e.mlp_hidden)]
    rows, folders = [], {}
    names = [f"{family}_{_label(c).replace(' ', '_')}_seed{c.seed}" for family, c in jobs]
    measured = ic.train_each_or_reuse([(c, workdir / folder) for (_, c), folder in zip(jobs, names)], splits, source,
                                      workers=e.workers)
    for (family, c), folder, r in zip(jobs, names, measured):
        label = _label(c)
        counts = convolution.parameter_counts(c, image_shape)
        row = {"family": family, "label": label, "seed": c.seed, "folder": folder, **counts,
               "test_accuracy": r["test_accuracy"], "train_accuracy": r["splits"]["train"]["accuracy"],
               "test_loss": r["test_loss"], "ms_per_step": r["ms_per_step"], "wall_s": r["wall_s"],
               "steps": r["steps"]}
        rows.append(row)
        folders[(family, label, c.seed)] = folder
        ms = f"{row['ms_per_step']:7.2f}" if row["ms_per_step"] else "      -"
        print(f"  {label:22s} {c.seed:4d} {counts['parameters']:8,d} {counts['first_layer_weights']:9,d} "
              f"{100 * row['test_accuracy']:7.2f}% {100 * row['train_accuracy']:8.2f}% {ms} {_seconds(row['wall_s'])}",
              flush=True)

    main_labels = {"cnn": _label(cnn_config(config, config.model.conv_features, config.seed)),
                   "mlp": _label(mlp_config(config, e.mlp_hidden, config.seed))}
    summary = {}
    for family, label in main_labels.items():
        mine = [r for r in rows if r["family"] == family and r["label"] == label]
        summary[family] = {"label": label, "parameters": mine[0]["parameters"],
                           "first_layer_weights": mine[0]["first_layer_weights"],
                           "test_accuracy": convolution.summarise_seeds([r["test_accuracy"] for r in mine])}
    cnn, mlp = summary["cnn"], summary["mlp"]
    for family in ("cnn", "mlp"):
        s = summary[family]
        a = s["test_accuracy"]
        print(f"  {s['label']}: test accuracy {100 * a['mean']:.2f}% ± {100 * a['std']:.2f} (mean ± std over {a['n']} "
              f"seeds; {100 * a['min']:.2f}..{100 * a['max']:.2f}); {s['parameters']:,} parameters, first layer "
              f"{s['first_layer_weights']:,} weights")
    ratio = mlp["first_layer_weights"] / cnn["first_layer_weights"]
    claims.check("cnn_beats_mlp", cnn["test_accuracy"]["min"] > mlp["test_accuracy"]["max"],
                 f"same digits and budget: the CNN's worst seed beats the MLP's best ({e.seeds} seeds each)",
                 {"cnn": cnn["test_accuracy"], "mlp": mlp["test_accuracy"]})
    claims.check("far_fewer_first_layer_weights", ratio >= FIRST_LAYER_RATIO,
                 f"the CNN's first layer holds >= {FIRST_LAYER_RATIO}x fewer weights "
                 f"({cnn['first_layer_weights']:,} vs {mlp['first_layer_weights']:,})", ratio)

    files = []
    main_cnn = workdir / folders[("cnn", main_labels["cnn"], config.seed)]
    kernel = np.load(main_cnn / "first_layer_kernel.npy")
    files.append(save_figure(figures.conv_filters(
        kernel, f"learned first-layer filters ({kernel.shape[0]}x{kernel.shape[1]}, {kernel.shape[-1]} channels)"),
        workdir / "filters.png").name)
    run_cfg = ic.run_config(cnn_config(config, config.model.conv_features, config.seed))
    task, batches, resolved = ic.build_with_batches(run_cfg, splits=splits, source=source)
    state, _ = restore_state(task.init_variables, resolved, main_cnn)
    test = batches.splits["test"]
    digit = min(e.digit, len(test) - 1)
    image = test.images[digit].astype(np.float32) / 255.0
    maps = convolution.feature_maps(ic.make_model(resolved), {"params": state.params}, image)
    files.append(save_figure(figures.feature_maps(image, maps, str(int(test.labels[digit]))),
                             workdir / "feature_maps.png").name)
    families = {}
    for family, name in (("cnn", "CNN"), ("mlp", "MLP")):
        points = []
        for label in dict.fromkeys(r["label"] for r in rows if r["family"] == family):
            mine = [r for r in rows if r["family"] == family and r["label"] == label]
            s = convolution.summarise_seeds([r["test_accuracy"] for r in mine])
            points.append({"label": label, "parameters": mine[0]["parameters"], "mean": s["mean"], "std": s["std"],
                           "first_layer_weights": mine[0]["first_layer_weights"], "seeds": s["n"]})
        families[name] = points
    files.append(save_figure(figures.accuracy_vs_parameters(families), workdir / "accuracy_vs_parameters.png").name)
    return {"data_source": source, "rows": rows, "summary": summary, "first_layer_ratio": ratio,
            "accuracy_vs_parameters": families, "figures": files}


def cli(argv=None) -> int:
    """The command line: ``--workdir``, ``--config``, ``--config.KEY=VALUE``; returns the exit status."""
    return main(run, script=__file__, description="Chapter 6: convolutional networks", default_workdir="runs/06_cnn",
                default_config="configs/mnist_cnn.py", validate=validate, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
