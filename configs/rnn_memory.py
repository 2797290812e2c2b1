"""Chapter 8: vanilla RNN, LSTM and GRU on the memory task ("who was the subject?").

Variants (``--config configs/rnn_memory.py:VARIANT``):

* ``default`` an LSTM of width 64 (embeddings 32) trained 500 steps of 64 sentences with
  2-5 fillers, Adam 3e-3 (warm-up + cosine), gradients clipped at norm 1; evaluated on
  0-30 fillers. 500 steps because the chapter's measure has settled by then: in 2,000-step
  runs every seed of every cell is below 0.004 training loss (100% on the trained range)
  by step 300, and the claims are the same at 500 steps as at 2,000 (docs/chapters_08_09.md).
  ``experiments/08_rnn.py`` trains each of ``experiment.cells`` with ``experiment.seeds``
  seeds (one vmapped compile per cell).
* ``smoke``   tiny, for tests.

Train one run through the loop with ``p2t train --config configs/rnn_memory.py --workdir
runs/memory_lstm`` (``--config.model.cell=rnn`` for the vanilla RNN).
"""

import ml_collections

from p2t_jax.tasks.memory import default_config


def get_config(arg=None):
    variant = arg or "default"
    c = default_config()
    c.variant = variant

    c.experiment = ml_collections.ConfigDict()
    c.experiment.cells = ("rnn", "lstm", "gru")  # the cells compared
    c.experiment.seeds = 5  # seeds seed .. seed + N - 1 per cell, trained at once (vmap)
    c.experiment.eval_size = 512  # sentences per filler count for accuracy
    c.experiment.gradient_size = 256  # sentences per filler count for the gradient measurement
    c.experiment.claim_fillers = 15  # LSTM and GRU must reach claim_accuracy here
    c.experiment.claim_accuracy = 0.9
    c.experiment.examples = (  # sentences classified by each cell (seed 0) in the printout
        "alice very old saw bob",
        "carol quite really rather old young tall small happy tired quietly slowly often still then met dave",
        "erin " + "very " * 25 + "thanked frank",
    )

    if variant == "default":
        c.train.num_steps = 500  # settled by step 300 (see above); the task's own default is 2,000
    elif variant == "smoke":
        c.data.test_fillers = (0, 12)
        c.model.embed_dim, c.model.features, c.model.max_len = 8, 16, 16
        c.train.batch_size, c.train.num_steps, c.train.log_every = 32, 60, 20
        c.train.eval_every, c.train.eval_size, c.train.checkpoint_every = 30, 32, 30
        c.optim.warmup_steps = 5
        c.experiment.cells = ("rnn", "lstm")
        c.experiment.claim_fillers = 10
        c.experiment.seeds = 2
        c.experiment.eval_size, c.experiment.gradient_size = 64, 32
        c.experiment.examples = ("alice very old saw bob",)
    else:
        raise ValueError(f"unknown variant '{variant}'; choose default or smoke")
    return c
