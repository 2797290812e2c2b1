"""The character-level Shakespeare language-model task (chapter 10's main job).

Config fields: see :func:`default_config`; the variants (``small``, ``large``, ...) are in
``configs/shakespeare.py``.
"""

from __future__ import annotations

import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn

from p2t_jax.configuration import ConfigError, require, require_choice, require_positive
from p2t_jax.data import shakespeare
from p2t_jax.data.lm import LMBatches
from p2t_jax.data.tokenizer import CharTokenizer
from p2t_jax.models.attention import ATTENTION_BLOCK, ATTENTION_IMPLS
from p2t_jax.models.decoder import Decoder
from p2t_jax.models.transformer import DENSE_IMPLS, REMAT_POLICIES, Transformer, TransformerConfig
from p2t_jax.resources import require_memory
from p2t_jax.training.config_groups import default_optim, default_parallel, default_train, validate_groups
from p2t_jax.training.loop import Task

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
CAN_SAMPLE = True


def default_config() -> ml_collections.ConfigDict:
    """Every field of a language-model config at its default (the ``small`` model)."""
    c = ml_collections.ConfigDict()
    c.task = "language_model"
    c.variant = "small"
    c.seed = 0  # one seed for init, dropout and data order

    c.data = ml_collections.ConfigDict()
    c.data.source = "auto"  # auto: TFDS tiny_shakespeare if prepared, else embedded; or tfds / embedded
    c.data.tfds_data_dir = ""  # TFDS data dir; "" means TFDS's default ($TFDS_DATA_DIR)

    c.model = ml_collections.ConfigDict()
    c.model.vocab_size = 65  # the 65-character tiny-shakespeare alphabet
    c.model.max_len = 64  # context length in characters
    c.model.emb_dim = 64  # residual width D
    c.model.num_heads = 4  # attention heads; must divide emb_dim
    c.model.num_layers = 2  # Transformer blocks
    c.model.mlp_dim = 256  # MLP hidden width (4 * D)
    c.model.dropout_rate = 0.0  # attention and residual dropout
    c.model.use_bias = True  # biases in Dense and LayerNorm
    c.model.tie_embeddings = False  # output head shares the token embedding
    c.model.gelu_approximate = False  # tanh GELU (GPT-2) instead of exact erf
    c.model.scan_layers = False  # nn.scan over the blocks: compile time flat in depth
    # Recompute each block's activations in the backward pass instead of keeping them: none;
    # full (keep only the block's input); dots_saveable (keep the matmul outputs too).
    c.model.remat = "none"
    # How the projections run; the parameters are the same either way, so checkpoints move
    # between backends. auto: rows on CPU, general elsewhere; rows: on [B*T, D] rows through
    # p2t_jax.models.dense.Dense (plain-matmul weight gradients, the faster XLA-CPU kernels);
    # general: nn.DenseGeneral on [B, T, D] (what GPUs and TPUs want).
    c.model.dense_impl = "auto"
    # The fused attention's kernel: auto (cuDNN's fused kernel in the code lowered for a CUDA
    # GPU with bfloat16 compute, XLA's elsewhere; decided for the platform the step is lowered
    # for), xla, or cudnn (cuDNN's or refuse: needs a GPU). Attention with dropout on its
    # probabilities (model.dropout_rate > 0, training) is written out and uses neither.
    # blocked: the online-softmax attention (p2t_jax/models/blocked_attention.py), memory linear
    # in the context; auto picks it in the code lowered for a CPU from context 64 on.
    c.model.attention_impl = "auto"
    c.model.attention_block = 128  # positions per block of the blocked attention

    # The mixed-precision policy (README, "Large runs"). The attention softmax and the loss are
    # float32 whatever the policy; runs saved with model.dtype read it as precision.compute.
    c.precision = ml_collections.ConfigDict()
    c.precision.params = "float32"  # parameters and optimiser state (float32 only)
    c.precision.compute = "float32"  # activations and matmuls in the blocks: float32 or bfloat16
    c.precision.output = "float32"  # final LayerNorm and output head: float32 or bfloat16

    c.optim = default_optim(  # the standard chain: clip_by_global_norm -> adamw on warm-up + cosine
        name="adamw", implementation="optax", schedule="warmup_cosine",
        learning_rate=3e-3,  # peak learning rate after warm-up
        end_learning_rate=3e-4,  # cosine decays to this
        warmup_steps=100,  # linear warm-up from 0
        b1=0.9, b2=0.99, eps=1e-8,
        weight_decay=0.1,  # decoupled, on matrices and embeddings only
        grad_clip_norm=1.0)  # clip_by_global_norm; 0 turns it off

    c.train = default_train(batch_size=32,  # windows per step
                            num_steps=2000, log_every=50, eval_every=250, checkpoint_every=500,
                            keep_checkpoints=2)  # latest saves kept (the best by val loss is kept besides)
    c.train.eval_batches = 20  # validation batches per evaluation

    # Devices and hosts (README, "Scaling out"): the batch over every device by default.
    c.parallel = default_parallel(mesh_shape=(-1, 1, 1))
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks a Shakespeare config before anything compiles; raises ConfigError (one sentence)."""
    m, o = config.model, config.optim
    require_positive(config, "model.vocab_size", "model.max_len", "model.emb_dim", "model.num_heads",
                     "model.num_layers", "model.mlp_dim", "train.batch_size", "train.num_steps", "train.log_every",
                     "train.eval_every", "train.eval_batches", "train.checkpoint_every", "train.keep_checkpoints",
                     "optim.learning_rate")
    require(m.emb_dim % m.num_heads == 0,
            f"config key 'model.num_heads' ({m.num_heads}) must divide 'model.emb_dim' ({m.emb_dim}).")
    require(0.0 <= m.dropout_rate < 1.0, f"config key 'model.dropout_rate' must be in [0, 1), got {m.dropout_rate}.")
    require_choice(config, "precision.params", ("float32",))
    require_choice(config, "precision.compute", DTYPES)
    require_choice(config, "precision.output", DTYPES)
    require_choice(config, "model.dense_impl", DENSE_IMPLS)
    require_choice(config, "model.remat", REMAT_POLICIES)
    require_choice(config, "model.attention_impl", ATTENTION_IMPLS)
    require(int(m.get("attention_block", ATTENTION_BLOCK)) >= 1,
            f"config key 'model.attention_block' must be a positive number of positions, got {m.get('attention_block')}.")
    require_choice(config, "data.source", ("auto", "embedded", "tfds"))
    require(o.warmup_steps >= 0, f"config key 'optim.warmup_steps' must be >= 0, got {o.warmup_steps}.")
    require(0 <= o.end_learning_rate <= o.learning_rate,
            f"config key 'optim.end_learning_rate' must be between 0 and optim.learning_rate, got {o.end_learning_rate}.")
    require(0 <= o.b1 < 1 and 0 <= o.b2 < 1,
            f"config keys 'optim.b1' and 'optim.b2' must be in [0, 1), got {o.b1} and {o.b2}.")
    require(o.weight_decay >= 0 and o.grad_clip_norm >= 0,
            "config keys 'optim.weight_decay' and 'optim.grad_clip_norm' must be >= 0.")
    require(m.vocab_size >= len(shakespeare.SHAKESPEARE_ALPHABET),
            f"config key 'model.vocab_size' must be at least {len(shakespeare.SHAKESPEARE_ALPHABET)} "
            f"(the character alphabet), got {m.vocab_size}.")
    validate_groups(config)


def model_config(config: ml_collections.ConfigDict) -> TransformerConfig:
    """The TransformerConfig described by ``config.model``."""
    m = config.model
    return TransformerConfig(vocab_size=m.vocab_size, max_len=m.max_len, emb_dim=m.emb_dim, num_heads=m.num_heads,
                             num_layers=m.num_layers, mlp_dim=m.mlp_dim, dropout_rate=m.dropout_rate,
                             use_bias=m.use_bias, tie_embeddings=m.tie_embeddings,
                             gelu_approximate=m.gelu_approximate, dtype=DTYPES[config.precision.compute],
                             output_dtype=DTYPES[config.precision.output],
                             scan_layers=m.scan_layers, dense_impl=m.dense_impl, remat=m.remat,
                             attention_impl=m.get("attention_impl", "auto"),
                             attention_block=int(m.get("attention_block", ATTENTION_BLOCK)))


def make_model(config: ml_collections.ConfigDict) -> Transformer:
    return Transformer(model_config(config))


def init_params(model: Transformer, rng: jax.Array, unbox: bool = True) -> dict:
    """``{"params": ...}`` with plain arrays, or with ``unbox=False`` still boxed with their
    logical axis names (which :mod:`p2t_jax.parallel` reads to shard them)."""
    variables = model.init(rng, jnp.zeros((1, model.cfg.max_len), jnp.int32))
    return nn.meta.unbox(variables) if unbox else variables


def decoder(config: ml_collections.ConfigDict) -> Decoder:
    """How ``p2t sample`` runs this task's Transformer: with its key/value cache, or recomputing."""
    model, m = make_model(config), config.model
    cache_bytes = 2 * 4 * m.num_layers * m.max_len * m.emb_dim  # keys and values, float32, per sample
    return Decoder(init_variables=lambda rng: init_params(model, rng),
                   logits_fn=lambda params, tokens_BT: model.apply({"params": params}, tokens_BT),
                   context=m.max_len, cached_model=model,
                   bytes_per_sample=2 * cache_bytes + 4 * m.max_len * m.vocab_size)


def make_loss_fn(model: Transformer):
    """Next-token cross-entropy (mean over ``[B, T]``) and accuracy."""

    def loss_fn(params, model_state, batch, rng, train):
        logits_BTV = model.apply({"params": params}, batch["inputs"], deterministic=not train,
                                 rngs={"dropout": rng} if train else None)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["targets"]).mean()
        accuracy = (logits_BTV.argmax(-1) == batch["targets"]).mean()
        return loss, ({"accuracy": accuracy, "bits_per_char": loss / jnp.log(2.0)}, model_state)

    return loss_fn


def build(config: ml_collections.ConfigDict) -> tuple[Task, ml_collections.ConfigDict]:
    """The loop's Task for ``config`` (loads or builds the corpus; wires model, loss and batches),
    and ``config`` itself.

    Raises:
      ConfigError: the batch would not fit in memory, or the context is longer than a split.
    """
    validate(config)
    t, m = config.train, config.model
    require(m.get("attention_impl", "auto") != "cudnn" or jax.default_backend() == "gpu",
            f"config key 'model.attention_impl' is 'cudnn', which needs a GPU with cuDNN, and JAX runs on "
            f"{jax.default_backend()} here; choose auto (cuDNN's kernel wherever it can run) or xla.")
    require_memory(3 * 8 * t.batch_size * (m.max_len + 1), "one batch of windows",
                   "lower train.batch_size or model.max_len")
    splits, tokenizer, source = shakespeare.load_ids(config.data.source, config.data.tfds_data_dir or None)
    for split, ids in splits.items():
        require(len(ids) > m.max_len + 1, f"config key 'model.max_len' ({m.max_len}) is longer than the "
                f"{split} split ({len(ids):,} characters); a window must fit in it.")
    model = make_model(config)
    batches = LMBatches(splits, t.batch_size, m.max_len, config.seed)

    def save_assets(workdir: pathlib.Path) -> None:
        tokenizer.save(workdir / "tokenizer.json")

    task = Task(
        init_variables=lambda rng: init_params(model, rng, unbox=False),
        loss_fn=make_loss_fn(model), train_batch=batches.train_batch,
        eval_batches=lambda rows=None: batches.eval_batches(t.eval_batches, rows=rows), batch_rows=True,
        items_per_batch=t.batch_size * m.max_len, items_name="tokens",
        save_assets=save_assets,
        logits_fn=lambda params, model_state, batch: model.apply({"params": params}, batch["inputs"]),
        labels_key="targets",
        hyper_loss_fn=lambda hyper: make_loss_fn(Transformer(dataclasses.replace(
            model.cfg, dropout_rate=hyper.get("model.dropout_rate", model.cfg.dropout_rate)))),
        hyper_keys=("model.dropout_rate",),
        meta={"data_source": source, "train_tokens": int(len(splits["train"])),
              "validation_tokens": int(len(splits["validation"]))})
    return task, config


def make_task(config: ml_collections.ConfigDict) -> Task:
    """The loop's Task for ``config`` (:func:`build` without the config)."""
    return build(config)[0]


def describe(task: Task) -> str:
    """One line on the data, for the ``p2t`` command."""
    m = task.meta
    return f"{m['data_source']} ({m['train_tokens']:,} train / {m['validation_tokens']:,} validation characters)"


def load_tokenizer(workdir: pathlib.Path) -> CharTokenizer:
    """The tokenizer a run saved; ConfigError (one sentence) when it is missing or unreadable."""
    path = pathlib.Path(workdir) / "tokenizer.json"
    try:
        return CharTokenizer.load(path)
    except FileNotFoundError:
        raise ConfigError(f"workdir '{workdir}' has no tokenizer.json; it is written when `p2t train` starts "
                          f"a run there.") from None
    except (ValueError, KeyError, TypeError, OSError) as e:  # JSONDecodeError is a ValueError
        raise ConfigError(f"workdir '{workdir}' has a tokenizer.json that cannot be read "
                          f"({type(e).__name__}).") from None
