"""Image classification for the one training loop: chapters 4 to 7.

Config fields (see ``configs/mnist_optimizers.py``, ``configs/mnist_cnn.py``,
``configs/deep_nets.py``): ``data.*`` picks the dataset (MNIST, Fashion-MNIST, CIFAR-10),
the source and the splits, ``model.*`` the network (``model.name``: an MLP, a CNN, a deep
plain or residual MLP, a ResNet; see :mod:`p2t_jax.tasks.image_models`), ``loss.*`` label
smoothing and an L2 penalty, ``optim.*`` the optimiser
(:func:`p2t_jax.optim.chains.make_optimizer`), ``train.*`` batches and epochs.

Models with batch norm keep their running statistics in ``TrainState.model_state``
(``{"batch_stats": ...}``): the training loss uses the batch's statistics and returns the
updated running averages, evaluation uses the running averages. The deep models
(``deep_mlp``, ``resnet``) also log each layer's kernel gradient norm and the mean and
standard deviation of each ReLU's input as training metrics.

Training is counted in epochs: :func:`resolve_steps` turns ``train.num_epochs`` into the
loop's ``train.num_steps`` (``num_epochs * steps_per_epoch``) and, where they are 0, sets
``train.log_every``, ``train.eval_every`` and ``train.checkpoint_every`` to one epoch.

The training loss is the (label-smoothed) cross-entropy plus ``loss.l2 * 0.5 * sum(w^2)``;
the evaluation loss is the plain cross-entropy, so early stopping and the best checkpoint
follow the real negative log-likelihood.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import multiprocessing
import pathlib
import time
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import linen as nn

from p2t_jax.configuration import require, require_choice, require_positive
from p2t_jax.data import image_datasets
from p2t_jax.data.images import ImageBatches, ImageRecords, split_off
from p2t_jax.host_memory import keep_freed_host_memory
from p2t_jax.models import regularisation
from p2t_jax.optim import chains
from p2t_jax.resources import usable_cores
from p2t_jax.tasks import image_models
from p2t_jax.training.config_groups import default_optim, default_parallel, default_train, validate_groups
from p2t_jax.training.loop import Task, evaluate, restore_state, train_and_evaluate
from p2t_jax.training.metrics import read_metrics, write_json
from p2t_jax.training.steps import make_eval_step

SOURCES = ("auto", "embedded", "tfds")
EVAL_SPLITS = ("test", "validation")


def default_config() -> ml_collections.ConfigDict:
    """The fields every image-classification config has, at their common defaults.

    A chapter's config file starts from this and changes what its experiment needs.
    """
    c = ml_collections.ConfigDict()
    c.task = "image_classification"
    c.variant = "default"
    c.seed = 0  # one seed for init, dropout, the validation split and the order of examples

    c.data = ml_collections.ConfigDict()
    c.data.source = "auto"  # auto: TFDS if prepared, else the embedded digits; or tfds / embedded
    c.data.name = "mnist"  # mnist, fashion_mnist or cifar10 (the latter two from TFDS only)
    c.data.tfds_data_dir = ""  # TFDS data dir; "" means TFDS's default ($TFDS_DATA_DIR)
    c.data.train_size = 0  # keep the first N training examples (after the validation hold-out); 0: all
    c.data.validation_size = 0  # hold N training examples out as a validation split; 0: none
    c.data.eval_split = "test"  # the split the loop evaluates each epoch: test or validation
    c.data.augment = False  # training batches: random crops from 4-pixel zero padding and horizontal flips

    c.model = ml_collections.ConfigDict()
    image_models.add_model_fields(c.model)  # name (mlp, cnn, deep_mlp, resnet) and each model's fields

    c.loss = ml_collections.ConfigDict()
    c.loss.label_smoothing = 0.0  # alpha: the target gets 1 - alpha + alpha / K on the true class
    c.loss.l2 = 0.0  # lambda of the L2 penalty lambda * 0.5 * sum(w^2) on weight matrices

    c.optim = default_optim(name="adam",
                            implementation="scratch",  # scratch: p2t_jax/optim/scratch.py; optax: Optax's own
                            schedule="constant")

    c.train = default_train(batch_size=32,  # examples per update
                            num_steps=0,  # set from num_epochs (used as is when num_epochs is 0)
                            log_every=0, eval_every=0, checkpoint_every=0)  # 0: once per epoch
    c.train.num_epochs = 10  # passes over the training split; sets num_steps
    c.train.eval_batch_size = 1000  # largest evaluation batch (a divisor of the split size is used)

    c.parallel = default_parallel()  # one device; --config.parallel.mesh_shape=(-1,1,1) shards the batch
    return c


def validate(config: ml_collections.ConfigDict) -> None:
    """Checks an image-classification config before anything loads or compiles (ConfigError, one sentence)."""
    d, lo, o, t = config.data, config.loss, config.optim, config.train
    require_choice(config, "data.source", SOURCES)
    require_choice(config, "data.name", image_datasets.NAMES)
    require_choice(config, "data.eval_split", EVAL_SPLITS)
    require(d.train_size >= 0 and d.validation_size >= 0,
            "config keys 'data.train_size' and 'data.validation_size' must be >= 0 (0: all / none).")
    require(d.eval_split != "validation" or d.validation_size > 0,
            "config key 'data.eval_split' is 'validation' but 'data.validation_size' is 0; hold some examples out.")
    image_models.validate_model(config, image_datasets.IMAGE_SHAPES[d.name])
    require(0.0 <= lo.label_smoothing < 1.0,
            f"config key 'loss.label_smoothing' must be in [0, 1), got {lo.label_smoothing}.")
    require(lo.l2 >= 0.0, f"config key 'loss.l2' must be >= 0, got {lo.l2}.")
    require_positive(config, "optim.learning_rate", "train.batch_size",
                     "train.eval_batch_size", "train.keep_checkpoints")
    require_choice(config, "optim.name", chains.OPTIMIZERS)
    require_choice(config, "optim.implementation", chains.IMPLEMENTATIONS)
    require_choice(config, "optim.schedule", chains.SCHEDULES)
    require(o.weight_decay >= 0 and o.grad_clip_norm >= 0,
            "config keys 'optim.weight_decay' and 'optim.grad_clip_norm' must be >= 0.")
    require(o.weight_decay == 0 or o.name not in chains.CLASSIC or o.name in chains.WITH_WEIGHT_DECAY,
            f"config key 'optim.weight_decay' is used by {' and '.join(chains.WITH_WEIGHT_DECAY)} only; set it to 0 "
            f"for {o.name} or use loss.l2 for an L2 penalty.")
    require(0 <= o.b1 < 1 and 0 <= o.b2 < 1 and 0 <= o.momentum < 1 and 0 <= o.rms_decay < 1,
            "config keys 'optim.b1', 'optim.b2', 'optim.momentum' and 'optim.rms_decay' must be in [0, 1).")
    require(t.num_epochs > 0 or t.num_steps > 0,
            "config key 'train.num_epochs' (or 'train.num_steps') must be positive.")
    require(t.num_epochs >= 0 and t.num_steps >= 0 and t.log_every >= 0 and t.eval_every >= 0
            and t.checkpoint_every >= 0 and t.early_stop_patience >= 0,
            "config keys 'train.num_epochs', 'num_steps', 'log_every', 'eval_every', 'checkpoint_every' and "
            "'early_stop_patience' must be >= 0.")
    validate_groups(config)


def load_data(config: ml_collections.ConfigDict) -> tuple[dict[str, ImageRecords], str]:
    """``{"train", "test"[, "validation"]}`` records and the source's name, as ``config.data`` asks."""
    d = config.data
    splits, source = image_datasets.load_splits(d.source, d.name, d.tfds_data_dir or None)
    return carve(splits, d.train_size, d.validation_size, config.seed), source


def carve(splits: dict[str, ImageRecords], train_size: int, validation_size: int,
          seed: int) -> dict[str, ImageRecords]:
    """Holds ``validation_size`` training examples out as ``validation``, then keeps the first
    ``train_size`` of the rest (0: all)."""
    splits = dict(splits)
    train = splits["train"]
    if validation_size:
        require(validation_size < len(train),
                f"config key 'data.validation_size' ({validation_size}) must be below the {len(train)} "
                f"training examples.")
        train, splits["validation"] = split_off(train, validation_size, seed)
    if train_size:
        require(train_size <= len(train),
                f"config key 'data.train_size' ({train_size}) is more than the {len(train)} training examples.")
        train = train[:train_size]
    splits["train"] = train
    return splits


def resolve_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> ml_collections.ConfigDict:
    """A copy of ``config`` whose ``train.num_steps`` (from ``num_epochs``) and 0-valued
    ``log_every``, ``eval_every``, ``checkpoint_every`` are set in steps (one epoch each)."""
    config = copy.deepcopy(config)
    t = config.train
    if t.num_epochs > 0:
        t.num_steps = t.num_epochs * steps_per_epoch
    for key in ("log_every", "eval_every", "checkpoint_every"):
        if t[key] == 0:
            t[key] = steps_per_epoch
    return config


def make_model(config: ml_collections.ConfigDict) -> nn.Module:
    """``image[B, H, W, C] -> logits[B, num_classes]``: the network ``config.model`` names."""
    return image_models.make_model(config)


def _nonzero(value) -> bool:
    return isinstance(value, jax.core.Tracer) or bool(value)


def make_loss_fn(model: nn.Module, label_smoothing: float = 0.0, l2: float = 0.0, *, layer_stats: bool = False):
    """``loss_fn(params, model_state, batch, rng, train)`` for batches ``{"image": [B, H, W, C], "label": [B]}``.

    Training: smoothed cross-entropy ``+ l2 * 0.5 * sum(w^2)``, dropout on (key ``rng``), batch
    norm on the batch's statistics; the returned model state holds the updated running
    averages. Evaluation (``train=False``): plain cross-entropy, dropout off, batch norm on
    the running averages, model state unchanged. Metrics: ``accuracy``, ``cross_entropy``
    (unsmoothed), in training ``l2_penalty`` (with ``l2``) and, with ``layer_stats``, the
    mean and std of each ReLU's input (:func:`p2t_jax.tasks.image_models.preactivation_stats`).
    """

    def loss_fn(params, model_state, batch, rng, train):
        mutable = list(model_state) + (["intermediates"] if layer_stats else []) if train else []
        out = model.apply({"params": params, **model_state}, batch["image"], rngs={"dropout": rng} if train else None,
                          mutable=mutable or False, **image_models.mode_kwargs(model, train))
        logits_BK, updates = out if mutable else (out, {})
        labels_B = batch["label"]
        plain = regularisation.cross_entropy(logits_BK, labels_B)
        metrics = {"accuracy": jnp.mean(logits_BK.argmax(-1) == labels_B), "cross_entropy": plain}
        if not train:
            return plain, (metrics, model_state)
        new_state = {k: updates[k] for k in model_state}
        if layer_stats:
            metrics.update(image_models.preactivation_stats(updates.get("intermediates", {})))
        # a traced value (a sweep's member's) counts as nonzero: smoothing by 0 and adding 0 * penalty
        # change nothing
        loss = regularisation.cross_entropy(logits_BK, labels_B, label_smoothing) if _nonzero(label_smoothing) else plain
        if _nonzero(l2):
            penalty = regularisation.l2_penalty(params)
            metrics["l2_penalty"] = penalty
            loss = loss + l2 * penalty
        return loss, (metrics, new_state)

    return loss_fn


def init_variables(model: nn.Module, image_shape: tuple[int, ...], rng: jax.Array) -> dict:
    """``{"params": ...}`` (and ``{"batch_stats": ...}`` with batch norm) for images of ``image_shape`` (``[H, W, C]``)."""
    return model.init(rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32), **image_models.mode_kwargs(model, False))


def build_with_batches(config: ml_collections.ConfigDict, splits: dict[str, ImageRecords] | None = None,
                       source: str = "given") -> tuple[Task, ImageBatches, ml_collections.ConfigDict]:
    """Wires data, model and loss for the loop.

    Args:
      config: an image-classification config (an ``experiment`` group, if any, is left out:
        see :func:`run_config`).
      splits: records to use instead of ``config.data``'s source (still carved by
        ``data.train_size`` / ``data.validation_size``); for tests and custom data.
      source: the name recorded for ``splits``.

    Returns:
      (the Task, its batches, the config with step counts resolved: pass this one to
      :func:`p2t_jax.training.loop.train_and_evaluate`).
    """
    config = run_config(config)
    validate(config)
    if splits is None:
        splits, source = load_data(config)
    else:
        splits = carve(splits, config.data.train_size, config.data.validation_size, config.seed)
    image_datasets.check_splits(splits, config.data.name, config.model.num_classes)
    batches = ImageBatches(splits, config.train.batch_size, config.seed, eval_split=config.data.eval_split,
                           eval_batch_size=config.train.eval_batch_size, augment=config.data.augment)
    config = resolve_steps(config, batches.steps_per_epoch)
    model = make_model(config)
    image_shape = splits["train"].images.shape[1:]
    deep = config.model.name in image_models.DEEP_MODELS
    task = Task(
        init_variables=lambda rng: init_variables(model, image_shape, rng),
        loss_fn=make_loss_fn(model, config.loss.label_smoothing, config.loss.l2, layer_stats=deep),
        hyper_loss_fn=lambda hyper: make_loss_fn(model, hyper.get("loss.label_smoothing", config.loss.label_smoothing),
                                                 hyper.get("loss.l2", config.loss.l2), layer_stats=deep),
        hyper_keys=("loss.label_smoothing", "loss.l2"),
        train_batch=batches.train_batch, eval_batches=batches.eval_batches,
        items_per_batch=config.train.batch_size, items_name="examples",
        meta={"data_source": source, "steps_per_epoch": batches.steps_per_epoch,
              **{f"{name}_examples": len(records) for name, records in splits.items()}},
        grad_metrics=image_models.kernel_grad_norms if deep else None)
    return task, batches, config


def build(config: ml_collections.ConfigDict) -> tuple[Task, ml_collections.ConfigDict]:
    """The loop's Task for ``config`` and the step-resolved config (the task registry's entry)."""
    task, _, config = build_with_batches(config)
    return task, config


def make_task(config: ml_collections.ConfigDict) -> Task:
    """The loop's Task for ``config`` (note: use :func:`build` to get the step-resolved config too)."""
    return build(config)[0]


def describe(task: Task) -> str:
    """One line on the data, for the ``p2t`` command."""
    sizes = ", ".join(f"{v:,} {k.removesuffix('_examples')}" for k, v in task.meta.items() if k.endswith("_examples"))
    return f"{task.meta['data_source']} ({sizes} examples)"


def evaluate_split(task: Task, state, batches: ImageBatches, split: str, eval_step=None) -> dict[str, float]:
    """Mean eval metrics (``loss``, ``accuracy``, ...) of ``state`` over every example of ``split``.

    ``eval_step``: a jitted ``make_eval_step(task.loss_fn)`` to reuse (:func:`shared_eval_step`);
    None: one is compiled for this call.
    """
    step = jax.jit(make_eval_step(task.loss_fn)) if eval_step is None else eval_step
    return evaluate(step, state, batches.eval_batches(split))


_EVAL_STEPS: dict[str, object] = {}  # compiled evaluation steps by model, see shared_eval_step


def shared_eval_step(task: Task, config: ml_collections.ConfigDict, image_shape: tuple[int, ...]):
    """The jitted evaluation step of ``task``, one per model and image shape in this process.

    The evaluation loss does not depend on ``loss.*`` (it is the plain cross-entropy) nor on
    ``model.dropout_rate`` (dropout is off), so runs that differ only there, or only in seed
    or optimiser, share one step and its compilations (one per batch shape).
    """
    model = dict(config.model.to_dict(), dropout_rate=0.0)
    key = json.dumps([model, list(image_shape)], sort_keys=True, default=str)
    if key not in _EVAL_STEPS:
        _EVAL_STEPS[key] = jax.jit(make_eval_step(task.loss_fn))
    return _EVAL_STEPS[key]


def curves_from_metrics(run_dir: str | pathlib.Path, steps_per_epoch: int) -> dict[str, list[float]]:
    """A run's curves read back from its ``metrics.jsonl`` (the last record per step wins).

    Returns:
      ``train_step``, ``train_epoch``, ``train_loss``, ``train_accuracy`` per logged interval
      (running means over the interval's batches, in training mode); ``eval_step``,
      ``eval_epoch``, ``eval_loss``, ``eval_accuracy`` per evaluation, and ``eval_seconds``:
      training seconds up to that evaluation (each interval's ms/step times its steps;
      compilation, evaluation and saving left out).
    """
    train = {r["step"]: r for r in read_metrics(run_dir, "train")}
    evals = {r["step"]: r for r in read_metrics(run_dir, "eval")}
    steps, eval_steps = sorted(train), sorted(evals)
    seconds, total, previous = {}, 0.0, 0
    for step in steps:
        total += train[step]["ms_per_step"] * (step - previous) / 1000
        seconds[step], previous = total, step
    return {
        "train_step": steps, "train_epoch": [s / steps_per_epoch for s in steps],
        "train_loss": [train[s]["loss"] for s in steps], "train_accuracy": [train[s]["accuracy"] for s in steps],
        "eval_step": eval_steps, "eval_epoch": [s / steps_per_epoch for s in eval_steps],
        "eval_loss": [evals[s]["loss"] for s in eval_steps], "eval_accuracy": [evals[s]["accuracy"] for s in eval_steps],
        "eval_seconds": [seconds.get(s, float("nan")) for s in eval_steps],
    }


def weight_summary(params, first_layer: str = "dense_0") -> dict:
    """Standard deviation and max ``|w|`` of the first layer's kernel; L2 norm of all weight matrices (and kernels)."""
    kernel = np.asarray(params[first_layer]["kernel"])
    return {"std": float(kernel.std()), "max_abs": float(np.abs(kernel).max()),
            "weights_l2_norm": float(np.sqrt(2 * regularisation.l2_penalty(params)))}


def run_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config`` without its ``experiment`` group (knobs of an experiment script, not of one run)."""
    config = copy.deepcopy(config)
    if "experiment" in config:
        with config.unlocked():
            del config["experiment"]
    return config


def train_or_reuse(config: ml_collections.ConfigDict, run_dir: str | pathlib.Path, splits: dict[str, ImageRecords],
                   source: str, *, log=print) -> dict:
    """Trains one run through the loop in ``run_dir`` and measures it, or reads the measurements
    back from ``run_dir/result.json`` when that holds the same (step-resolved) config. The
    ``experiment`` group, if any, is left out of the run's config (:func:`run_config`).

    After training, the final parameters (with early stopping: the best checkpoint by eval
    loss) are evaluated in evaluation mode on every split, and their first-layer kernel is
    saved as ``run_dir/first_layer_kernel.npy``.

    Returns:
      JSON-ready: ``splits`` (``{split: {"accuracy", "loss"}}``), ``test_accuracy``,
      ``test_loss``, ``steps``, ``epochs``, ``early_stopped_at``, ``kept`` (``"best"`` or
      ``"last"``), ``wall_s`` (training call), ``compile_s``, ``ms_per_step``,
      ``weights`` (:func:`weight_summary`), ``curves`` (:func:`curves_from_metrics`), ``config``,
      ``first_step`` (the train metrics of step 1, from the loop; None when this call resumed a
      run). Timings are None when the folder held a finished run and nothing was left to train.
    """
    run_dir = pathlib.Path(run_dir)
    task, batches, config = build_with_batches(config, splits=splits, source=source)
    done = run_dir / "result.json"
    if done.exists():
        saved = json.loads(done.read_text())
        if saved.get("config") == json.loads(config.to_json()):
            log(f"  {run_dir.name}: finished earlier; read back from {done}")
            return saved
    start = time.perf_counter()
    steps: dict = {}
    state, summary = train_and_evaluate(task, config, run_dir, progress=False, steps=steps)
    wall = time.perf_counter() - start if summary["final_step"] > summary["start_step"] else None
    kept = "last"
    if config.train.early_stop_patience:
        state, _ = restore_state(task.init_variables, config, run_dir, best=True)
        kept = "best"
    first = image_models.first_layer(config)
    np.save(run_dir / "first_layer_kernel.npy", np.asarray(state.params[first]["kernel"]))
    # the loop's own evaluation step (traced and compiled already) for its final state on one device
    one_device = all(len(x.sharding.device_set) == 1 for x in jax.tree.leaves(state.params))
    eval_step = (steps["eval"] if kept == "last" and one_device
                 else shared_eval_step(task, config, batches.splits["train"].images.shape[1:]))
    measured = {name: evaluate_split(task, state, batches, name, eval_step) for name in batches.splits}
    spe = batches.steps_per_epoch
    result = {
        "splits": {k: {"accuracy": v["accuracy"], "loss": v["loss"]} for k, v in measured.items()},
        "test_accuracy": measured["test"]["accuracy"], "test_loss": measured["test"]["loss"],
        "steps": summary["final_step"], "epochs": summary["final_step"] / spe, "steps_per_epoch": spe,
        "early_stopped_at": summary.get("early_stopped_at"), "kept": kept,
        "kept_step": int(state.step), "wall_s": wall, "compile_s": summary["compile_s"],
        "ms_per_step": summary["ms_per_step_median"], "resumed_from": summary["resumed_from"],
        "data_source": source, "batch_size": config.train.batch_size,
        "weights": weight_summary(state.params, first),
        "curves": curves_from_metrics(run_dir, spe), "config": json.loads(config.to_json()),
        "first_step": summary.get("first_step"),
    }
    write_json(done, result)
    return result


def train_each_or_reuse(jobs: Sequence[tuple[ml_collections.ConfigDict, pathlib.Path]],
                        splits: dict[str, ImageRecords], source: str, *, workers: int = 1,
                        log=print) -> Iterator[dict]:
    """:func:`train_or_reuse` for every ``(config, run_dir)`` of ``jobs``, ``workers`` of them side
    by side; yields the results in the order of ``jobs``, each as soon as it and those before it
    are done.

    With ``workers > 1`` the runs go to that many worker processes (each the one loop, in its
    own folder; started once, each trains its share of the runs one after another). The runs
    are independent and each is deterministic, so the results are the same for any
    ``workers``; two at a time keep both cores of a 2-core machine busy where one small step,
    and every compilation, uses one. No more workers start than this process has cores
    (:func:`p2t_jax.resources.usable_cores`): on one core a second worker only competes with the
    first (chapter 6 kept to one core, ``taskset -c 0``: 120 s with two workers, 98 s with one).
    A failed run stops the runs not yet started and is raised here; Ctrl-C reaches the workers
    too, and each stops its run at a step boundary, saved.
    """
    workers = min(workers, usable_cores())
    if workers <= 1:
        for config, run_dir in jobs:
            yield train_or_reuse(config, run_dir, splits, source, log=log)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process whose JAX runtime has started
    with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context,
                                                initializer=keep_freed_host_memory) as pool:
        futures = [pool.submit(train_or_reuse, config, pathlib.Path(run_dir), splits, source, log=log)
                   for config, run_dir in jobs]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.cancel()
