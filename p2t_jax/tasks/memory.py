"""Chapter 8's memory task for the one training loop: name the subject after a run of fillers.

Config fields (see ``configs/memory.py``): ``data.*`` the filler ranges of training and
evaluation, ``model.*`` the recurrent classifier (``model.cell``: ``rnn``, ``lstm`` or
``gru``), ``optim.*`` the Optax chain (:func:`p2t_jax.optim.chains.make_optimizer`;
``optim.grad_clip_norm`` is the chain's ``clip_by_global_norm``), ``train.*`` steps and
batches. The loop evaluates on every filler count of ``data.test_fillers``
(``train.eval_size`` sentences each).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from p2t_jax.configuration import require, require_choice, require_positive
from p2t_jax.data import memory
from p2t_jax.models.rnn import CELLS, RECURRENT_INITS, RecurrentClassifier
from p2t_jax.training.config_groups import default_optim, default_parallel, default_train, validate_groups
from p2t_jax.training.loop import Task


def default_config() -> ml_collections.ConfigDict:
    """Every field of a memory-task config at its default."""
    c = ml_collections.ConfigDict()
    c.task = "memory"
    c.variant = "default"
    c.seed = 0  # initialisation, the PRNG key and every batch

    c.data = ml_collections.ConfigDict()
    c.data.train_fillers = (2, 5)  # training sentences have lo..hi filler words
    c.data.test_fillers = (0, 30)  # evaluation covers every filler count lo..hi

    c.model = ml_collections.ConfigDict()
    c.model.cell = "lstm"  # rnn (vanilla, tanh), lstm or gru
    c.model.embed_dim = 32  # word embedding width E
    c.model.features = 64  # hidden width H
    c.model.max_len = 40  # the most words in a sentence; longer ones are refused
    # U drawn as the classic recurrent nets drew it, small and uniform (radius ~0.58 < 1), the vanishing
    # gradient's setting; "orthogonal" (Saxe et al. 2014, Keras's default) is its later remedy.
    c.model.recurrent_init = "small_uniform"
    c.model.forget_bias = 1.0  # LSTM only: forget gates start open (Gers et al. 2000; Jozefowicz et al. 2015)

    c.optim = default_optim(name="adam", implementation="optax", schedule="warmup_cosine", learning_rate=3e-3,
                            end_learning_rate=3e-4, warmup_steps=100, grad_clip_norm=1.0)

    c.train = default_train(batch_size=64,  # sentences per step
                            num_steps=2000, log_every=100, eval_every=500, checkpoint_every=1000)
    c.train.eval_size = 256  # sentences per filler count in an evaluation

    c.parallel = default_parallel()  # one device; --config.parallel.mesh_shape=(-1,1,1) shards the batch
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks a memory-task config before anything compiles (ConfigError, one sentence)."""
    m = config.model
    require_choice(config, "model.cell", tuple(CELLS))
    require_choice(config, "model.recurrent_init", tuple(RECURRENT_INITS))
    require_positive(config, "model.embed_dim", "model.features", "model.max_len", "optim.learning_rate",
                     "train.batch_size", "train.num_steps", "train.log_every", "train.eval_every", "train.eval_size",
                     "train.checkpoint_every", "train.keep_checkpoints")
    for key in ("data.train_fillers", "data.test_fillers"):
        lo_hi = tuple(config.data[key.split(".")[1]])
        require(len(lo_hi) == 2 and all(isinstance(v, int) and v >= 0 for v in lo_hi) and lo_hi[0] <= lo_hi[1],
                f"config key '{key}' must be (lo, hi) with 0 <= lo <= hi, got {lo_hi!r}.")
        longest = memory.sentence_length(lo_hi[1])
        require(longest <= m.max_len,
                f"config key '{key}' asks for sentences of {longest} words, longer than model.max_len = {m.max_len}.")
    validate_groups(config)


def make_model(config: ml_collections.ConfigDict) -> RecurrentClassifier:
    """``tokens_BT -> logits[B, 6]``: the classifier of ``config.model``."""
    m = config.model
    return RecurrentClassifier(vocab_size=len(memory.VOCAB), embed_dim=m.embed_dim, cell_type=m.cell,
                               features=m.features, num_classes=memory.NUM_CLASSES,
                               recurrent_init=m.recurrent_init, forget_bias=float(m.forget_bias))


def make_loss_fn(model: RecurrentClassifier):
    """Cross-entropy of the subject (mean over the batch) and accuracy, for ``{"tokens", "label"}`` batches."""

    def loss_fn(params, model_state, batch, rng, train):
        logits_BK = model.apply({"params": params}, batch["tokens"])
        loss = optax.softmax_cross_entropy_with_integer_labels(logits_BK, batch["label"]).mean()
        return loss, ({"accuracy": jnp.mean(logits_BK.argmax(-1) == batch["label"])}, model_state)

    return loss_fn


@functools.partial(jax.jit, static_argnums=(0, 1))
def init_variables(model: RecurrentClassifier, length: int, rng: jax.Array) -> dict:
    """``{"params": ...}`` for rows of ``length`` words (compiled once per model and length)."""
    return model.init(rng, jnp.zeros((1, length), jnp.int32))


def make_batches(config: ml_collections.ConfigDict) -> memory.MemoryBatches:
    return memory.MemoryBatches(config.seed, config.train.batch_size, tuple(config.data.train_fillers),
                                config.model.max_len)


def build(config: ml_collections.ConfigDict) -> tuple[Task, ml_collections.ConfigDict]:
    """The loop's Task for ``config`` (validated first) and the config to run it with (unchanged)."""
    validate(config)
    model = make_model(config)
    batches = make_batches(config)
    lo, hi = config.data.test_fillers

    task = Task(init_variables=functools.partial(init_variables, model, batches.train_length),
                loss_fn=make_loss_fn(model),
                train_batch=batches.train_batch,
                eval_batches=lambda: (batches.eval_set(n, config.train.eval_size) for n in range(lo, hi + 1)),
                items_per_batch=config.train.batch_size, items_name="sentences",
                meta={"data_source": "generated", "vocab_size": len(memory.VOCAB)})
    return task, config
