"""Chapter 1: the perceptron learns AND, OR and NAND, never XOR, and obeys Novikoff's bound.

    python experiments/01_perceptron.py [--workdir runs/01_perceptron] [--config configs/perceptron.py]
                                        [--config.gates.num_seeds=100 ...]

Writes ``perceptron_and.png``, ``perceptron_xor.png``, ``perceptron_errors.png``,
``perceptron_bound.png`` and ``results.json`` into the workdir; exits 1 if a claim fails.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from p2t_jax.chapters import perceptron_rule
from p2t_jax.configuration import require, require_names, require_positive
from p2t_jax.data.logic import GATES, separable_points, truth_table
from p2t_jax.experiment import Claims, main
from p2t_jax.models.perceptron import init_params
from p2t_jax.viz import perceptron_figures as figures
from p2t_jax.viz.style import save_figure

NOT_SEPARABLE = ("XOR", "XNOR")


def validate(config: ml_collections.ConfigDict) -> None:
    require_names(config, "gates.names", GATES, "gate")
    require_positive(config, "gates.num_seeds", "gates.num_epochs", "gates.learning_rate", "separable.num_datasets",
                     "separable.num_points", "separable.dim", "separable.margin_min", "separable.num_epochs",
                     "separable.learning_rate", "plot.epochs", "plot.error_epochs")
    require(config.gates.init_scale >= 0,
            f"config key 'gates.init_scale' must be >= 0, got {config.gates.init_scale!r}.")
    s = config.separable
    require(s.margin_min <= s.margin_max < 1.0,
            f"config keys 'separable.margin_min' <= 'separable.margin_max' < 1 must hold (points live in [-1, 1]^D), "
            f"got {s.margin_min!r} and {s.margin_max!r}.")


def gate_runs(config: ml_collections.ConfigDict, key: jax.Array) -> dict[str, perceptron_rule.History]:
    """Every gate x every seed in one compiled call; gate name -> History with leading ``[S]``."""
    g = config.gates
    x, _ = truth_table("AND")
    ys = jnp.stack([truth_table(name)[1] for name in g.names])  # [G, 4]
    keys = jax.random.split(key, g.num_seeds)
    histories = perceptron_rule.train_many(x, ys, keys, lr=g.learning_rate, init_scale=g.init_scale,
                                           num_epochs=g.num_epochs, shuffle=g.shuffle)
    histories = jax.tree.map(np.asarray, histories)
    return {name: jax.tree.map(lambda a, i=i: a[i], histories) for i, name in enumerate(g.names)}


def separable_runs(config: ml_collections.ConfigDict, key: jax.Array) -> dict[str, np.ndarray]:
    """One run from zero weights on each random separable data set; per-set numbers ``[M]``."""
    s = config.separable

    def one(k):
        k_margin, k_data, k_order = jax.random.split(k, 3)
        margin = jnp.exp(jax.random.uniform(k_margin, (), minval=jnp.log(s.margin_min), maxval=jnp.log(s.margin_max)))
        data = separable_points(k_data, s.num_points, s.dim, margin)
        params = init_params(k_order, s.dim, 0.0)
        _, history = perceptron_rule.train(params, data["x"], data["y"], k_order, lr=s.learning_rate,
                                           num_epochs=s.num_epochs, shuffle=True)
        bound = perceptron_rule.convergence_bound(data["x"], data["y"], data["w"], data["b"])
        return {"updates": jnp.sum(history.mistakes), "final_errors": history.errors[-1],
                "converged_epoch": perceptron_rule.first_zero(history.errors) + 1,
                "margin": margin, "min_distance_over_margin": jnp.min(jnp.abs(data["distance"])) / margin, **bound}

    out = jax.jit(jax.vmap(one))(jax.random.split(key, s.num_datasets))
    return {k: np.asarray(v) for k, v in out.items()}


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, claims: Claims) -> dict:
    k_gates, k_sep = jax.random.split(jax.random.PRNGKey(config.seed))
    g = config.gates
    histories = gate_runs(config, k_gates)
    results: dict = {"gates": {}}
    print(f"gates: {g.num_seeds} seeds x {g.num_epochs} epochs, lr {g.learning_rate}, init scale {g.init_scale}")
    for name, h in histories.items():
        zero = perceptron_rule.first_zero(h.errors)  # [S], -1 where never
        row = {
            "seeds": g.num_seeds, "epochs": g.num_epochs,
            "seeds_reaching_zero_errors": int(np.sum(zero >= 0)),
            "seeds_at_zero_errors_at_end": int(np.sum(h.errors[:, -1] == 0)),
            "min_errors_any_epoch_any_seed": int(h.errors.min()),
            "epochs_to_zero_median": float(np.median(zero[zero >= 0] + 1)) if np.any(zero >= 0) else None,
            "epochs_to_zero_max": int(np.max(zero + 1)) if np.all(zero >= 0) else None,
            "updates_median": float(np.median(h.mistakes.sum(1))),
        }
        results["gates"][name] = row
        print(f"  {name:5s} reached 0 errors on {row['seeds_reaching_zero_errors']}/{g.num_seeds} seeds; "
              f"epochs to 0 errors median {row['epochs_to_zero_median']}, max {row['epochs_to_zero_max']}; "
              f"fewest errors seen {row['min_errors_any_epoch_any_seed']}")
        if name in NOT_SEPARABLE:
            claims.check(f"{name.lower()}_never_learned", row["min_errors_any_epoch_any_seed"] >= 1,
                         f"{name}: at least one error after every one of {g.num_epochs} epochs on all "
                         f"{g.num_seeds} seeds",
                         row["min_errors_any_epoch_any_seed"])
        else:
            claims.check(f"{name.lower()}_learned", row["seeds_at_zero_errors_at_end"] == g.num_seeds,
                         f"{name}: zero errors reached (and kept) on all {g.num_seeds} seeds",
                         row["seeds_at_zero_errors_at_end"])

    s = config.separable
    sep = separable_runs(config, k_sep)
    ratio = sep["updates"] / sep["bound"]
    results["separable"] = {
        "datasets": s.num_datasets, "points": s.num_points, "dim": s.dim,
        "margin_range": [s.margin_min, s.margin_max],
        "converged": int(np.sum(sep["final_errors"] == 0)),
        "updates_median": float(np.median(sep["updates"])), "updates_max": int(sep["updates"].max()),
        "bound_median": float(np.median(sep["bound"])), "bound_min": float(sep["bound"].min()),
        "bound_max": float(sep["bound"].max()),
        "updates_over_bound_max": float(ratio.max()), "updates_over_bound_median": float(np.median(ratio)),
        "epochs_to_zero_max": int(sep["converged_epoch"].max()),
        "nearest_point_over_margin_min": float(sep["min_distance_over_margin"].min()),
    }
    r = results["separable"]
    print(f"separable: {s.num_datasets} data sets of {s.num_points} points in {s.dim}-D, margins {s.margin_min} to "
          f"{s.margin_max}: updates median {r['updates_median']:.0f} (max {r['updates_max']}), bound (R/gamma)^2 "
          f"from {r['bound_min']:.0f} to {r['bound_max']:.0f}; largest updates/bound "
          f"{r['updates_over_bound_max']:.3f}; "
          f"last data set converged in epoch {r['epochs_to_zero_max']}")
    claims.check("separable_converged", r["converged"] == s.num_datasets,
                 f"separable data: zero errors on all {s.num_datasets} data sets", r["converged"])
    claims.check("within_novikoff_bound", bool(np.all(sep["updates"] <= sep["bound"])),
                 "separable data: updates <= (R/gamma)^2 on every data set", r["updates_over_bound_max"])

    # Figures: seed 0 of AND and XOR, errors per epoch over seeds, updates against the bound.
    x, _ = truth_table("AND")
    files = []
    for name, stem, settle in (("AND", "perceptron_and", True), ("XOR", "perceptron_xor", False)):
        if name not in histories:
            continue
        h = jax.tree.map(lambda a: a[0], histories[name])
        zero = int(perceptron_rule.first_zero(h.errors))
        epochs = min(config.plot.epochs, zero + 1) if (settle and zero >= 0) else config.plot.epochs
        title = (f"{name}: the line settles (epoch {zero + 1})" if settle and zero >= 0
                 else f"{name}: the line never settles (first {epochs} epochs)")
        fig = figures.decision_lines(x, truth_table(name)[1], h.w[:epochs], h.b[:epochs], h.errors[:epochs],
                                     title=title, shade_final=settle)
        files.append(save_figure(fig, workdir / f"{stem}.png").name)
    files.append(save_figure(figures.errors_per_epoch({n: h.errors for n, h in histories.items()},
                                                      epochs=config.plot.error_epochs),
                             workdir / "perceptron_errors.png").name)
    files.append(save_figure(figures.updates_vs_bound(sep["updates"], sep["bound"]),
                             workdir / "perceptron_bound.png").name)
    results["figures"] = files
    return results


def cli(argv=None) -> int:
    """The command line: ``--workdir``, ``--config``, ``--config.KEY=VALUE``; returns the exit status."""
    return main(run, script=__file__, description="Chapter 1: the perceptron", default_workdir="runs/01_perceptron",
                default_config="configs/perceptron.py", validate=validate, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
