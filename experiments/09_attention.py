"""Chapter 9: attention. A Bahdanau encoder-decoder reorders verb-final sentences; the softmax without 1/sqrt(d).

    python experiments/09_attention.py [--workdir runs/09_attention] [--config configs/reorder.py]
                                       [--config.experiment.seeds=2 --config.train.num_steps=1500 ...]

The same encoder-decoder is trained with attention and without it (the decoder then sees
only the encoder's final states; ``experiment.models`` may name the first alone, and the
claim comparing the two is then not checked), ``experiment.seeds`` seeds each, through one compiled step
(:mod:`p2t_jax.training.sweep`: one seed after another, or with ``experiment.vmap_seeds`` all at
once). Both then translate held-out sentences
(split by sentence: none was ever a training sentence) of every length by greedy decoding.

Budget: ``train.num_steps`` is 600 (configs/reorder.py), where the chapter's measure has
settled: the attention model is then at 100% held-out exact match at every length with
0.95-0.98 of its attention on the verb, as after the former 1,500 steps, and the model
without attention already fails on long sentences (docs/chapters_08_09.md has both runs).

Claims checked: with attention, when the decoder emits the verb (output word 1), at least
``experiment.verb_attention`` of its attention sits on the source verb (the last source
word), on average over held-out sentences, for every seed; with attention, exact match stays at or above
``experiment.high_exact_match`` at every length, while without attention it falls by at
least ``experiment.degradation`` from the shortest sentences to the longest; and for random
unit-variance queries and keys, the softmax of ``q . k`` saturates as the width d grows
(largest weight >= 0.9 at the widest d) while ``q . k / sqrt(d)`` keeps its entropy within
10% of its value at the narrowest d. Writes ``attention_heatmaps.png``,
``exact_match_by_length.png``, ``softmax_saturation.png``, ``results.json`` and each
model's trained parameters (every seed) in ``with_attention/params.msgpack`` and
``without_attention/params.msgpack``; exits 1 if a claim fails.
"""

from __future__ import annotations

import copy
import pathlib
import sys
import time

import ml_collections
import numpy as np

from p2t_jax.chapters import reordering
from p2t_jax.configuration import require, require_names, require_positive
from p2t_jax.data import reorder
from p2t_jax.experiment import Claims, main
from p2t_jax.tasks import reorder as reorder_task
from p2t_jax.training import sweep
from p2t_jax.viz import chapter08_09 as figures
from p2t_jax.viz.style import save_figure

MODELS = {"with attention": True, "without attention": False}
SATURATED = 0.9  # largest weight that counts as saturated
ENTROPY_BAND = 0.1  # the scaled softmax's entropy may move this much (relative) across widths


def validate(config: ml_collections.ConfigDict) -> None:
    reorder_task.validate(config)
    e = config.experiment
    require_names(config, "experiment.models", tuple(MODELS), "model")
    require("with attention" in e.models, "config key 'experiment.models' must hold 'with attention' (its heat maps "
                                          "and claims are the chapter's).")
    require_positive(config, "experiment.seeds", "experiment.eval_size", "experiment.num_keys",
                     "experiment.num_queries")
    lo, hi = config.data.lengths
    for n in e.heatmap_lengths:
        require(lo <= n <= hi, f"config key 'experiment.heatmap_lengths' holds {n}, outside data.lengths ({lo}, {hi}).")
    require(len(e.dims) >= 2 and all(isinstance(d, int) and d > 0 for d in e.dims) and list(e.dims) == sorted(e.dims),
            f"config key 'experiment.dims' must be at least two increasing positive widths, got {tuple(e.dims)!r}.")
    for key in ("verb_attention", "high_exact_match", "degradation"):
        require(0 < e[key] <= 1, f"config key 'experiment.{key}' must be in (0, 1], got {e[key]}.")
    reordering.source_rows(e.heatmap_sentences, config.model.max_len)  # ConfigError for a bad sentence


def model_config(config: ml_collections.ConfigDict, use_attention: bool) -> ml_collections.ConfigDict:
    c = copy.deepcopy(config)
    with c.unlocked():
        del c["experiment"]
    c.model.use_attention = use_attention
    return c


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, claims: Claims) -> dict:
    e = config.experiment
    lo, hi = config.data.lengths
    lengths = list(range(lo, hi + 1))
    seeds = [config.seed + i for i in range(e.seeds)]
    out_len = config.model.max_len + 1
    m = config.model
    print(f"{m.cell} encoder-decoder, width {m.features}, embeddings {m.embed_dim}, attention {m.attention_features}; "
          f"{config.train.num_steps} steps of {config.train.batch_size} sentences of {lo}-{hi} words; seeds {seeds}; "
          f"{100 * config.data.test_share:.0f}% of sentences held out")
    results: dict = {"lengths": lengths, "seeds": seeds, "models": {}}
    exact, trained = {}, {}
    for name in config.experiment.models:
        use_attention = MODELS[name]
        c = model_config(config, use_attention)
        print(f"{name}: training {len(seeds)} seeds " + ("in one vmapped step" if e.get("vmap_seeds", True)
                                                        else "one after another (one compiled step)"), flush=True)
        t0 = time.perf_counter()
        states, summary = sweep.train_seeds(lambda cfg: reorder_task.build(cfg)[0], c, seeds,
                                            log=lambda line: print(line, flush=True),
                                            vmap=e.get("vmap_seeds", True))
        wall = time.perf_counter() - t0
        model, batches = reorder_task.make_model(c), reorder_task.make_batches(c)
        trained[name] = (model, states.params, batches)
        params_file = sweep.save_params(workdir / name.replace(" ", "_") / sweep.PARAMS_FILE, states.params)
        match, verb = [], []
        for n in lengths:
            held_out = batches.eval_set(n, e.eval_size)
            tokens, weights = reordering.greedy(model, states.params, held_out["source"], out_len)
            match.append(reordering.exact_match(tokens, held_out["target"]).mean(-1))  # [S]
            if use_attention:
                verb.append(reordering.verb_attention(weights, held_out["length"]).mean(-1))  # [S]
        exact[name] = np.stack(match)  # [lengths, S]
        r = {"exact_match": exact[name], "train_wall_s": wall, "compile_s": summary["compile_s"],
             "ms_per_step": summary["ms_per_step"], "final_train_loss": summary["loss"][-1],
             "final_train_token_accuracy": summary["token_accuracy"][-1],
             "params": str(params_file.relative_to(workdir))}
        if use_attention:
            r["verb_attention"] = np.stack(verb)  # [lengths, S]
        results["models"][name] = r
        shown = sorted({lo, (lo + hi) // 2, hi})
        print(f"  {name}: {wall:.1f} s ({summary['ms_per_step']:.1f} ms/step for {len(seeds)} seeds); exact match on "
              f"held-out sentences by length (mean over seeds): " + ", ".join(
                  f"{n}: {100 * exact[name][lengths.index(n)].mean():.1f}%" for n in shown))
        if use_attention:
            v = r["verb_attention"]
            print(f"  {name}: attention on the source verb when the verb is emitted, by length: " + ", ".join(
                f"{n}: {v[lengths.index(n)].mean():.2f} (seeds " + "/".join(f"{x:.2f}" for x in v[lengths.index(n)])
                + ")" for n in shown))

    # Heat maps: seed 0 of the attention model on held-out sentences (or the configured ones).
    model, params, batches = trained["with attention"]
    if e.heatmap_sentences:
        rows, row_lengths = reordering.source_rows(e.heatmap_sentences, config.model.max_len)
    else:
        sets = [batches.eval_set(n, 1) for n in e.heatmap_lengths]
        rows = np.concatenate([s["source"] for s in sets])
        row_lengths = np.concatenate([s["length"] for s in sets])
    # padded with copies of the first row to the held-out sets' shape: the compiled decoder is reused
    shown = len(rows)
    rows = np.concatenate([rows, np.repeat(rows[:1], max(e.eval_size - shown, 0), axis=0)])
    tokens, weights = reordering.greedy(model, params, rows, out_len)
    panels = []
    for i, n in enumerate(row_lengths[:shown]):
        out_words = reorder.decode_target(tokens[0, i]).split() + ["<eos>"]
        panels.append({"source": reorder.SOURCE_VOCAB.decode(rows[i]).split(), "output": out_words,
                       "weights": weights[0, i, :len(out_words), :n],
                       "title": f"{n} words, held out" if not e.heatmap_sentences else f"{n} words"})
        print(f"  {reorder.SOURCE_VOCAB.decode(rows[i])}  ->  {' '.join(out_words[:-1])}")
    results["heatmaps"] = panels

    saturation = reordering.softmax_saturation(e.dims, e.num_keys, e.num_queries, config.seed)
    results["saturation"] = saturation
    print("softmax over random keys by width d (largest weight / entropy): " + ", ".join(
        f"d={d}: scaled {ms:.2f}/{hs:.2f}, unscaled {mu:.2f}/{hu:.2f}" for d, ms, hs, mu, hu in zip(
            saturation["dims"], saturation["max_weight_scaled"], saturation["entropy_scaled"],
            saturation["max_weight_unscaled"], saturation["entropy_unscaled"])))

    verb = results["models"]["with attention"]["verb_attention"]  # [lengths, S]
    claims.check("attention_finds_the_verb", float(verb.mean(0).min()) >= e.verb_attention,
                 f"when the decoder emits the verb, >= {e.verb_attention:.0%} of its attention is on the source verb "
                 f"(every seed; mean over held-out sentences of every length)",
                 {"per_seed": verb.mean(0), "shortest_per_seed": verb[0], "longest_per_seed": verb[-1]})
    if "without attention" in exact:
        att, plain = exact["with attention"].mean(1), exact["without attention"].mean(1)
        claims.check("attention_holds_with_length", float(att.min()) >= e.high_exact_match
                     and float(plain[0] - plain[-1]) >= e.degradation,
                     f"exact match with attention >= {e.high_exact_match:.0%} at every length {lo}-{hi}; without "
                     f"attention it falls by >= {100 * e.degradation:.0f} points from {lo} to {hi} words",
                     {"with_attention_min": float(att.min()), "without_attention_shortest": float(plain[0]),
                      "without_attention_longest": float(plain[-1])})
    entropy_scaled = saturation["entropy_scaled"]
    drift = float(np.max(np.abs(entropy_scaled / entropy_scaled[0] - 1)))
    claims.check("scaling_prevents_saturation", float(saturation["max_weight_unscaled"][-1]) >= SATURATED
                 and drift <= ENTROPY_BAND,
                 f"softmax of q.k saturates as d grows (largest weight >= {SATURATED} at d = {e.dims[-1]}); with "
                 f"1/sqrt(d) its entropy stays within {ENTROPY_BAND:.0%} of its d = {e.dims[0]} value",
                 {"unscaled_max_weight_widest": float(saturation["max_weight_unscaled"][-1]),
                  "unscaled_entropy_widest": float(saturation["entropy_unscaled"][-1]),
                  "scaled_entropy_drift": drift})
    files = [save_figure(figures.attention_heatmaps(panels), workdir / "attention_heatmaps.png").name,
             save_figure(figures.exact_match_by_length(lengths, exact), workdir / "exact_match_by_length.png").name,
             save_figure(figures.softmax_saturation(saturation, e.num_keys), workdir / "softmax_saturation.png").name]
    results["figures"] = files
    return results


def cli(argv=None) -> int:
    """The command line: ``--workdir``, ``--config``, ``--config.KEY=VALUE``; returns the exit status."""
    return main(run, script=__file__, description="Chapter 9: attention", default_workdir="runs/09_attention",
                default_config="configs/reorder.py", validate=validate, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
