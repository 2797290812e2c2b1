"""The eleven chapters ``p2t reproduce`` runs, and the two budgets: what each chapter runs with.

A chapter is its experiment script (``experiments/NN_name.py``), the run folder it writes
by default (``runs/NN_name``, here ``<out>/NN_name``) and its config file. A budget gives
each chapter a config (file and variant) and ``--config.KEY=VALUE`` overrides:

* ``full``: every experiment's own default config, no overrides: the runs the README's
  numbers and the committed report come from.
* ``quick``: small runs (the configs' ``smoke`` variants, cut further) that finish all eleven
  chapters in a few minutes on 2 CPU cores. They leave every run folder the playground's pages
  read; their claims are checked and reported as measured, but many cannot hold at this size.
"""

from __future__ import annotations

import dataclasses

BUDGETS = ("full", "quick")


@dataclasses.dataclass(frozen=True)
class Chapter:
    """One chapter: ``number``; ``name`` (= the experiment's default run folder, ``runs/<name>``);
    ``title``; ``config`` (the experiment's default config file); ``claims``: the claim names its
    results.json holds under the full budget (for the progress bar; a run may check fewer)."""

    number: int
    name: str
    title: str
    config: str
    claims: tuple[str, ...]

    @property
    def script(self) -> str:
        """The experiment script, relative to the repository root."""
        return f"experiments/{self.name}.py"


CHAPTERS: dict[int, Chapter] = {c.number: c for c in (
    Chapter(1, "01_perceptron", "The perceptron", "configs/perceptron.py",
            ("and_learned", "or_learned", "nand_learned", "xor_never_learned", "separable_converged",
             "within_novikoff_bound")),
    Chapter(2, "02_mlp_xor", "The MLP and XOR", "configs/xor_mlp.py",
            ("linear_layers_collapse", "nonlinear_layers_do_not_collapse", "hand_xor_accuracy", "hand_xor_outputs",
             "hand_xor_hidden_units", "hidden_space_separable")),
    Chapter(3, "03_backprop", "Backpropagation", "configs/backprop.py",
            ("backprop_matches_jax_grad", "wide_converges_all_seeds", "narrow_stuck_on_some_seeds", "vmap_equals_loop",
             "smooth_lr_converges", "smooth_lr_falls_smoothly", "high_lr_oscillates")),
    Chapter(4, "04_optimisers", "Optimisers", "configs/mnist_optimizers.py", ("adam_ahead_after_epoch1",)),
    Chapter(5, "05_regularisation", "Regularisation", "configs/mnist_regularisation.py",
            ("baseline_overfits", "dropout_and_decay_shrink_gap")),
    Chapter(6, "06_cnn", "Convolutional networks", "configs/mnist_cnn.py",
            ("cnn_beats_mlp", "far_fewer_first_layer_weights")),
    Chapter(7, "07_batchnorm_residual", "Batch norm and residual connections", "configs/deep_nets.py",
            ("plain_layer1_gradient_vanishes", "bn_keeps_preactivations_normal", "without_bn_preactivations_drift",
             "deeper_plain_trains_worse_without_bn", "residual_does_not_degrade_without_bn",
             "deeper_plain_trains_worse_with_bn", "residual_does_not_degrade_with_bn")),
    Chapter(8, "08_rnn", "Recurrent networks", "configs/rnn_memory.py",
            ("rnn_learns_trained_range", "gated_cells_hold", "gradient_vanishes_for_rnn")),
    Chapter(9, "09_attention", "Attention", "configs/reorder.py",
            ("attention_finds_the_verb", "attention_holds_with_length", "scaling_prevents_saturation")),
    Chapter(10, "10_transformer", "The Transformer", "configs/transformer_compare.py",
            ("bigger_model_lower_val_loss", "bigger_model_more_real_words")),
    Chapter(11, "11_pointer", "Pointer networks", "configs/pointer.py",
            ("sort_trained_lengths", "sort_degrades_gracefully", "hull_area", "tsp_near_optimal", "beam_not_worse")),
)}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one chapter runs with under a budget: ``config`` (file[:variant]) and ``overrides``
    (``KEY=VALUE`` strings, each passed as ``--config.KEY=VALUE``)."""

    config: str
    overrides: tuple[str, ...] = ()


# The quick budget: the configs' smoke variants, cut so that all eleven chapters end within about five
# minutes on 2 CPU cores (chapters 8, 9 and 11 as the playground's tests cut them, a little larger).
QUICK: dict[int, Plan] = {
    1: Plan("configs/perceptron.py:smoke"),
    2: Plan("configs/xor_mlp.py:smoke"),
    3: Plan("configs/backprop.py:smoke"),
    4: Plan("configs/mnist_optimizers.py:smoke", ("train.num_epochs=1",)),
    5: Plan("configs/mnist_regularisation.py:smoke", ("experiment.runs=('baseline','dropout+decay')",
                                                      "train.num_epochs=2")),
    6: Plan("configs/mnist_cnn.py:smoke", ("train.num_epochs=1",)),
    7: Plan("configs/deep_nets.py:smoke"),
    8: Plan("configs/rnn_memory.py:smoke", ("train.num_steps=60", "experiment.seeds=1", "data.test_fillers=(0,8)",
                                            "experiment.claim_fillers=6", "experiment.eval_size=32",
                                            "experiment.gradient_size=8")),
    9: Plan("configs/reorder.py:smoke", ("train.num_steps=40", "experiment.eval_size=8", "experiment.dims=(4,8)",
                                         "experiment.num_queries=4", "experiment.num_keys=4")),
    10: Plan("configs/transformer_compare.py:smoke", ("variants=('smoke','small')", "num_steps=60",
                                                      "sample.max_new_tokens=80", "sample.num_samples=2")),
    11: Plan("configs/pointer.py:smoke", ("decode.beam_width=2", "experiment.test_size=8", "experiment.num_drawn=1")),
}


def plan(chapter: Chapter, budget: str) -> Plan:
    """The config and overrides ``chapter`` runs with under ``budget`` (one of :data:`BUDGETS`)."""
    if budget == "full":
        return Plan(chapter.config)
    if budget == "quick":
        return QUICK[chapter.number]
    raise ValueError(f"unknown budget {budget!r}; choose {' or '.join(BUDGETS)}")


def parse_chapters(text: str | None) -> list[Chapter]:
    """``"1,4,10"`` (or ``"1-3,8"``; ``None`` or ``"all"``: every chapter) -> the chapters, in order.

    Raises:
      ValueError: one sentence naming the bad entry and what is allowed.
    """
    if text is None or text.strip() == "all":
        return list(CHAPTERS.values())
    allowed = f"chapters are numbers 1 to {max(CHAPTERS)}, e.g. --chapters 1,4,10 or 1-3"
    numbers: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise ValueError(f"--chapters entry '{part}' is not a chapter number; {allowed}.") from None
        if first > last or first not in CHAPTERS or last not in CHAPTERS:
            raise ValueError(f"--chapters entry '{part}' names no chapter; {allowed}.")
        numbers.update(range(first, last + 1))
    return [CHAPTERS[n] for n in sorted(numbers)]
