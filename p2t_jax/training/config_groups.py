"""The config groups every task shares, built in one place: ``train``, ``optim`` and ``parallel``.

A task's ``default_config`` takes these and sets the values it wants
(``c.train = default_train(batch_size=64, num_steps=2000)``), then adds fields of its own
(``c.train.eval_size``); its ``validate`` ends with :func:`validate_groups`. So every
task's config has the same groups with the same fields (besides ``task``, ``variant``,
``seed``, and the task's own ``data`` and ``model``, and ``loss`` where it has one), and an
override that works for one task (``--config.parallel.mesh_shape=(1,-1,1)``,
``--config.train.early_stop_patience=3``, ``--config.optim.name=sgd``) works for all.

* ``train``: what the loop reads (:func:`p2t_jax.training.loop.train_and_evaluate`).
* ``optim``: the standard chain (:func:`p2t_jax.optim.chains.make_optimizer`).
* ``parallel``: the device mesh, its logical-axis rules and the multi-process start-up
  (:mod:`p2t_jax.parallel`). By default a task runs on one device (``mesh_shape (1, 1, 1)``);
  ``(-1, 1, 1)`` shards the batch over every device.
"""

from __future__ import annotations

from typing import Any

import ml_collections

from p2t_jax.configuration import require, require_choice, require_positive
from p2t_jax.optim import chains
from p2t_jax.parallel.mesh import check_mesh_shape
from p2t_jax.parallel.partitioning import DEFAULT_RULES, check_rules
from p2t_jax.training.loop import NONFINITE_POLICIES, check_large_run_keys


def _group(name: str, fields: dict[str, Any], values: dict[str, Any]) -> ml_collections.ConfigDict:
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TypeError(f"default_{name}() has no field(s) {', '.join(unknown)}; its fields are {', '.join(fields)}.")
    return ml_collections.ConfigDict({**fields, **values})


def default_train(**values: Any) -> ml_collections.ConfigDict:
    """The ``train`` group: the loop's fields at their defaults, with ``values`` set (names must exist)."""
    return _group("train", dict(
        batch_size=32,  # examples per step
        num_steps=1000,  # steps to train (a task may set it from epochs)
        log_every=100,  # train metrics every N steps
        eval_every=500,  # evaluation every N steps (and at the end)
        checkpoint_every=1000,  # Orbax save every N steps (and at each evaluation and the end)
        keep_checkpoints=1,  # latest saves kept (the best by eval loss is kept apart)
        early_stop_patience=0,  # stop after N evaluations without a lower eval loss; 0: never
        on_nonfinite="stop",  # a NaN/inf loss or gradient: stop (exit 3) or skip the update
        grad_accum_steps=1,  # microbatches per step, scanned inside the one jitted step; divides batch_size
        prefetch=2,  # training batches placed on the devices ahead of their step; 0: none
    ), values)


def default_optim(**values: Any) -> ml_collections.ConfigDict:
    """The ``optim`` group: the standard chain's fields at their defaults, with ``values`` set."""
    return _group("optim", dict(
        name="adamw",  # an Optax optimiser (adamw, adam, sgd, lion, adafactor, ...: chains.OPTIMIZERS), momentum, nesterov
        implementation="optax",  # optax: Optax's own; scratch: p2t_jax/optim/scratch.py
        learning_rate=1e-3,  # peak (or constant) learning rate
        schedule="warmup_cosine",  # warmup_cosine or constant
        end_learning_rate=0.0,  # warmup_cosine decays to this
        warmup_steps=0,  # warmup_cosine: linear warm-up from 0
        decay_steps=0,  # warmup_cosine: cosine length; 0 means train.num_steps
        momentum=0.9,  # momentum / nesterov: the velocity's decay
        rms_decay=0.9,  # rmsprop: decay of the mean square
        b1=0.9,  # adam, adamw, lion
        b2=0.999,  # adam, adamw, lion
        eps=1e-8,  # adam, adamw, rmsprop
        weight_decay=0.0,  # decoupled weight decay (adamw and lion only), on matrices and embeddings
        grad_clip_norm=0.0,  # clip_by_global_norm; 0 turns it off
        kwargs={},  # further hyperparameters of optax.<name> (an open group: --config.optim.kwargs.b3=0.99)
        chain=(),  # ((optax transform, {kwargs}), ...): the whole optimiser instead of name; () uses name
        factory="",  # "module:function", function(config) -> GradientTransformation; "" uses chain or name
    ), values)


def default_parallel(**values: Any) -> ml_collections.ConfigDict:
    """The ``parallel`` group (README, "Scaling out"), with ``values`` set. Not part of what a
    resumed run must match: a checkpoint saved on one mesh restores onto another."""
    return _group("parallel", dict(
        mesh_shape=(1, 1, 1),  # devices along (data, fsdp, tensor); -1: the rest; (1, 1, 1): one device
        logical_axis_rules=DEFAULT_RULES,  # logical axis name -> mesh axis (p2t_jax.parallel.partitioning)
        coordinator_address="",  # multi-process: process 0's host:port; "" reads $P2T_COORDINATOR_ADDRESS
        num_processes=0,  # processes in the run; 0 reads $P2T_NUM_PROCESSES
        process_id=-1,  # this process's index; -1 reads $P2T_PROCESS_ID
        cluster_detect=False,  # let JAX find the processes itself (TPU pod, SLURM, Open MPI)
        initialization_timeout=300,  # seconds to wait for every process to join
    ), values)


def validate_groups(config: ml_collections.ConfigDict) -> None:
    """Checks the shared groups without touching a device (a task's ``validate`` ends with this).

    What depends on the devices or the model (the mesh fitting the devices, the batch and
    the variables fitting the mesh) is checked by the loop before it writes anything.

    Raises:
      ConfigError: one sentence naming the key.
    """
    t, p = config.train, config.parallel
    require_positive(config, "train.batch_size", "train.keep_checkpoints")
    for key in ("num_steps", "log_every", "eval_every", "checkpoint_every", "early_stop_patience"):
        value = t[key]
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                f"config key 'train.{key}' must be an integer >= 0, got {value!r}.")
    require_choice(config, "train.on_nonfinite", NONFINITE_POLICIES)
    check_large_run_keys(t)
    chains.validate_optim(config)
    check_mesh_shape(p.mesh_shape)
    check_rules(p.logical_axis_rules)
    require(isinstance(p.num_processes, int) and p.num_processes >= 0,
            f"config key 'parallel.num_processes' must be >= 0 (0 reads $P2T_NUM_PROCESSES), got {p.num_processes!r}.")
    require(isinstance(p.process_id, int) and p.process_id >= -1,
            f"config key 'parallel.process_id' must be >= 0, or -1 to read $P2T_PROCESS_ID, got {p.process_id!r}.")
    require_positive(config, "parallel.initialization_timeout")
