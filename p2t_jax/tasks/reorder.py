"""Chapter 9's translation task for the one training loop: verb-final source to verb-second target.

Config fields (see ``configs/reorder.py``): ``data.*`` the sentence lengths, the longest
sentence and the held-out share; ``model.*`` the encoder-decoder (``model.use_attention``
False: the decoder sees only the encoder's final states); ``optim.*`` the Optax chain;
``train.*`` steps and batches. Training is teacher-forced: cross-entropy of every target
word and ``<eos>`` (padding left out), with token accuracy and teacher-forced exact match
as metrics. The loop evaluates on ``train.eval_size`` held-out sentences of each length.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from p2t_jax.configuration import require, require_choice, require_positive
from p2t_jax.data import reorder
from p2t_jax.data.words import PAD
from p2t_jax.models.rnn import CELLS
from p2t_jax.models.seq2seq import BRIDGES, Seq2Seq
from p2t_jax.training.config_groups import default_optim, default_parallel, default_train, validate_groups
from p2t_jax.training.loop import Task
from p2t_jax.training.steps import LOSS_WEIGHT


def default_config() -> ml_collections.ConfigDict:
    """Every field of a reordering config at its default."""
    c = ml_collections.ConfigDict()
    c.task = "reorder"
    c.variant = "default"
    c.seed = 0  # initialisation, the PRNG key and every batch

    c.data = ml_collections.ConfigDict()
    c.data.lengths = (3, 16)  # sentences have lo..hi words (training draws them uniformly)
    c.data.test_share = 0.1  # share of all sentences held out for evaluation (split by sentence)

    c.model = ml_collections.ConfigDict()
    c.model.cell = "gru"  # rnn, lstm or gru, for the encoder and the decoder
    c.model.embed_dim = 32  # word embedding width E
    c.model.features = 64  # recurrent width H (each encoder direction, and the decoder)
    c.model.attention_features = 64  # width A of the additive attention's hidden layer
    c.model.use_attention = True  # False: the decoder sees only the encoder's final states
    c.model.bridge = "backward"  # the decoder's first state from: backward (Bahdanau et al.) or both final states
    c.model.max_len = 16  # the longest sentence in words; longer ones are refused

    c.optim = default_optim(name="adam", implementation="optax", schedule="warmup_cosine", learning_rate=3e-3,
                            end_learning_rate=3e-4, warmup_steps=100, grad_clip_norm=1.0)

    c.train = default_train(batch_size=64, num_steps=3000, log_every=100, eval_every=1000, checkpoint_every=1000)
    c.train.eval_size = 64  # held-out sentences per length in an evaluation

    c.parallel = default_parallel()  # one device; --config.parallel.mesh_shape=(-1,1,1) shards the batch
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks a reordering config before anything compiles (ConfigError, one sentence)."""
    m = config.model
    require_choice(config, "model.cell", tuple(CELLS))
    require_choice(config, "model.bridge", BRIDGES)
    require_positive(config, "model.embed_dim", "model.features", "model.attention_features", "model.max_len",
                     "optim.learning_rate", "train.batch_size", "train.num_steps", "train.log_every",
                     "train.eval_every", "train.eval_size", "train.checkpoint_every", "train.keep_checkpoints")
    lengths = tuple(config.data.lengths)
    require(len(lengths) == 2 and all(isinstance(v, int) for v in lengths) and reorder.MIN_LENGTH <= lengths[0]
            <= lengths[1], f"config key 'data.lengths' must be (lo, hi) with {reorder.MIN_LENGTH} <= lo <= hi, "
                           f"got {lengths!r}.")
    require(lengths[1] <= m.max_len, f"config key 'data.lengths' asks for sentences of {lengths[1]} words, longer "
                                     f"than model.max_len = {m.max_len}.")
    require(0 < config.data.test_share < 1,
            f"config key 'data.test_share' must be in (0, 1), got {config.data.test_share}.")
    validate_groups(config)


def make_model(config: ml_collections.ConfigDict) -> Seq2Seq:
    m = config.model
    return Seq2Seq(source_vocab=len(reorder.SOURCE_VOCAB), target_vocab=len(reorder.TARGET_VOCAB),
                   embed_dim=m.embed_dim, features=m.features, attention_features=m.attention_features,
                   cell_type=m.cell, use_attention=m.use_attention, bos_id=reorder.BOS, bridge=m.bridge)


def make_batches(config: ml_collections.ConfigDict) -> reorder.ReorderBatches:
    return reorder.ReorderBatches(config.seed, config.train.batch_size, tuple(config.data.lengths),
                                  config.model.max_len, config.data.test_share)


def make_loss_fn(model: Seq2Seq):
    """Teacher-forced cross-entropy per target token (padding left out), token accuracy and exact match."""

    def loss_fn(params, model_state, batch, rng, train):
        target_BT = batch["target"]
        logits_BTV, _ = model.apply({"params": params}, batch["source"], target_BT)
        real_BT = target_BT != PAD
        nll_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, target_BT)
        loss = jnp.sum(nll_BT * real_BT) / jnp.sum(real_BT)
        right_BT = (logits_BTV.argmax(-1) == target_BT) | ~real_BT
        metrics = {"token_accuracy": jnp.sum(right_BT & real_BT) / jnp.sum(real_BT),
                   "exact_match": jnp.mean(jnp.all(right_BT, axis=-1)),
                   LOSS_WEIGHT: jnp.sum(real_BT)}  # the loss is a mean over the real tokens
        return loss, (metrics, model_state)

    return loss_fn


@functools.partial(jax.jit, static_argnums=(0, 1))
def init_variables(model: Seq2Seq, max_len: int, rng: jax.Array) -> dict:
    """``{"params": ...}`` for sources of ``max_len`` words (compiled once per model and length)."""
    return model.init(rng, jnp.zeros((1, max_len), jnp.int32), jnp.zeros((1, max_len + 1), jnp.int32))


def build(config: ml_collections.ConfigDict) -> tuple[Task, ml_collections.ConfigDict]:
    """The loop's Task for ``config`` (validated first) and the config to run it with (unchanged)."""
    validate(config)
    model = make_model(config)
    batches = make_batches(config)
    lo, hi = config.data.lengths

    task = Task(init_variables=functools.partial(init_variables, model, config.model.max_len),
                loss_fn=make_loss_fn(model),
                train_batch=batches.train_batch,
                eval_batches=lambda: (batches.eval_set(n, config.train.eval_size) for n in range(lo, hi + 1)),
                items_per_batch=config.train.batch_size, items_name="sentences",
                meta={"data_source": "generated", "source_vocab": len(reorder.SOURCE_VOCAB),
                      "target_vocab": len(reorder.TARGET_VOCAB)})
    return task, config
