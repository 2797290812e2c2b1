"""Chapter 11's pointer-network task for the one training loop: sorting, convex hulls, small TSP tours.

Config fields: see :func:`default_config`; the variants are in ``configs/pointer.py``.
``data.problem`` picks the problem (:mod:`p2t_jax.data.pointer`), ``data.train_lengths``
the range of n trained on, ``model.*`` the pointer network (:mod:`p2t_jax.models.pointer`),
``decode.beam_width`` the beam of :func:`p2t_jax.models.pointer.beam_search`.

The loss is the cross-entropy of the pointer distribution at each target step (teacher
forcing), averaged over the batch's real steps. Evaluation also decodes (greedy, and a
beam when ``decode.beam_width > 1``) and measures the outputs
(:func:`p2t_jax.tasks.pointer_metrics.output_metrics`) on ``train.eval_size`` instances with n
cycling over ``data.eval_lengths``; ``p2t eval --config.data.eval_lengths="(20, 20)"``
measures a trained run on longer inputs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from p2t_jax.configuration import require, require_choice, require_positive
from p2t_jax.data import pointer as problems
from p2t_jax.models.pointer import PointerNetwork, beam_search, greedy_decode
from p2t_jax.models.rnn import CELLS
from p2t_jax.tasks import pointer_metrics as metrics
from p2t_jax.training.config_groups import default_optim, default_parallel, default_train, validate_groups
from p2t_jax.training.loop import Task
from p2t_jax.training.steps import LOSS_WEIGHT


def default_config() -> ml_collections.ConfigDict:
    """Every field of a pointer-network config at its default (sorting 5-10 numbers)."""
    c = ml_collections.ConfigDict()
    c.task = "pointer"
    c.variant = "default"
    c.seed = 0  # initialisation, the PRNG key and every batch

    c.data = ml_collections.ConfigDict()
    c.data.problem = "sort"  # sort, hull or tsp (p2t_jax/data/pointer.py)
    c.data.train_lengths = (5, 10)  # each training instance has n uniform in lo..hi elements
    c.data.eval_lengths = (5, 10)  # the loop's evaluation cycles n over lo..hi
    c.data.max_length = 40  # the most elements a run may be given, in training or evaluation (tsp: at most 10)
    c.data.train_examples = 0  # 0: fresh instances every step; N: a fixed pool of N, cycled (the paper's 1M)

    c.model = ml_collections.ConfigDict()
    c.model.cell = "lstm"  # encoder and decoder cell: lstm (the paper's), gru or rnn
    c.model.embed_dim = 128  # E: each element's embedding
    c.model.features = 128  # H: LSTM width
    c.model.attention_dim = 128  # A: additive attention's hidden width

    c.decode = ml_collections.ConfigDict()
    c.decode.beam_width = 4  # beam search keeps this many outputs per input (1: greedy)

    c.optim = default_optim(name="adam", implementation="optax", schedule="warmup_cosine", learning_rate=1e-3,
                            end_learning_rate=1e-4, warmup_steps=100,
                            grad_clip_norm=2.0)  # the paper clips at 2

    c.train = default_train(batch_size=128,  # instances per step (the paper's)
                            num_steps=3000, log_every=100, eval_every=1000, checkpoint_every=1000)
    c.train.eval_size = 512  # instances per evaluation
    c.train.eval_batch_size = 512  # the largest evaluation batch

    c.parallel = default_parallel()  # one device; --config.parallel.mesh_shape=(-1,1,1) shards the batch
    return c


def _range(config: ml_collections.ConfigDict, key: str) -> tuple[int, int]:
    lo_hi = tuple(config.data[key])
    require(len(lo_hi) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in lo_hi)
            and lo_hi[0] <= lo_hi[1], f"config key 'data.{key}' must be (lo, hi) with lo <= hi, got {lo_hi!r}.")
    return lo_hi


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks a pointer-network config before anything compiles (ConfigError, one sentence)."""
    d = config.data
    require_choice(config, "data.problem", problems.PROBLEMS)
    require(isinstance(d.max_length, int) and d.max_length >= problems.MIN_LENGTH[d.problem],
            f"config key 'data.max_length' must be at least {problems.MIN_LENGTH[d.problem]} for {d.problem}, "
            f"got {d.max_length!r}.")
    require(d.problem != "tsp" or d.max_length <= problems.TSP_MAX_LENGTH,
            f"config key 'data.max_length' is {d.max_length}, but exact tsp tours are computed for at most "
            f"{problems.TSP_MAX_LENGTH} cities.")
    for key in ("train_lengths", "eval_lengths"):
        lo, hi = _range(config, key)
        problems.check_lengths(d.problem, (lo, hi), d.max_length, f"config key 'data.{key}'")
    require(isinstance(d.train_examples, int) and d.train_examples >= 0,
            f"config key 'data.train_examples' must be >= 0 (0: fresh instances every step), got {d.train_examples!r}.")
    require(d.train_examples == 0 or d.train_examples >= config.train.batch_size,
            f"config key 'data.train_examples' ({d.train_examples}) must be 0 or at least train.batch_size "
            f"({config.train.batch_size}).")
    require_choice(config, "model.cell", tuple(CELLS))
    require(isinstance(config.decode.beam_width, int) and config.decode.beam_width >= 1,
            f"config key 'decode.beam_width' must be a whole number >= 1 (1: greedy), got {config.decode.beam_width!r}.")
    require_positive(config, "model.embed_dim", "model.features", "model.attention_dim", "optim.learning_rate",
                     "train.batch_size", "train.num_steps", "train.log_every", "train.eval_every", "train.eval_size",
                     "train.eval_batch_size", "train.checkpoint_every", "train.keep_checkpoints")
    validate_groups(config)


def make_model(config: ml_collections.ConfigDict) -> PointerNetwork:
    """The pointer network of ``config.model`` for ``config.data.problem``."""
    m = config.model
    return PointerNetwork(embed_dim=m.embed_dim, features=m.features, attention_dim=m.attention_dim,
                          cell_type=m.cell, allow_end=problems.ALLOW_END[config.data.problem])


def init_variables(model: PointerNetwork, problem: str, rng: jax.Array) -> dict:
    """``{"params": ...}`` (no parameter depends on n)."""
    D, n = problems.ELEMENT_WIDTH[problem], problems.MIN_LENGTH[problem]
    targets = jnp.zeros((1, problems.output_steps(problem, n)), jnp.int32)
    return model.init(rng, jnp.zeros((1, n, D), jnp.float32), jnp.ones((1, n), bool), targets)


def make_loss_fn(model: PointerNetwork, problem: str, beam_width: int = 1):
    """``loss_fn(params, model_state, batch, rng, train)`` for :mod:`p2t_jax.data.pointer` batches.

    Training: the mean cross-entropy of the target positions under teacher forcing, and
    ``teacher_forced_accuracy``. Evaluation adds the greedy outputs' metrics
    (:func:`p2t_jax.tasks.pointer_metrics.output_metrics`, averaged) and, when ``beam_width > 1``,
    the beam's under ``beam_*``.
    """

    def loss_fn(params, model_state, batch, rng, train):
        targets_BT = batch["targets"]
        logits_BTS = model.apply({"params": params}, batch["inputs"], batch["mask"], targets_BT)
        real_BT = targets_BT != problems.PAD
        ce_BT = optax.softmax_cross_entropy_with_integer_labels(logits_BTS, jnp.maximum(targets_BT, 0))
        steps = jnp.maximum(real_BT.sum(), 1)
        loss = jnp.where(real_BT, ce_BT, 0.0).sum() / steps
        tf_accuracy = ((logits_BTS.argmax(-1) == targets_BT) & real_BT).sum() / steps
        out = {"teacher_forced_accuracy": tf_accuracy, LOSS_WEIGHT: steps}  # the loss is a mean over `steps`
        if not train:
            greedy = greedy_decode(model, params, batch["inputs"], batch["mask"])
            out.update({k: v.mean() for k, v in metrics.output_metrics(problem, batch, greedy.positions_BT).items()})
            if beam_width > 1:
                beam = beam_search(model, params, batch["inputs"], batch["mask"], beam_width)
                out.update({f"beam_{k}": v.mean()
                            for k, v in metrics.output_metrics(problem, batch, beam.positions_BT).items()})
        return loss, (out, model_state)

    return loss_fn


def make_batches(config: ml_collections.ConfigDict) -> problems.PointerBatches:
    d = config.data
    return problems.PointerBatches(d.problem, config.seed, config.train.batch_size, tuple(d.train_lengths),
                                   d.train_examples)


def build(config: ml_collections.ConfigDict) -> tuple[Task, ml_collections.ConfigDict]:
    """The loop's Task for ``config`` (validated first) and the config to run it with (unchanged)."""
    validate(config)
    problem, t = config.data.problem, config.train
    model = make_model(config)
    batches = make_batches(config)
    lo, hi = config.data.eval_lengths
    lengths = tuple(lo + i % (hi - lo + 1) for i in range(t.eval_size))

    def eval_batches():
        full = batches.mixed_eval_set(lengths)
        for start in range(0, t.eval_size, t.eval_batch_size):
            yield {k: v[start:start + t.eval_batch_size] for k, v in full.items()}

    task = Task(init_variables=functools.partial(init_variables, model, problem),
                loss_fn=make_loss_fn(model, problem, config.decode.beam_width),
                train_batch=batches.train_batch, eval_batches=eval_batches,
                items_per_batch=t.batch_size, items_name="examples",
                meta={"data_source": "generated", "problem": problem})
    return task, config


def describe(task: Task) -> str:
    """One line on the data, for the ``p2t`` command."""
    return f"{task.meta['problem']} instances generated from (seed, step)"


@functools.lru_cache(maxsize=8)
def decoders(model: PointerNetwork, beam_width: int):
    """``(greedy, beam)``: :func:`greedy_decode` and :func:`beam_search` of ``model`` under ``jax.jit``
    (``(params, inputs_BND, mask_BN) -> Decoded``), compiled once per input shape."""
    greedy = jax.jit(functools.partial(greedy_decode, model))
    beam = jax.jit(functools.partial(beam_search, model, beam_width=beam_width))
    return greedy, beam


@functools.partial(jax.jit, static_argnums=0)
def _output_metrics(problem: str, batch: dict, positions_BT: jax.Array) -> dict[str, jax.Array]:
    """:func:`p2t_jax.tasks.pointer_metrics.output_metrics` compiled once per problem and shape (greedy and
    beam outputs share it), not one small program per operation and shape."""
    return metrics.output_metrics(problem, batch, positions_BT)


def measure(model: PointerNetwork, problem: str, params, batch: dict, beam_width: int) -> dict[str, np.ndarray]:
    """Greedy (and, for ``beam_width > 1``, beam) outputs of one batch and their per-example metrics.

    Returns:
      NumPy: ``greedy_positions`` ``[B, T]``, ``greedy_weights`` ``[B, T, S]``, ``greedy_log_likelihood``
      ``[B]`` and ``greedy_<metric>`` ``[B]`` for every :func:`p2t_jax.tasks.pointer_metrics.output_metrics`;
      the same under ``beam_`` (no weights).
    """
    greedy_fn, beam_fn = decoders(model, beam_width)
    runs = {"greedy": greedy_fn(params, batch["inputs"], batch["mask"])}
    if beam_width > 1:
        runs["beam"] = beam_fn(params, batch["inputs"], batch["mask"])
    out = {}
    for name, decoded in runs.items():
        out[f"{name}_positions"] = decoded.positions_BT
        out[f"{name}_log_likelihood"] = decoded.log_likelihood_B
        if decoded.weights_BTS is not None:
            out[f"{name}_weights"] = decoded.weights_BTS
        for k, v in _output_metrics(problem, batch, decoded.positions_BT).items():
            out[f"{name}_{k}"] = v
    return jax.device_get(out)
