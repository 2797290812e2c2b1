"""Chapter 3: hand-written backprop equals jax.grad; XOR by gradient descent over hundreds of seeds.

    python experiments/03_backprop.py [--workdir runs/03_backprop] [--config configs/backprop.py]
                                      [--config.xor.num_seeds=256 ...]

Writes ``loss_by_lr.png``, ``success_by_arch.png``, ``grad_norms.png`` and ``results.json``
into the workdir; exits 1 if a claim fails.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import ml_collections
import numpy as np

from p2t_jax.chapters import backprop, xor_training
from p2t_jax.configuration import require, require_choice, require_positive
from p2t_jax.experiment import Claims, main
from p2t_jax.viz import backprop_figures as figures
from p2t_jax.viz.style import save_figure


def validate(config: ml_collections.ConfigDict) -> None:
    x = config.xor
    require_positive(config, "gradcheck.num_shapes", "gradcheck.max_width", "gradcheck.max_layers",
                     "gradcheck.max_batch", "gradcheck.tolerance", "xor.num_seeds", "xor.num_steps",
                     "xor.smooth_lr", "xor.sweep_hidden", "xor.rise_tolerance", "xor.oscillation_share",
                     "xor.timing_repeats", "plot.points")
    require_choice(config, "xor.activation", tuple(backprop.DERIVATIVES))
    require_choice(config, "xor.loss", backprop.LOSSES)
    require(x.num_steps >= 2, f"config key 'xor.num_steps' must be at least 2, got {x.num_steps!r}.")
    require(len(x.hidden_widths) > 0 and all(isinstance(h, int) and h > 0 for h in x.hidden_widths),
            f"config key 'xor.hidden_widths' must hold positive integers, got {x.hidden_widths!r}.")
    require(len(x.learning_rates) > 0 and all(isinstance(lr, (int, float)) and lr > 0 for lr in x.learning_rates),
            f"config key 'xor.learning_rates' must hold positive numbers, got {x.learning_rates!r}.")
    require(x.smooth_lr in x.learning_rates,
            f"config key 'xor.learning_rates' must include xor.smooth_lr = {x.smooth_lr!r}, got {x.learning_rates!r}.")
    require(x.sweep_hidden in x.hidden_widths,
            f"config key 'xor.hidden_widths' must include xor.sweep_hidden = {x.sweep_hidden!r}, "
            f"got {x.hidden_widths!r}.")
    lo, hi = config.plot.band
    require(0 <= lo < hi <= 1,
            f"config key 'plot.band' must be two quantiles 0 <= lo < hi <= 1, got {config.plot.band!r}.")


def gradient_checks(config: ml_collections.ConfigDict, key: jax.Array) -> list[dict]:
    """Hand gradients against jax.grad (float64) on random shapes; per shape the worst difference."""
    g = config.gradcheck
    rng = np.random.default_rng(config.seed)
    checks = []
    with jax.enable_x64(True):
        for i in range(g.num_shapes):
            layers = int(rng.integers(1, g.max_layers + 1))
            widths = tuple(int(w) for w in rng.integers(1, g.max_width + 1, size=layers + 1))
            batch = int(rng.integers(1, g.max_batch + 1))
            diffs = {k: float(v) for k, v in backprop.gradient_check(jax.random.fold_in(key, i), widths, batch).items()}
            checks.append({"widths": widths, "batch": batch, "max_grad_diff": max(
                v for k, v in diffs.items() if not k.endswith("/loss")), "max_loss_diff": max(
                v for k, v in diffs.items() if k.endswith("/loss")), "per_case": diffs})
    return checks


def summarise(trace: xor_training.Trace, rel_tol: float) -> dict:
    """Numbers for one architecture x learning rate over all seeds."""
    acc = np.asarray(trace.final_accuracy)
    rise = np.asarray(xor_training.rise_share(trace.loss, rel_tol))
    final_loss = np.asarray(trace.final_loss)
    counts = {f"{level:.2f}": int(np.sum(np.isclose(acc, level))) for level in (1.0, 0.75, 0.5, 0.25, 0.0)}
    reached = np.asarray(trace.accuracy) == 1.0
    first = np.where(reached.any(1), reached.argmax(1), -1)
    return {
        "success_rate": float(np.mean(acc == 1.0)), "final_accuracy_counts": counts,
        "rise_share_median": float(np.median(rise)), "rise_share_q90": float(np.quantile(rise, 0.9)),
        "rise_share_max": float(rise.max()),
        "final_loss_median": float(np.nanmedian(np.where(np.isfinite(final_loss), final_loss, np.nan))),
        "non_finite_runs": int(np.sum(~np.isfinite(final_loss))),
        "steps_to_100pct_median": float(np.median(first[first >= 0])) if np.any(first >= 0) else None,
    }


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, claims: Claims) -> dict:
    x = config.xor
    k_check, k_runs = jax.random.split(jax.random.PRNGKey(config.seed))
    results: dict = {}

    # 1. The hand-written backward pass against jax.grad, float64, random shapes.
    checks = gradient_checks(config, k_check)
    worst = max(c["max_grad_diff"] for c in checks)
    results["gradcheck"] = {"checks": checks, "max_grad_diff": worst}
    print(f"gradient check (float64): {len(checks)} random shapes {[c['widths'] for c in checks]} x "
          f"{{sigmoid, tanh, relu}} x {{bce, mse}}: max |hand - jax.grad| = {worst:.2e}")
    claims.check("backprop_matches_jax_grad", worst <= config.gradcheck.tolerance,
                 f"hand-written gradients equal jax.grad to {config.gradcheck.tolerance:g} in float64", worst)

    # 2. Architectures at the smooth learning rate: every seed at once, timed against a Python loop.
    keys = jax.random.split(k_runs, x.num_seeds)
    names = {h: f"2-{h}-1" for h in x.hidden_widths}
    traces, archs = {}, {}
    print(f"XOR, {x.activation} hidden units, {x.loss} loss, full-batch gradient descent, {x.num_steps} steps, "
          f"{x.num_seeds} seeds, lr {x.smooth_lr:g}:")
    for h in x.hidden_widths:
        trace, timing = xor_training.timed_sweep((h, 1), x.activation, x.loss, x.num_steps, keys, x.smooth_lr,
                                                 repeats=x.timing_repeats)
        traces[h] = trace
        archs[names[h]] = dict(summarise(trace, x.rise_tolerance), timing=timing)
        a = archs[names[h]]
        print(f"  {names[h]}: success {a['success_rate']:.1%}; final accuracy counts {a['final_accuracy_counts']}; "
              f"all {x.num_seeds} runs: vmap {timing['vmap_s'] * 1e3:.0f} ms vs Python loop "
              f"{timing['loop_s'] * 1e3:.0f} ms (x{timing['speedup']:.1f}); counting compilation "
              f"{timing['first_call_vmap_s']:.2f} s vs {timing['first_call_single_s'] + timing['loop_s']:.2f} s "
              f"(x{timing['speedup_with_compile']:.1f})")
    results["architectures"] = archs
    for h in x.hidden_widths:  # stuck seeds' outputs for rows 00 01 10 11: which minimum they sit in
        acc, probs = np.asarray(traces[h].final_accuracy), np.asarray(traces[h].final_probs)
        final_loss = np.asarray(traces[h].final_loss)
        last_grad = np.asarray(traces[h].grad_norms)[:, -1].sum(-1)  # sum over layers, last step
        archs[names[h]]["last_grad_norm_median_solved"] = float(np.median(last_grad[acc == 1.0])) \
            if np.any(acc == 1.0) else None
        stuck = {}
        for level in (0.75, 0.5, 0.25, 0.0):
            seeds = np.flatnonzero(np.isclose(acc, level))
            if len(seeds):
                examples = np.round(probs[seeds[:3]].astype(float), 3)
                stuck[f"{level:.2f}"] = {"seeds": seeds.tolist(), "first_outputs": examples,
                                         "final_loss_median": float(np.median(final_loss[seeds])),
                                         "last_grad_norm_median": float(np.median(last_grad[seeds]))}
                print(f"    {names[h]} stuck at {level:.0%} on {len(seeds)} seeds (final loss median "
                      f"{np.median(final_loss[seeds]):.3f}, last gradient norm median {np.median(last_grad[seeds]):.1e}"
                      f" vs {archs[names[h]]['last_grad_norm_median_solved']:.1e} when solved), e.g. seed {seeds[0]}: "
                      f"outputs {examples[0].tolist()} for rows 00 01 10 11")
        archs[names[h]]["stuck"] = stuck
    wide, narrow = names[max(x.hidden_widths)], names[min(x.hidden_widths)]
    claims.check("wide_converges_all_seeds", archs[wide]["success_rate"] == 1.0,
                 f"{wide} at lr {x.smooth_lr:g} reaches 100% accuracy on every seed", archs[wide]["success_rate"])
    if narrow != wide:
        claims.check("narrow_stuck_on_some_seeds",
                     archs[narrow]["success_rate"] < archs[wide]["success_rate"],
                     f"{narrow} gets stuck below 100% on some seeds where {wide} converges on all",
                     {narrow: archs[narrow]["final_accuracy_counts"], wide: archs[wide]["final_accuracy_counts"]})
    claims.check("vmap_equals_loop", all(a["timing"]["loop_matches_vmap"] == 1.0 for a in archs.values()),
                 "the vmapped sweep and the Python loop give the same final accuracy on every seed",
                 {n: a["timing"]["loop_matches_vmap"] for n, a in archs.items()})

    # 3. Learning rates on the sweep architecture (one compile serves every rate).
    sweep = xor_training.make_sweep((x.sweep_hidden, 1), x.activation, x.loss, x.num_steps)
    lrs = sorted(x.learning_rates)
    by_lr, losses = {}, {}
    for lr in lrs:
        trace = traces[x.sweep_hidden] if lr == x.smooth_lr else sweep(keys, lr)
        by_lr[lr] = summarise(trace, x.rise_tolerance)
        losses[lr] = np.asarray(trace.loss)
    xs, ys = xor_training.xor_data()

    def sharpness_at_init(key):
        params = xor_training.init_params(key, (x.sweep_hidden, 1), x.activation)
        return xor_training.sharpness(params, xs, ys, x.activation, x.loss)

    sharp = np.asarray(jax.jit(jax.vmap(sharpness_at_init))(keys))
    edge = float(2.0 / np.median(sharp))
    oscillating = [lr for lr in lrs if by_lr[lr]["rise_share_median"] > x.oscillation_share]
    onset = min(oscillating) if oscillating else None
    results["learning_rates"] = {f"{lr:g}": v for lr, v in by_lr.items()}
    results["sharpness_at_init_median"] = float(np.median(sharp))
    results["stability_edge_2_over_sharpness"] = edge
    results["oscillation_onset_lr"] = onset
    name = names[x.sweep_hidden]
    print(f"{name} learning-rate sweep (a step 'rises' if the loss grows by > {x.rise_tolerance:g} of itself):")
    for lr in lrs:
        v = by_lr[lr]
        print(f"  lr {lr:5g}: success {v['success_rate']:6.1%}; rising steps median {v['rise_share_median']:.2%} "
              f"(90th pct {v['rise_share_q90']:.2%}, max {v['rise_share_max']:.2%}); final loss median "
              f"{v['final_loss_median']:.2e}; non-finite runs {v['non_finite_runs']}")
    print(f"  sharpness (top Hessian eigenvalue) at init: median {np.median(sharp):.3f} -> 2/sharpness = {edge:.2f}; "
          f"the median run oscillates (> {x.oscillation_share:.0%} rising steps) from lr "
          f"{onset if onset is None else f'{onset:g}'}")
    smooth = by_lr[x.smooth_lr]
    claims.check("smooth_lr_converges", smooth["success_rate"] == 1.0,
                 f"{name} at lr {x.smooth_lr:g}: 100% accuracy on every seed", smooth["success_rate"])
    claims.check("smooth_lr_falls_smoothly", smooth["rise_share_max"] <= x.oscillation_share,
                 f"{name} at lr {x.smooth_lr:g}: no seed raises the loss on more than {x.oscillation_share:.0%} of "
                 f"its steps", smooth["rise_share_max"])
    claims.check("high_lr_oscillates", onset is not None and onset > x.smooth_lr,
                 f"{name}: above some learning rate > {x.smooth_lr:g} the loss oscillates (median run > "
                 f"{x.oscillation_share:.0%} rising steps)", onset)
    if 1.0 in by_lr:
        lr1 = by_lr[1.0]
        results["observations"] = {"lr_1_oscillates": {
            "statement": "at learning rate 1.0 the loss oscillates",
            "reproduced": lr1["rise_share_median"] > x.oscillation_share,
            "rise_share_median": lr1["rise_share_median"], "rise_share_max": lr1["rise_share_max"]}}
        verdict = "holds" if results["observations"]["lr_1_oscillates"]["reproduced"] else "does NOT hold here"
        print(f"  note: 'lr 1.0 oscillates' {verdict}: at lr 1.0 the median run raises the loss on "
              f"{lr1['rise_share_median']:.2%} of steps (max over seeds {lr1['rise_share_max']:.2%})")

    # Figures.
    rise_medians = {lr: by_lr[lr]["rise_share_median"] for lr in lrs}
    files = [save_figure(figures.loss_by_lr(losses, rise_medians, points=config.plot.points,
                                            band=tuple(config.plot.band)), workdir / "loss_by_lr.png").name]
    files.append(save_figure(figures.success_by_arch({names[h]: np.asarray(traces[h].final_accuracy)
                                                      for h in x.hidden_widths}),
                             workdir / "success_by_arch.png").name)
    panels = {}
    for h in sorted(x.hidden_widths, reverse=True):
        norms = np.asarray(traces[h].grad_norms)  # [S, T, 2]
        ok = np.asarray(traces[h].final_accuracy) == 1.0
        series = {}
        for group, mask in (("converged", ok), ("stuck", ~ok)):
            if mask.any():
                for layer in range(norms.shape[2]):
                    series[f"layer {layer + 1}, {group}"] = norms[mask, :, layer]
        panels[f"{names[h]}, lr {x.smooth_lr:g}"] = series
    files.append(save_figure(figures.grad_norms(panels, points=config.plot.points), workdir / "grad_norms.png").name)
    results["figures"] = files
    return results


def cli(argv=None) -> int:
    """The command line: ``--workdir``, ``--config``, ``--config.KEY=VALUE``; returns the exit status."""
    return main(run, script=__file__, description="Chapter 3: backpropagation", default_workdir="runs/03_backprop",
                default_config="configs/backprop.py", validate=validate, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
