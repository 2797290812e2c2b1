"""Chapter 7: batch normalisation and residual connections in deep MLPs on MNIST.

    python experiments/07_batchnorm_residual.py [--workdir runs/07_batchnorm_residual]
        [--config configs/deep_nets.py] [--config.experiment.seeds=3]

Trains, through the one training loop, every net in {plain, residual} x {without, with
batch norm} x ``experiment.depths`` (``WORKDIR/<net>_depth<D>_seed<S>/``), each with the
config's data, optimiser (SGD with momentum) and budget. Every run logs each layer's kernel
gradient norm and the mean and std of each ReLU's input as training metrics; the metrics at
initialisation are those of the loop's first step on the same fresh state.

Claims checked (at ``experiment.claim_depth``, means over ``experiment.seeds``):

* without batch norm, the plain net's layer-1 gradient norm is at least
  ``experiment.gradient_ratio`` times below the residual net's, at initialisation and
  after training (the last logged interval);
* with batch norm, every layer's pre-activations (the ReLU inputs) stay near mean 0 / std 1
  at initialisation and at every logged step (``experiment.bn_mean_tolerance``,
  ``experiment.bn_std_range``), in the plain and the residual net; without it, in both,
  some layer leaves that band;
* deeper plain nets train worse: their final training loss (evaluation mode, whole
  training split) rises with every added depth, to at least
  ``experiment.degradation_factor`` times the shallowest's; residual nets do not degrade
  that way: no residual net's loss rises above the shallowest residual net's by more than
  ``experiment.residual_rise_fraction`` of the plain nets' rise (both checked without and
  with batch norm). The residual nets' own ratio to their shallowest is recorded too
  (``observations``): they all fit the training set, and at losses of a few thousandths
  that ratio is not small.

Also measured (no claim): the claim-depth residual net without BN with its branches at the
plain net's initial scale, and, with ``experiment.compare_adam``, both nets without BN
trained with Adam. Writes ``grad_norms.png``, ``preactivations.png``, ``loss_by_depth.png``
and ``results.json``; exits 1 if a claim fails.

Run time: ``experiment.workers`` (2) nets train side by side, the deepest first, each in a
worker process (:func:`p2t_jax.tasks.image_classification.train_each_or_reuse`); the numbers
do not depend on it. The metrics at initialisation are the loop's own first step, kept in
each run's ``result.json`` (``first_step``), so no net's step is compiled twice. Every net
trains the config's steps (496: the measures have settled, see ``configs/deep_nets.py``);
nothing stops early (the degradation claims compare final losses).
"""

from __future__ import annotations

import copy
import pathlib
import sys
from collections.abc import Iterator

import ml_collections
import numpy as np

from p2t_jax.chapters import deep_nets
from p2t_jax.configuration import require
from p2t_jax.data import image_datasets
from p2t_jax.experiment import Claims, main, require_workers
from p2t_jax.tasks import image_classification as ic
from p2t_jax.training.metrics import read_metrics
from p2t_jax.viz import chapter06_07 as figures
from p2t_jax.viz.style import save_figure

NETS = {"plain": (False, False), "residual": (True, False), "plain+BN": (False, True), "residual+BN": (True, True)}


def validate(config: ml_collections.ConfigDict) -> None:
    ic.validate(config)
    e = config.experiment
    require(config.model.name == "deep_mlp",
            f"config key 'model.name' must be deep_mlp for this experiment, got {config.model.name!r}.")
    depths = tuple(e.depths)
    require(len(depths) >= 2 and all(isinstance(d, int) and d >= 1 for d in depths) and list(depths) == sorted(set(depths)),
            f"config key 'experiment.depths' must hold two or more increasing depths >= 1, got {depths!r}.")
    require(e.claim_depth in depths, f"config key 'experiment.claim_depth' ({e.claim_depth}) must be one of "
                                     f"experiment.depths {depths}.")
    require(isinstance(e.seeds, int) and e.seeds >= 1, f"config key 'experiment.seeds' must be >= 1, got {e.seeds!r}.")
    require(e.gradient_ratio > 1 and e.degradation_factor > 1,
            "config keys 'experiment.gradient_ratio' and 'experiment.degradation_factor' must be > 1.")
    low, high = tuple(e.bn_std_range)
    require(e.bn_mean_tolerance > 0 and 0 < low < 1 < high,
            f"config keys 'experiment.bn_mean_tolerance' must be > 0 and 'experiment.bn_std_range' a (low < 1 < high) "
            f"pair, got {e.bn_mean_tolerance} and {tuple(e.bn_std_range)}.")
    require(0 < e.residual_rise_fraction < 1,
            f"config key 'experiment.residual_rise_fraction' must be in (0, 1), got {e.residual_rise_fraction}.")
    require(e.adam_learning_rate > 0, "config key 'experiment.adam_learning_rate' must be > 0.")
    require_workers(config)


def net_config(config, net: str, depth: int, seed: int, **changes) -> ml_collections.ConfigDict:
    c = copy.deepcopy(config)
    c.model.residual, c.model.batch_norm = NETS[net]
    c.model.depth, c.seed = depth, seed
    for key, value in changes.items():
        group, field = key.split("__")
        c[group][field] = value
    return c


def measure(jobs: list[tuple[ml_collections.ConfigDict, pathlib.Path]], splits, source,
            workers: int = 1) -> Iterator[dict]:
    """Trains (or reads back) each ``(config, folder)`` net, ``workers`` side by side; yields each
    in order, with its logged training records and its first-step metrics (the loop's own first
    step, kept in its result; measured again only for a run resumed part-way)."""
    for (config, folder), r in zip(jobs, ic.train_each_or_reuse(jobs, splits, source, workers=workers)):
        r["records"] = read_metrics(folder, "train")
        r["records"] = list({rec["step"]: rec for rec in r["records"]}.values())  # the last record per step wins
        if r.get("first_step") is None:
            task, _, resolved = ic.build_with_batches(config, splits=splits, source=source)
            r["first_step"] = deep_nets.first_step_metrics(task, resolved)
        r["init"] = r["first_step"]
        yield r


def _fmt(mean: float, std: float) -> str:
    return f"{mean:+.2f}/{std:<7.3g}"


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, claims: Claims) -> dict:
    e = config.experiment
    d = config.data
    splits, source = image_datasets.load_splits(d.source, d.name, d.tfds_data_dir or None)
    carved = ic.carve(splits, d.train_size, d.validation_size, config.seed)
    seeds = [config.seed + i for i in range(e.seeds)]
    steps = config.train.num_epochs * (len(carved["train"]) // config.train.batch_size) or config.train.num_steps
    print(f"data: {source}; train {len(carved['train'])}; width {config.model.width}; {config.optim.name} lr "
          f"{config.optim.learning_rate}, batch {config.train.batch_size}, {steps} steps; depths {tuple(e.depths)}; "
          f"seeds {seeds}")
    print(f"  {'net':12s} {'depth':>5s} {'seed':>4s} {'train loss':>10s} {'train acc':>9s} {'test acc':>8s} "
          f"{'|g1| init':>10s} {'|g1| end':>10s} {'wall s':>6s}")
    runs: dict[tuple, dict] = {}
    keys = [(net, depth, seed) for net in NETS for depth in e.depths for seed in seeds]
    jobs = [(net_config(config, net, depth, seed), workdir / f"{net.replace('+', '_')}_depth{depth}_seed{seed}")
            for net, depth, seed in keys]
    if e.compare_adam:  # not claims: both nets without BN at the claim depth, trained with Adam
        adam = {net: (net_config(config, net, e.claim_depth, config.seed, optim__name="adam",
                                 optim__learning_rate=e.adam_learning_rate),
                      workdir / f"{net}_depth{e.claim_depth}_adam") for net in ("plain", "residual")}
        jobs += list(adam.values())
    # the deepest first: side by side, the longest runs start first
    order = sorted(range(len(jobs)), key=lambda i: -jobs[i][0].model.depth)
    measured = dict(zip(order, measure([jobs[i] for i in order], splits, source, e.workers)))
    for i, key in enumerate(keys):
        net, depth, seed = key
        r = runs[key] = measured[i]
        g1 = "grad_norm/" + deep_nets.layer_names(r["init"], "grad_norm")[0]
        wall = f"{r['wall_s']:6.1f}" if r["wall_s"] is not None else "     -"
        print(f"  {net:12s} {depth:5d} {seed:4d} {r['splits']['train']['loss']:10.4f} "
              f"{100 * r['splits']['train']['accuracy']:8.2f}% {100 * r['test_accuracy']:7.2f}% "
              f"{r['init'][g1]:10.3g} {r['records'][-1][g1]:10.3g} {wall}", flush=True)

    D = e.claim_depth
    results: dict = {"data_source": source, "steps": steps, "seeds": seeds, "nets": {}}

    def mean_over_seeds(fn, net, depth=D):
        return float(np.mean([fn(runs[(net, depth, s)]) for s in seeds]))

    # 1. the layer-1 gradient, plain vs residual, without batch norm
    names = deep_nets.layer_names(runs[("plain", D, seeds[0])]["init"], "grad_norm")
    g1 = f"grad_norm/{names[0]}"
    grad = {net: {"init": mean_over_seeds(lambda r: r["init"][g1], net),
                  "end": mean_over_seeds(lambda r: r["records"][-1][g1], net)} for net in NETS}
    results["layer1_grad_norm"] = grad
    ratios = {when: grad["residual"][when] / grad["plain"][when] for when in ("init", "end")}
    print(f"\n  layer-1 gradient norm at depth {D} (mean over seeds): " + "; ".join(
        f"{net} {v['init']:.3g} at init, {v['end']:.3g} after {steps} steps" for net, v in grad.items()))
    claims.check("plain_layer1_gradient_vanishes",
                 min(ratios.values()) >= e.gradient_ratio,
                 f"depth {D}, no BN: the plain net's layer-1 gradient norm is >= {e.gradient_ratio:g}x below the "
                 f"residual net's at initialisation and after {steps} steps", ratios)

    # 2. pre-activation statistics by layer, with and without batch norm
    band = (e.bn_mean_tolerance, tuple(e.bn_std_range))
    stats, leaves = {}, {}
    for net in NETS:
        per_seed = []
        for s in seeds:
            r = runs[(net, D, s)]
            rows = [r["init"]] + r["records"]
            means, stds = deep_nets.layer_series(rows, "preact_mean"), deep_nets.layer_series(rows, "preact_std")
            per_seed.append((means, stds, [0] + [rec["step"] for rec in r["records"]]))
            leaves.setdefault(net, []).append(deep_nets.out_of_band(means, stds, *band))
        stats[net] = {"mean": per_seed[0][0], "std": per_seed[0][1], "steps": np.asarray(per_seed[0][2])}
    print(f"\n  ReLU inputs by layer at depth {D} (seed {seeds[0]}): mean/std at initialisation -> after {steps} steps")
    print("  layer  " + "".join(f"{net:>34s}" for net in NETS))
    for layer in range(D):
        cells = [f"{_fmt(stats[n]['mean'][0, layer], stats[n]['std'][0, layer])} -> "
                 f"{_fmt(stats[n]['mean'][-1, layer], stats[n]['std'][-1, layer])}" for n in NETS]
        print(f"  {layer + 1:5d}  " + "".join(f"{c:>34s}" for c in cells))
    outside = {net: int(sum(x.sum() for x in leaves[net])) for net in NETS}
    checked = {net: int(sum(x.size for x in leaves[net])) for net in NETS}
    results["preactivations"] = {net: {"mean": stats[net]["mean"], "std": stats[net]["std"],
                                       "steps": stats[net]["steps"], "out_of_band": outside[net],
                                       "checked": checked[net]} for net in NETS}
    lo, hi = band[1]
    claims.check("bn_keeps_preactivations_normal", outside["plain+BN"] == 0 and outside["residual+BN"] == 0,
                 f"depth {D}, with BN: every layer's ReLU input has |mean| <= {band[0]:g} and std in [{lo:g}, {hi:g}] "
                 f"at init and at every logged step (plain and residual)",
                 {n: f"{outside[n]} of {checked[n]} outside" for n in ("plain+BN", "residual+BN")})
    claims.check("without_bn_preactivations_drift", outside["plain"] > 0 and outside["residual"] > 0,
                 f"depth {D}, without BN: some layer's ReLU input leaves that band (plain and residual)",
                 {n: f"{outside[n]} of {checked[n]} outside" for n in ("plain", "residual")})

    # 3. training loss by depth
    final = {net: {depth: mean_over_seeds(lambda r: r["splits"]["train"]["loss"], net, depth) for depth in e.depths}
             for net in NETS}
    results["final_train_loss"] = final
    print(f"\n  final training loss (evaluation mode, whole training split) by depth {tuple(e.depths)}:")
    for net in NETS:
        print(f"  {net:12s} " + "  ".join(f"{final[net][depth]:.4f}" for depth in e.depths))
    shallow = e.depths[0]
    observations = {}
    for bn, tag in ((False, "without_bn"), (True, "with_bn")):
        plain, residual = ("plain+BN", "residual+BN") if bn else ("plain", "residual")
        with_or_without = "with" if bn else "without"
        p = [final[plain][depth] for depth in e.depths]
        r = [final[residual][depth] for depth in e.depths]
        claims.check(f"deeper_plain_trains_worse_{tag}",
                     all(a < b for a, b in zip(p, p[1:])) and p[-1] >= e.degradation_factor * p[0],
                     f"{with_or_without} BN: the plain nets' training loss rises with every added depth, to >= "
                     f"{e.degradation_factor:g}x depth {shallow}'s", p)
        plain_rise, residual_rise = p[-1] - p[0], max(r) - r[0]
        claims.check(f"residual_does_not_degrade_{tag}", residual_rise <= e.residual_rise_fraction * plain_rise,
                     f"{with_or_without} BN: no residual net's training loss rises above depth {shallow}'s by more than "
                     f"{e.residual_rise_fraction:g} of the plain nets' rise", {"residual_rise": residual_rise,
                                                                            "plain_rise": plain_rise, residual: r})
        observations[f"residual_loss_ratio_to_shallowest_{tag}"] = max(r) / r[0]
        print(f"  {residual}: the deepest nets' training loss is up to {max(r) / r[0]:.2f}x depth {shallow}'s "
              f"(+{residual_rise:.4f}); {plain}: {p[-1] / p[0]:.1f}x (+{plain_rise:.4f})")
    results["observations"] = observations

    # not claims: the residual net at the plain net's initial scale, and Adam
    notes = {}
    c = net_config(config, "residual", D, config.seed, model__scale_residual_init=False)
    task, _, resolved = ic.build_with_batches(c, splits=splits, source=source)
    # the first step's measurements only (no update), compiled quickly (a note, not a claim)
    first = deep_nets.seed_rows(deep_nets.first_step_of_nets({"residual": task})(
        np.asarray([config.seed]), task.train_batch(0))["residual"])[0]
    last_std = f"preact_std/{deep_nets.layer_names(first, 'preact_std')[-1]}"
    notes["residual_unscaled_init"] = {"loss": first["loss"], "layer1_grad_norm": first[g1],
                                       "last_preact_std": first[last_std]}
    scaled = runs[("residual", D, config.seed)]["init"]
    print(f"\n  residual depth {D} without BN at initialisation: branches scaled 1/sqrt(depth): loss "
          f"{scaled['loss']:.3f}, last ReLU input std {scaled[last_std]:.3g}; unscaled: loss {first['loss']:.3f}, "
          f"last ReLU input std {first[last_std]:.3g}")
    if e.compare_adam:
        for j, net in enumerate(("plain", "residual")):
            r = measured[len(keys) + j]
            notes[f"{net}_adam"] = {"train_loss": r["splits"]["train"]["loss"], "test_accuracy": r["test_accuracy"],
                                    "layer1_grad_norm_init": r["init"][g1], "layer1_grad_norm_end": r["records"][-1][g1]}
            print(f"  {net} depth {D} without BN, Adam lr {e.adam_learning_rate:g}: training loss "
                  f"{r['splits']['train']['loss']:.4f}, test acc {100 * r['test_accuracy']:.2f}%, layer-1 gradient "
                  f"{r['init'][g1]:.3g} at init, {r['records'][-1][g1]:.3g} at the end")
    results["notes"] = notes

    # figures
    files = []
    layers = [n for n in names if n != "head"]
    panels = {}
    for bn in (False, True):
        series = {}
        for arch in ("plain", "residual"):
            net = arch + ("+BN" if bn else "")
            r = runs[(net, D, config.seed)]
            series[f"{arch}, at init"] = deep_nets.layer_series([r["init"]], "grad_norm", layers)[0]
            series[f"{arch}, after {steps} steps"] = deep_nets.layer_series(r["records"][-1:], "grad_norm", layers)[0]
        panels[f"depth {D}, {'with' if bn else 'without'} batch norm"] = series
    files.append(save_figure(figures.layer_grad_norms(panels), workdir / "grad_norms.png").name)
    keep = np.unique(np.linspace(0, len(stats["plain"]["steps"]) - 1, 6).round().astype(int))
    files.append(save_figure(figures.preactivation_stats(
        {net: {"mean": stats[net]["mean"][keep], "std": stats[net]["std"][keep]} for net in NETS},
        stats["plain"]["steps"][keep], band=tuple(e.bn_std_range)), workdir / "preactivations.png").name)
    curves = {net: {depth: {"step": np.asarray([rec["step"] for rec in runs[(net, depth, config.seed)]["records"]]),
                            "loss": np.asarray([rec["loss"] for rec in runs[(net, depth, config.seed)]["records"]])}
                    for depth in e.depths} for net in NETS}
    files.append(save_figure(figures.loss_by_depth(curves), workdir / "loss_by_depth.png").name)
    results["runs"] = [{"net": net, "depth": depth, "seed": seed, "train_loss": r["splits"]["train"]["loss"],
                        "train_accuracy": r["splits"]["train"]["accuracy"], "test_accuracy": r["test_accuracy"],
                        "layer1_grad_norm_init": r["init"][g1], "layer1_grad_norm_end": r["records"][-1][g1],
                        "wall_s": r["wall_s"], "ms_per_step": r["ms_per_step"]}
                       for (net, depth, seed), r in runs.items()]
    results["figures"] = files
    return results


def cli(argv=None) -> int:
    """The command line: ``--workdir``, ``--config``, ``--config.KEY=VALUE``; returns the exit status."""
    return main(run, script=__file__, description="Chapter 7: batch normalisation and residual connections",
                default_workdir="runs/07_batchnorm_residual", default_config="configs/deep_nets.py",
                validate=validate, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
