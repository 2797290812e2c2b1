"""Chapter 8: vanilla RNN, LSTM and GRU on "who was the subject?" past the trained number of fillers.

    python experiments/08_rnn.py [--workdir runs/08_rnn] [--config configs/rnn_memory.py]
                                 [--config.experiment.seeds=5 --config.experiment.cells="('rnn', 'lstm')" ...]

Each cell of ``experiment.cells`` is trained with ``experiment.seeds`` seeds at once: the
loop's train step ``jax.vmap``-ed over stacked states (:mod:`p2t_jax.training.sweep`), each
seed with its own initialisation and data, on sentences with ``data.train_fillers`` fillers.
Then, for every filler count in ``data.test_fillers``: each seed's accuracy, and the norm of
the loss's gradient with respect to the first word's embedding (at initialisation and
trained), whose log-linear slope against distance is the geometric rate per step.

Claims checked: the vanilla RNN learns the trained range (>= 95%); the LSTM and GRU stay at or above
``experiment.claim_accuracy`` at ``experiment.claim_fillers`` fillers; at initialisation, the
RNN's gradient shrinks geometrically with distance and the LSTM's at less than half its rate
(the trained slopes are reported beside them). Every cell draws its recurrent weights small
and uniform and the LSTM starts with its forget gates open (``model.recurrent_init``,
``model.forget_bias``: see :mod:`p2t_jax.tasks.memory`). Writes ``accuracy_by_fillers.png``,
``gradient_by_distance.png``, ``results.json`` and each cell's trained parameters (every
seed) in ``CELL/params.msgpack``; exits 1 if a claim fails.

Budget: ``train.num_steps`` is 500 (configs/rnn_memory.py), where the chapter's measure has
settled: in 2,000-step runs every seed of every cell is at 100% on the trained range (training
loss below 0.004) by step 300, and the three claims hold at 500 steps as at 2,000. The
gradient claim is measured at initialisation, so it does not depend on the budget at all.
Accuracy and gradients are measured on rows cut to the longest sentence measured (33 words
for 30 fillers), not padded to ``model.max_len``: the same sentences, one compiled shape,
no scan steps over padding alone.

Recorded under ``observations``, not claimed: whether the vanilla RNN's mean accuracy falls
below 50% past the trained range (the filler count where it does, per seed). The series
expects it to; with 5 seeds it does not (docs/chapters_08_09.md has the numbers).
"""

from __future__ import annotations

import copy
import pathlib
import sys
import time

import ml_collections
import numpy as np

from p2t_jax.chapters import recurrent_memory as rm
from p2t_jax.configuration import require, require_names, require_positive
from p2t_jax.data import memory
from p2t_jax.experiment import Claims, main
from p2t_jax.models.rnn import CELLS
from p2t_jax.tasks import memory as memory_task
from p2t_jax.training import sweep
from p2t_jax.viz import chapter08_09 as figures
from p2t_jax.viz.style import save_figure

FIT_R2 = 0.8  # a log-linear fit this good or better counts as geometric decay
# The gradient claim is about learning: how much of the loss's gradient reaches the first word, the
# signal that lets training discover a long dependency, before training has shaped the weights. A
# trained net that has latched the subject robustly is contracting around it, so its gradient shrinks
# too (Bengio et al. 1994): the trained slopes are measured and reported, not claimed.
GRADIENT_AT = "at initialisation"


def validate(config: ml_collections.ConfigDict) -> None:
    memory_task.validate(config)
    e = config.experiment
    require_names(config, "experiment.cells", CELLS, "cell")
    require_positive(config, "experiment.seeds", "experiment.eval_size", "experiment.gradient_size",
                     "experiment.claim_accuracy")
    lo, hi = config.data.test_fillers
    require(lo <= e.claim_fillers <= hi, f"config key 'experiment.claim_fillers' ({e.claim_fillers}) must lie in "
                                         f"data.test_fillers ({lo}, {hi}).")
    require(e.claim_accuracy <= 1, f"config key 'experiment.claim_accuracy' must be at most 1, got {e.claim_accuracy}.")
    for sentence in e.examples:
        memory.VOCAB.encode(sentence, max_words=config.model.max_len, what="example sentence")


def cell_config(config: ml_collections.ConfigDict, cell: str) -> ml_collections.ConfigDict:
    """The run config of one cell: ``model.cell`` set, the ``experiment`` group left out."""
    c = copy.deepcopy(config)
    with c.unlocked():
        del c["experiment"]
    c.model.cell = cell
    return c


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, claims: Claims) -> dict:
    e = config.experiment
    lo, hi = config.data.test_fillers
    fillers = list(range(lo, hi + 1))
    distance = np.asarray(fillers) + memory.EXTRA_WORDS - 1  # steps from the subject to the last word
    seeds = [config.seed + i for i in range(e.seeds)]
    train_lo, train_hi = config.data.train_fillers
    examples = [memory.VOCAB.encode(s, max_words=config.model.max_len) for s in e.examples]
    example_rows = np.zeros((len(examples), config.model.max_len), np.int32)
    for i, ids in enumerate(examples):
        example_rows[i, :len(ids)] = ids
    m = config.model
    print(f"cells {', '.join(e.cells)}; seeds {seeds}; width {m.features}, embeddings {m.embed_dim}; "
          f"{config.train.num_steps} steps of {config.train.batch_size} sentences with {train_lo}-{train_hi} fillers; "
          f"{config.optim.name} lr {config.optim.learning_rate}, clip {config.optim.grad_clip_norm}; "
          f"U drawn {m.recurrent_init}, LSTM forget bias {m.forget_bias}; "
          f"tested on {lo}-{hi} fillers")
    results: dict = {"fillers": fillers, "distance": distance, "seeds": seeds, "cells": {}}
    accuracy, grads = {}, {"at initialisation": {}, "trained": {}}
    slopes: dict = {"at initialisation": {}, "trained": {}}
    for cell in e.cells:
        c = cell_config(config, cell)
        print(f"{cell}: training {len(seeds)} seeds in one vmapped step", flush=True)
        build = lambda cfg: memory_task.build(cfg)[0]  # noqa: E731
        t0 = time.perf_counter()
        states, summary = sweep.train_seeds(build, c, seeds, log=lambda line: print(line, flush=True))
        wall = time.perf_counter() - t0
        model, batches = memory_task.make_model(c), memory_task.make_batches(c)
        params_file = sweep.save_params(workdir / cell / sweep.PARAMS_FILE, states.params)
        acc = rm.accuracy_by_fillers(model, states.params, batches, fillers, e.eval_size)  # [N, S]
        initial = sweep.initial_states(build(c), c, seeds).params
        per_state = {"at initialisation": initial, "trained": states.params}
        r: dict = {"accuracy": acc, "train_wall_s": wall, "compile_s": summary["compile_s"],
                   "ms_per_step": summary["ms_per_step"], "final_train_loss": summary["loss"][-1],
                   "predictions": rm.predictions(model, states.params, example_rows),
                   "params": str(params_file.relative_to(workdir))}
        for title, params in per_state.items():
            g = rm.gradient_by_distance(model, params, batches, fillers, e.gradient_size)  # [N, S]
            fits = [rm.geometric_slope(distance, g[:, s]) for s in range(len(seeds))]
            grads[title][cell] = g
            slopes[title][cell] = float(np.median([f[0] for f in fits]))
            r[f"gradient_{title.replace(' ', '_')}"] = {"norms": g, "slopes": [f[0] for f in fits],
                                                        "r2": [f[1] for f in fits]}
        if cell == "lstm":  # how it holds the subject: a kept cell (forget gates near 1) or a refreshed one?
            gates = rm.lstm_gates_on_fillers(model, states.params, batches.eval_set(min(20, hi), e.gradient_size))
            r["lstm_gates_on_fillers"] = gates
            print(f"  lstm: gates over the fillers (mean over seeds): forget {gates['forget_mean'].mean():.2f} "
                  f"({100 * gates['forget_above_095'].mean():.0f}% of units x steps above 0.95), input "
                  f"{gates['input_mean'].mean():.2f}")
        accuracy[cell] = acc
        mean = acc.mean(1)
        r["first_below_half"] = rm.first_below(fillers, mean, 0.5, train_hi)
        r["first_below_half_per_seed"] = [rm.first_below(fillers, acc[:, s], 0.5, train_hi)
                                          for s in range(len(seeds))]
        results["cells"][cell] = r
        shown = sorted({n for n in (0, train_hi, 10, 15, 20, 30) if n in fillers})
        print(f"  {cell}: {wall:.1f} s ({summary['ms_per_step']:.1f} ms/step for {len(seeds)} seeds); accuracy by "
              f"fillers (mean, min-max over seeds): " + ", ".join(
                  f"{n}: {100 * mean[fillers.index(n)]:.1f}% ({100 * acc[fillers.index(n)].min():.0f}-"
                  f"{100 * acc[fillers.index(n)].max():.0f})" for n in shown))
        print(f"  {cell}: below 50% from {r['first_below_half']} fillers (per seed "
              f"{r['first_below_half_per_seed']}); gradient slope per step (log10, median over seeds): "
              f"at initialisation {slopes['at initialisation'][cell]:+.3f}, trained {slopes['trained'][cell]:+.3f}")
        for sentence, preds in zip(e.examples, r["predictions"].T):
            words = sentence.split()
            print(f"    {' '.join(words[:4])}{' ...' if len(words) > 4 else ''} ({len(words) - 3} fillers) -> "
                  + ", ".join(memory.SUBJECTS[int(p)] for p in preds))

    train_idx = [fillers.index(n) for n in range(train_lo, train_hi + 1) if n in fillers]
    if "rnn" in accuracy:
        r = results["cells"]["rnn"]
        trained_acc = float(accuracy["rnn"][train_idx].mean())
        claims.check("rnn_learns_trained_range", trained_acc >= 0.95,
                     f"vanilla RNN: mean accuracy >= 95% on the trained {train_lo}-{train_hi} fillers", trained_acc)
        # Not a claim: the series expects the vanilla RNN to fall toward chance past the trained range, and
        # here it does not (docs/chapters_08_09.md): trained on short lags it latches the subject in a
        # contracting state that the fillers barely move. Measured and recorded, reproduced or not.
        falls = trained_acc >= 0.95 and r["first_below_half"] is not None  # a fall from a learnt range, not chance
        results["observations"] = {"rnn_falls_toward_chance": {
            "statement": f"having learnt the trained {train_lo}-{train_hi} fillers (>= 95%), the vanilla RNN's mean "
                         f"accuracy over seeds falls below 50% (chance {1 / memory.NUM_CLASSES:.1%}) past them",
            "reproduced": falls, "trained_range_accuracy": trained_acc, "first_below_half": r["first_below_half"],
            "per_seed": r["first_below_half_per_seed"],
            "accuracy_at_max_fillers": float(accuracy["rnn"][-1].mean()),
            "accuracy_at_max_fillers_min_seed": float(accuracy["rnn"][-1].min())}}
        print(f"  note: 'the vanilla RNN falls toward chance past the trained fillers' "
              f"{'holds' if falls else 'does NOT hold here'}: mean accuracy at {hi} fillers "
              f"{accuracy['rnn'][-1].mean():.1%} (lowest seed {accuracy['rnn'][-1].min():.1%}), first below 50% "
              f"at {r['first_below_half']} (per seed {r['first_below_half_per_seed']})")
    held = {cell: float(accuracy[cell][fillers.index(e.claim_fillers)].mean()) for cell in ("lstm", "gru")
            if cell in accuracy}
    if held:
        claims.check("gated_cells_hold", all(v >= e.claim_accuracy for v in held.values()),
                     f"{' and '.join(held).upper()}: mean accuracy >= {e.claim_accuracy:.0%} at "
                     f"{e.claim_fillers} fillers", held)
    if "rnn" in slopes[GRADIENT_AT] and "lstm" in slopes[GRADIENT_AT]:
        rnn_fit = results["cells"]["rnn"][f"gradient_{GRADIENT_AT.replace(' ', '_')}"]
        rnn_slope, lstm_slope = slopes[GRADIENT_AT]["rnn"], slopes[GRADIENT_AT]["lstm"]
        geometric = rnn_slope < 0 and float(np.median(rnn_fit["r2"])) >= FIT_R2
        claims.check("gradient_vanishes_for_rnn", geometric and lstm_slope > 0.5 * rnn_slope,
                     f"{GRADIENT_AT}: ||dLoss/dx_0|| shrinks geometrically with distance for the RNN (log-linear "
                     f"fit, median R^2 >= {FIT_R2}) and at less than half that rate for the LSTM",
                     {"slope_log10_per_step": slopes[GRADIENT_AT], "rnn_r2": float(np.median(rnn_fit["r2"])),
                      "trained (not claimed)": slopes["trained"]})
    results["slopes"] = slopes
    files = [save_figure(figures.accuracy_by_fillers(fillers, accuracy, train_range=(train_lo, train_hi),
                                                     chance=1 / memory.NUM_CLASSES),
                         workdir / "accuracy_by_fillers.png").name,
             save_figure(figures.gradient_by_distance(distance, grads, slopes),
                         workdir / "gradient_by_distance.png").name]
    results["figures"] = files
    return results


def cli(argv=None) -> int:
    """The command line: ``--workdir``, ``--config``, ``--config.KEY=VALUE``; returns the exit status."""
    return main(run, script=__file__, description="Chapter 8: recurrent networks", default_workdir="runs/08_rnn",
                default_config="configs/rnn_memory.py", validate=validate, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
