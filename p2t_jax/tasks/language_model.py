"""The character-level Shakespeare language-model task (chapter 10's main job)."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import linen as nn

from p2t_jax.configuration import require, require_choice, require_positive
from p2t_jax.data import shakespeare
from p2t_jax.data.lm import LMBatches
from p2t_jax.data.tokenizer import CharTokenizer
from p2t_jax.models.transformer import DENSE_IMPLS, Transformer, TransformerConfig
from p2t_jax.training.loop import Task

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


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
    require_choice(config, "model.dtype", DTYPES)
    require_choice(config, "model.dense_impl", DENSE_IMPLS)
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


def model_config(config: ml_collections.ConfigDict) -> TransformerConfig:
    """The TransformerConfig described by ``config.model``."""
    m = config.model
    return TransformerConfig(vocab_size=m.vocab_size, max_len=m.max_len, emb_dim=m.emb_dim, num_heads=m.num_heads,
                             num_layers=m.num_layers, mlp_dim=m.mlp_dim, dropout_rate=m.dropout_rate,
                             use_bias=m.use_bias, tie_embeddings=m.tie_embeddings,
                             gelu_approximate=m.gelu_approximate, dtype=DTYPES[m.dtype],
                             scan_layers=m.scan_layers, dense_impl=m.dense_impl)


def make_model(config: ml_collections.ConfigDict) -> Transformer:
    return Transformer(model_config(config))


def init_params(model: Transformer, rng: jax.Array, unbox: bool = True) -> dict:
    """``{"params": ...}`` with plain arrays, or with ``unbox=False`` still boxed with their
    logical axis names (which :mod:`p2t_jax.parallel` reads to shard them)."""
    variables = model.init(rng, jnp.zeros((1, model.cfg.max_len), jnp.int32))
    return nn.meta.unbox(variables) if unbox else variables


def make_loss_fn(model: Transformer):
    """Next-token cross-entropy (mean over ``[B, T]``) and accuracy."""

    def loss_fn(params, model_state, batch, rng, train):
        logits_BTV = model.apply({"params": params}, batch["inputs"], deterministic=not train,
                                 rngs={"dropout": rng} if train else None)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["targets"]).mean()
        accuracy = (logits_BTV.argmax(-1) == batch["targets"]).mean()
        return loss, ({"accuracy": accuracy}, model_state)

    return loss_fn


def make_task(config: ml_collections.ConfigDict) -> Task:
    """The loop's Task for ``config``: loads (or builds) the corpus and wires model, loss and batches."""
    validate(config)
    splits, tokenizer, source = shakespeare.load_ids(config.data.source, config.data.tfds_data_dir or None)
    model = make_model(config)
    batches = LMBatches(splits, config.train.batch_size, config.model.max_len, config.seed)

    def save_assets(workdir: pathlib.Path) -> None:
        tokenizer.save(workdir / "tokenizer.json")

    return Task(
        apply_fn=model.apply, init_variables=lambda rng: init_params(model, rng, unbox=False),
        loss_fn=make_loss_fn(model), train_batch=batches.train_batch,
        eval_batches=lambda rows=None: batches.eval_batches(config.train.eval_batches, rows=rows), batch_rows=True,
        items_per_batch=config.train.batch_size * config.model.max_len, items_name="tokens",
        save_assets=save_assets,
        meta={"data_source": source, "train_tokens": int(len(splits["train"])),
              "validation_tokens": int(len(splits["validation"]))})


def load_tokenizer(workdir: pathlib.Path) -> CharTokenizer:
    return CharTokenizer.load(pathlib.Path(workdir) / "tokenizer.json")
