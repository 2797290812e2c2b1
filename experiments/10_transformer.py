"""Chapter 10: a bigger decoder-only Transformer writes better Shakespeare.

    python experiments/10_transformer.py [--workdir runs/10_transformer] [--config configs/transformer_compare.py]

Trains (or resumes) each variant with the library's one loop, samples from each for the
prompt, and checks the claim: the 826K model beats the 112K one on validation loss and on
the structure of its samples (share of real words, share of paragraphs opening with a
``NAME:`` heading). Writes ``loss_curves.png``, ``samples.txt`` and ``results.json``.

The budget (``configs/transformer_compare.py``): 600 steps of 32 windows for each model,
each schedule ending there, so that the two are compared at equal steps and windows. The
chapter's measure, the large model's lead at equal steps, settles there: its sign by step
250, and it grows slowly after 500 (0.16 / 0.14 nats at 500, 0.17 / 0.15 at 600 for seeds
0 / 1; 0.20 at 1,000 and 0.25 at 2,000 in the longer runs). Over seeds 0 and 1 the large
model leads by 0.17 and 0.15 nats of validation loss (spread over seeds 0.01) and by 8.7 and
13.0 points of real words (69.3% vs 60.6%, 69.8% vs 56.8%). The chapter took 358 to 376
CPU-seconds (user + sys) per seed on a busy 2-core AMD EPYC.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from p2t_jax.chapters import sample_structure
from p2t_jax.configuration import apply_overrides, load_config, require, require_positive
from p2t_jax.data import shakespeare
from p2t_jax.experiment import Claims, main
from p2t_jax.sampling import generate_cached
from p2t_jax.tasks import language_model
from p2t_jax.training.loop import train_and_evaluate
from p2t_jax.training.metrics import read_metrics
from p2t_jax.viz.style import PALETTE, new_figure, save_figure


def validate(config: ml_collections.ConfigDict) -> None:
    require(len(config.variants) >= 1, "config key 'variants' must name at least one variant.")
    require(config.num_steps >= 0, f"config key 'num_steps' must be >= 0, got {config.num_steps}.")
    require_positive(config, "sample.max_new_tokens", "sample.num_samples")
    require(config.sample.temperature >= 0, "config key 'sample.temperature' must be >= 0.")
    for variant in config.variants:
        language_model.validate(variant_config(config, variant))


def variant_overrides(config: ml_collections.ConfigDict, variant: str) -> list[str]:
    """The ``KEY=VALUE`` overrides that ``config.variant_overrides`` (``"VARIANT:KEY=VALUE"`` strings) sets
    for ``variant``, in order; ConfigError (one sentence) for an item not of that form."""
    out = []
    for item in config.get("variant_overrides", ()):
        name, sep, override = str(item).partition(":")
        require(bool(sep and name and "=" in override),
                f"config key 'variant_overrides' holds '{item}', which is not of the form VARIANT:KEY=VALUE "
                f"(e.g. large:train.num_steps=1000).")
        if name == variant:
            out.append(override)
    return out


def variant_config(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
    """``variant`` of ``config.shakespeare_config`` as this chapter trains it: its
    ``variant_overrides``, then the data source, the seed and (when > 0) ``num_steps``."""
    c = load_config(f"{config.shakespeare_config}:{variant}")
    overrides = variant_overrides(config, variant) + [f"data.source={config.data_source}",
                                                      f"seed={config.get('seed', 0)}"]
    if config.num_steps:
        overrides.append(f"train.num_steps={config.num_steps}")
    return apply_overrides(c, overrides)


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, claims: Claims) -> dict:
    s = config.sample
    results, samples = {}, {}
    words = None
    for variant in config.variants:
        c = variant_config(config, variant)
        task = language_model.make_task(c)
        state, summary = train_and_evaluate(task, c, workdir / variant)
        if words is None:
            words = sample_structure.vocabulary(shakespeare.load_texts(c.data.source)[0]["train"])
        model = language_model.make_model(c)
        tokenizer = language_model.load_tokenizer(workdir / variant)
        prompt = jnp.tile(jnp.asarray(tokenizer.encode(s.prompt))[None], (s.num_samples, 1))
        out = generate_cached(model, state.params, prompt, jax.random.PRNGKey(s.seed), max_new_tokens=s.max_new_tokens,
                              temperature=s.temperature, top_k=s.top_k)
        texts = [tokenizer.decode(row) for row in jax.device_get(out)]
        samples[variant] = texts
        n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
        results[variant] = {
            "parameters": n_params, "steps": summary["final_step"], "batch_size": c.train.batch_size,
            "context": c.model.max_len, "tokens": summary["final_step"] * c.train.batch_size * c.model.max_len,
            "val_loss": summary["eval"]["loss"],
            "train_loss": summary["train"].get("loss"),
            "word_validity": float(np.mean([sample_structure.word_validity(t[len(s.prompt):], words) for t in texts])),
            "speaker_format": float(np.mean([sample_structure.speaker_format(t) for t in texts])),
        }
        r = results[variant]
        print(f"{variant}: {n_params:,} parameters, val loss {r['val_loss']:.4f}, real words {r['word_validity']:.1%}, "
              f"speaker headings {r['speaker_format']:.1%}")

    fig, ax = new_figure(width=5.5, height=3.4)
    for color, variant in zip(PALETTE, config.variants):
        evals = read_metrics(workdir / variant, "eval")
        trains = read_metrics(workdir / variant, "train")
        ax.plot([m["step"] for m in trains], [m["loss"] for m in trains], color=color, alpha=0.35, lw=1)
        ax.plot([m["step"] for m in evals], [m["loss"] for m in evals], color=color, marker="o", ms=3,
                label=f"{variant} ({results[variant]['parameters']:,} parameters) validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / char)")
    ax.set_title("Shakespeare, character level (faint: train)")
    ax.legend()
    save_figure(fig, workdir / "loss_curves.png")
    with open(workdir / "samples.txt", "w") as f:
        for variant, texts in samples.items():
            f.write(f"===== {variant} =====\n\n" + "\n\n----------\n\n".join(texts) + "\n\n")

    if len(config.variants) >= 2:
        small, large = results[config.variants[0]], results[config.variants[-1]]
        claims.check("bigger_model_lower_val_loss", large["val_loss"] < small["val_loss"],
                     f"{config.variants[-1]} reaches a lower validation loss than {config.variants[0]}",
                     {v: results[v]["val_loss"] for v in config.variants})
        claims.check("bigger_model_more_real_words", large["word_validity"] > small["word_validity"],
                     f"{config.variants[-1]}'s samples hold a larger share of real words",
                     {v: results[v]["word_validity"] for v in config.variants})
    return {"models": results, "samples_first": {v: t[0] for v, t in samples.items()}}


def cli(argv=None) -> int:
    """The command line: ``--workdir``, ``--config``, ``--config.KEY=VALUE``; returns the exit status."""
    return main(run, script=__file__, description="Chapter 10: the Transformer on Shakespeare",
                default_workdir="runs/10_transformer", default_config="configs/transformer_compare.py",
                validate=validate, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
