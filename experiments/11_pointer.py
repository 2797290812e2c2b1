"""Chapter 11: pointer networks sort numbers, find convex hulls and short tours, and carry over to longer inputs.

    python experiments/11_pointer.py [--workdir runs/11_pointer] [--config configs/pointer.py]
        [--config.experiment.problems="('sort',)"] [--config.experiment.hull.num_steps=8000 ...]

Each problem of ``experiment.problems`` (sort, hull, tsp) is one run of the training loop in
``WORKDIR/<problem>/`` (``data.problem`` and the fields of ``experiment.<problem>`` put into
the config; run again to resume or to reuse a finished run). The trained model then
decodes ``experiment.test_size`` fresh instances of every length in
``experiment.<problem>.test_lengths``, greedily and with a beam of ``decode.beam_width``, and
each output is measured (:func:`p2t_jax.tasks.pointer_metrics.output_metrics`).

Budget: sort 1,000, hull 1,500 and tsp 1,000 steps (``configs/pointer.py``, ``SETTINGS``), where
each claim has settled: sorting's per-pointer accuracy on the trained lengths is 99.0-99.8%,
the hulls' area coverage 96.0% / 98.5% at n = 5 / 10 and the beam tours 0.3% / 1.8% over
optimal (docs/chapter_11.md has these runs beside the former 2,000 / 4,000 / 3,000 steps).

Claims checked: sorting reaches ``experiment.claim_per_pointer`` greedy per-pointer
accuracy at every trained length, and at every longer tested length it stays above
``experiment.claim_floor`` (it degrades, but not to nothing); convex hulls of 5 and 10
points are covered to ``experiment.claim_hull_area`` of their area on average; beam-search
tours of 5 and 10 cities are within ``experiment.claim_tsp_excess`` of the optimal length on
average; and beam search finds outputs at least as likely as greedy decoding's (mean
log-likelihood, every problem). The paper's numbers are printed beside ours (their hull
model trained on 5-50 points for far longer). Writes ``pointer_attention.png``,
``accuracy_by_length.png``, ``hulls_and_tours.png`` and ``results.json``; exits 1 if a
claim fails.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
import sys
import time

import jax
import ml_collections
import numpy as np

from p2t_jax.configuration import require, require_names, require_positive
from p2t_jax.data import pointer as problems
from p2t_jax.experiment import Claims, main
from p2t_jax.tasks import pointer as pointer_task
from p2t_jax.tasks import pointer_metrics
from p2t_jax.training.loop import parameter_count, restore_state, train_and_evaluate
from p2t_jax.training.metrics import write_json
from p2t_jax.viz import chapter11 as figures
from p2t_jax.viz.style import save_figure


def run_config(config: ml_collections.ConfigDict, problem: str) -> ml_collections.ConfigDict:
    """The run config of one problem: ``data.problem`` and ``experiment.<problem>``'s fields put in,
    the ``experiment`` group left out."""
    c = copy.deepcopy(config)
    g = config.experiment[problem]
    with c.unlocked():
        del c["experiment"]
    c.data.problem = problem
    c.data.train_lengths = c.data.eval_lengths = tuple(g.train_lengths)
    c.data.max_length = g.max_length
    c.train.num_steps = g.num_steps
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    e = config.experiment
    for problem in require_names(config, "experiment.problems", problems.PROBLEMS, "problem"):
        c = run_config(config, problem)
        pointer_task.validate(c)
        lengths = tuple(e[problem].test_lengths)
        require(len(lengths) > 0, f"config key 'experiment.{problem}.test_lengths' must name at least one length.")
        problems.check_lengths(problem, lengths, c.data.max_length, f"config key 'experiment.{problem}.test_lengths'")
        pad_to = tuple(e[problem].get("pad_to", ()))
        require(all(isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= c.data.max_length for w in pad_to),
                f"config key 'experiment.{problem}.pad_to' must hold widths from 1 to data.max_length "
                f"({c.data.max_length}), got {pad_to!r}.")
    require_positive(config, "experiment.test_size", "experiment.claim_per_pointer", "experiment.claim_floor",
                     "experiment.claim_hull_area", "experiment.claim_tsp_excess")
    require(e.claim_per_pointer <= 1 and e.claim_floor <= 1 and e.claim_hull_area <= 1,
            "config keys 'experiment.claim_per_pointer', 'claim_floor' and 'claim_hull_area' are fractions: at most 1.")
    require(isinstance(e.num_drawn, int) and e.num_drawn >= 0,
            f"config key 'experiment.num_drawn' must be >= 0, got {e.num_drawn!r}.")
    if "sort" in e.problems:
        problems.instances("sort", [e.sort_example], e.sort.max_length)


def teacher_forced_only(loss_fn):
    """``loss_fn`` with its evaluation branch left out: the loop's evaluation measures the teacher-forced
    loss and accuracy alone, and decodes nothing (:func:`test_by_length` decodes and measures the outputs,
    with one compiled greedy decoder and one beam per padded width, instead of a third program of both)."""

    def teacher_forced(params, model_state, batch, rng, train):
        return loss_fn(params, model_state, batch, rng, True)

    return teacher_forced


def train(config: ml_collections.ConfigDict, folder: pathlib.Path) -> tuple[object, dict]:
    """Trains (or resumes, or reuses) one problem's run; returns its state and timing.

    The loop evaluates the teacher-forced loss (:func:`teacher_forced_only`). ``timing.json`` in
    the run folder adds up the training wall time over the calls that trained.
    """
    task, config = pointer_task.build(config)
    task = dataclasses.replace(task, loss_fn=teacher_forced_only(task.loss_fn))
    t0 = time.perf_counter()
    state, summary = train_and_evaluate(task, config, folder, progress=False)
    wall = time.perf_counter() - t0
    timing_path = folder / "timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {"train_wall_s": 0.0}
    if summary["final_step"] > summary["start_step"]:
        timing.update(train_wall_s=timing["train_wall_s"] + wall, steps=summary["final_step"],
                      compile_s=summary["compile_s"], ms_per_step=summary["ms_per_step_median"],
                      examples_per_s=summary.get("examples_per_s"), resumed_from=summary["resumed_from"])
        write_json(timing_path, timing)
    else:  # nothing left to train: the finished run's numbers stand
        state, _ = restore_state(task.init_variables, config, folder)
    timing["final_eval"] = summary.get("eval", {})
    return state, timing


PAD_TO = 10  # without experiment.<problem>.pad_to, test instances are padded to a multiple of this many elements


def bucket(n: int, pad_to=()) -> int:
    """The width instances of ``n`` elements are padded to: the smallest of ``pad_to`` (ascending) that
    holds them, else the next multiple of :data:`PAD_TO`. Each width is one compiled greedy decoder and
    one beam, so fewer widths compile less and decode longer rows."""
    return next((w for w in sorted(pad_to) if w >= n), -(-n // PAD_TO) * PAD_TO)


def test_by_length(config: ml_collections.ConfigDict, params, lengths, size: int, pad_to=()) -> dict:
    """Greedy and beam outputs of ``size`` fresh instances of each length, measured.

    Instances are padded to :func:`bucket` of their length (masks keep the answers the same),
    so lengths 5-10 share one compiled decoder (and, with ``pad_to``, longer lengths share one).

    Returns:
      ``{"lengths": [...], "greedy": {metric: [per length]}, "beam": {...}, "beam_not_less_likely": [...],
      "seconds": [...], "examples": {n: the length's batch and per-example outputs (NumPy)}}``.
    """
    problem, K = config.data.problem, config.decode.beam_width
    model = pointer_task.make_model(config)
    batches = pointer_task.make_batches(config)
    out: dict = {"lengths": list(lengths), "greedy": {}, "beam": {}, "beam_not_less_likely": [], "seconds": [],
                 "examples": {}}
    for n in lengths:
        batch = problems.pad(problem, batches.eval_set(n, size), bucket(n, pad_to))
        t0 = time.perf_counter()
        measured = pointer_task.measure(model, problem, params, batch, K)
        out["seconds"].append(time.perf_counter() - t0)
        for name in ("greedy", "beam") if K > 1 else ("greedy",):
            for key, values in measured.items():
                if key.startswith(f"{name}_") and values.ndim == 1:  # per-example numbers
                    out[name].setdefault(key[len(name) + 1:], []).append(float(np.mean(values)))
        if K > 1:
            gap = measured["beam_log_likelihood"] - measured["greedy_log_likelihood"]
            out["beam_not_less_likely"].append(float(np.mean(gap >= -1e-4)))
        out["examples"][n] = {"batch": batch, "measured": measured}
    return out


def _fmt(values, scale=100.0, digits=1) -> str:
    return " ".join(f"{scale * v:6.{digits}f}" for v in values)


def _print_table(problem: str, tested: dict, keys: dict[str, str]) -> None:
    print(f"  {'n':>18s} " + " ".join(f"{n:6d}" for n in tested["lengths"]))
    for name in ("greedy", "beam"):
        for key, label in keys.items():
            if key in tested[name]:
                scale, digits = (1.0, 3) if key in ("tour_length", "optimal_length") else (100.0, 1)
                print(f"  {name + ' ' + label:>18s} {_fmt(tested[name][key], scale, digits)}")
    print(f"  {'seconds':>18s} " + " ".join(f"{s:6.1f}" for s in tested["seconds"]))


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, claims: Claims) -> dict:
    e = config.experiment
    m = config.model
    print(f"problems {', '.join(e.problems)}; {m.cell} encoder and decoder, E = H = A = {m.features}; "
          f"{config.optim.name} lr {config.optim.learning_rate}, batch {config.train.batch_size}; "
          f"beam width {config.decode.beam_width}; {e.test_size} test instances per length; "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s)", flush=True)
    results: dict = {"problems": {}, "paper": pointer_metrics.PAPER}
    tested_all: dict = {}
    for problem in e.problems:
        c = run_config(config, problem)
        lo, hi = c.data.train_lengths
        print(f"{problem}: training on n = {lo}-{hi}, {c.train.num_steps} steps of {c.train.batch_size}", flush=True)
        state, timing = train(c, workdir / problem)
        print(f"  trained in {timing['train_wall_s']:.0f} s ({timing.get('ms_per_step') or float('nan'):.1f} ms/step, "
              f"{timing.get('examples_per_s') or float('nan'):,.0f} examples/s, compile "
              f"{timing.get('compile_s') or float('nan'):.1f} s); {parameter_count(state.params):,} parameters", flush=True)
        tested = test_by_length(c, state.params, tuple(e[problem].test_lengths), e.test_size,
                                tuple(e[problem].get("pad_to", ())))
        tested_all[problem] = (c, state, tested)
        keys = {"pointer_accuracy": "per-pointer %", "exact_match": "exact %"}
        if problem == "hull":
            keys["area_coverage"] = "area %"
        if problem == "tsp":
            keys.update(tour_length="tour", optimal_length="optimal", tour_excess="excess %")
        _print_table(problem, tested, keys)
        results["problems"][problem] = {
            "train_lengths": [lo, hi], "steps": c.train.num_steps, "timing": timing,
            "parameters": parameter_count(state.params),
            **{k: tested[k] for k in ("lengths", "greedy", "beam", "beam_not_less_likely", "seconds")}}

    if "sort" in tested_all:
        c, _, t = tested_all["sort"]
        lo, hi = c.data.train_lengths
        acc = dict(zip(t["lengths"], t["greedy"]["pointer_accuracy"]))
        trained = {n: a for n, a in acc.items() if lo <= n <= hi}
        longer = {n: a for n, a in acc.items() if n > hi}
        seq = dict(zip(t["lengths"], t["greedy"]["exact_match"]))
        claims.check("sort_trained_lengths", bool(trained) and min(trained.values()) >= e.claim_per_pointer,
                     f"sorting: greedy per-pointer accuracy >= {e.claim_per_pointer:.0%} at every trained length "
                     f"({lo}-{hi}) that was tested", trained)
        if longer:
            claims.check("sort_degrades_gracefully", min(longer.values()) >= e.claim_floor,
                         f"sorting beyond the trained lengths (up to {max(longer)}): per-pointer accuracy stays "
                         f">= {e.claim_floor:.0%} (degrades, not to zero)",
                         {"per_pointer": longer, "whole_sequence": {n: seq[n] for n in longer}})
        print(f"  sorting reference (a PyTorch reproduction, integers): per-pointer 98.6% at 5, 92.4% at 10; "
              f"ours {100 * acc.get(5, float('nan')):.1f}% / {100 * acc.get(10, float('nan')):.1f}%")
    if "hull" in tested_all:
        c, _, t = tested_all["hull"]
        at = {n: i for i, n in enumerate(t["lengths"])}
        area = {n: t["greedy"]["area_coverage"][at[n]] for n in (5, 10) if n in at}
        if area:
            claims.check("hull_area", min(area.values()) >= e.claim_hull_area,
                         f"convex hull: greedy outputs cover >= {e.claim_hull_area:.0%} of the true hull's area "
                         f"on average at n = {', '.join(map(str, area))}", area)
        paper = pointer_metrics.PAPER["hull"]
        for n in (5, 10):
            if n in at:
                line = (f"  hull n={n}: exact match ours {100 * t['greedy']['exact_match'][at[n]]:.1f}% greedy"
                        + (f", {100 * t['beam']['exact_match'][at[n]]:.1f}% beam" if t["beam"] else "")
                        + f" (trained {c.data.train_lengths[0]}-{c.data.train_lengths[1]}, "
                        f"{results['problems']['hull']['timing']['train_wall_s']:.0f} s on this machine); paper "
                        f"{100 * paper['exact_match'][n]:.1f}% (trained {paper['trained_on']}); area ours "
                        f"{100 * t['greedy']['area_coverage'][at[n]]:.1f}%, paper {100 * paper['area']:.1f}%")
                print(line)
    if "tsp" in tested_all:
        c, _, t = tested_all["tsp"]
        at = {n: i for i, n in enumerate(t["lengths"])}
        decoder = "beam" if t["beam"] else "greedy"
        excess = {n: t[decoder]["tour_excess"][at[n]] for n in (5, 10) if n in at}
        if excess:
            claims.check("tsp_near_optimal", max(excess.values()) <= e.claim_tsp_excess,
                         f"tsp: {decoder} tours at most {e.claim_tsp_excess:.0%} longer than the optimal ones on "
                         f"average at n = {', '.join(map(str, excess))}", excess)
        paper = pointer_metrics.PAPER["tsp"]
        for n in (5, 10):
            if n in at:
                print(f"  tsp n={n}: mean tour ours {t['greedy']['tour_length'][at[n]]:.3f} greedy"
                      + (f", {t['beam']['tour_length'][at[n]]:.3f} beam" if t["beam"] else "")
                      + f" vs optimal {t['greedy']['optimal_length'][at[n]]:.3f}; paper {paper['ptr_net'][n]:.2f} "
                      f"vs optimal {paper['optimal'][n]:.2f}")
    if config.decode.beam_width > 1:
        means = {p: {"greedy": float(np.mean(t["greedy"]["log_likelihood"])),
                     "beam": float(np.mean(t["beam"]["log_likelihood"])),
                     "examples_not_less_likely": float(np.mean(t["beam_not_less_likely"]))}
                 for p, (_, _, t) in tested_all.items()}
        claims.check("beam_not_worse", all(v["beam"] >= v["greedy"] - 1e-4 for v in means.values()),
                     f"beam search (width {config.decode.beam_width}) finds outputs at least as likely as greedy "
                     f"decoding (mean log-likelihood over every tested length)", means)
    results["figures"] = draw(config, tested_all, workdir)
    return results


def draw(config: ml_collections.ConfigDict, tested_all: dict, workdir: pathlib.Path) -> list[str]:
    """The three figures from the tested outputs; returns the file names written."""
    e = config.experiment
    files = []
    if "sort" in tested_all:
        c, state, _ = tested_all["sort"]
        n = len(e.sort_example)
        batch = problems.pad("sort", problems.instances("sort", [e.sort_example], c.data.max_length),
                             bucket(n, tuple(e.sort.get("pad_to", ()))))
        batch = {k: np.repeat(v, e.test_size, axis=0) for k, v in batch.items()}  # the test batch's shape: no new compile
        measured = pointer_task.measure(pointer_task.make_model(c), "sort", state.params, batch, 1)
        fig = figures.pointer_attention(e.sort_example, measured["greedy_weights"][0, :n, :n + 1],
                                        [int(p) for p in measured["greedy_positions"][0, :n]])
        files.append(save_figure(fig, workdir / "pointer_attention.png").name)
    panels, ranges = {}, {}
    for problem, (c, _, t) in tested_all.items():
        title = {"sort": "Sorting", "hull": "Convex hull", "tsp": "TSP (exact tour)"}[problem]
        curves = {"per-pointer (greedy)": (t["lengths"], t["greedy"]["pointer_accuracy"]),
                  "whole output (greedy)": (t["lengths"], t["greedy"]["exact_match"])}
        if problem == "hull":
            curves["area covered (greedy)"] = (t["lengths"], t["greedy"]["area_coverage"])
        if problem == "tsp":
            curves["optimal / tour length (greedy)"] = (t["lengths"], 1 / (1 + np.asarray(t["greedy"]["tour_excess"])))
        panels[title], ranges[title] = curves, tuple(c.data.train_lengths)
    if panels:
        files.append(save_figure(figures.accuracy_by_length(panels, ranges), workdir / "accuracy_by_length.png").name)
    drawn = []
    for problem in ("hull", "tsp"):
        if problem not in tested_all or e.num_drawn == 0:
            continue
        c, _, t = tested_all[problem]
        decoder = "beam" if t["beam"] else "greedy"
        trained = [n for n in t["lengths"] if n <= c.data.train_lengths[1]] or t["lengths"][:1]
        shown = [(max(trained), i) for i in range(e.num_drawn)]
        if problem == "hull" and t["lengths"][-1] > max(trained):
            shown.append((t["lengths"][-1], 0))  # and one longer than any trained on
        for n, i in shown:
            ex = t["examples"][n]
            row, target_row = ex["measured"][f"{decoder}_positions"][i], ex["batch"]["targets"][i]
            right = "right" if np.array_equal(row, target_row) else "wrong"
            metric = (f"area {100 * ex['measured'][f'{decoder}_area_coverage'][i]:.0f}%" if problem == "hull"
                      else f"{max(100 * ex['measured'][f'{decoder}_tour_excess'][i], 0.0) + 0.0:+.1f}% vs optimal")
            drawn.append({"points": ex["batch"]["inputs"][i, :n], "predicted": [int(p) - 1 for p in row if p >= 1],
                          "target": [int(p) - 1 for p in target_row if p >= 1], "kind": problem,
                          "title": f"{problem}, n={n} ({decoder}): {right}, {metric}"})
    if drawn:
        files.append(save_figure(figures.hulls_and_tours(drawn), workdir / "hulls_and_tours.png").name)
    return files


def cli(argv=None) -> int:
    """The command line: ``--workdir``, ``--config``, ``--config.KEY=VALUE``; returns the exit status."""
    return main(run, script=__file__, description="Chapter 11: pointer networks", default_workdir="runs/11_pointer",
                default_config="configs/pointer.py", validate=validate, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
