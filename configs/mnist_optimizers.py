"""Chapter 4: one MLP on MNIST, trained with different optimisers.

Variants (``--config configs/mnist_optimizers.py:VARIANT``):

* ``embedded`` (default) a 784-128-10 ReLU MLP on the 5,000 embedded digits (4,000 train,
               1,000 test), batch 32, 10 epochs, each optimiser at its common default
               learning rate, constant.
* ``full``     a 784-512-512-10 MLP with dropout 0.2 on full MNIST from TFDS (prepare it
               with ``tfds build mnist``), Adam 1e-3 with cosine decay, batch 128, 20 epochs.
* ``smoke``    tiny, for tests.

The ``experiment`` group is read by ``experiments/04_optimisers.py`` only: which
optimisers to train side by side, their learning rates, and the loss-surface figure.
"""

import ml_collections


def get_config(arg=None):
    variant = arg or "embedded"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0  # one seed for init, dropout and the order of examples

    c.data = ml_collections.ConfigDict()
    c.data.source = "auto"  # auto: TFDS if prepared, else the embedded digits; or tfds / embedded
    c.data.name = "mnist"  # mnist or fashion_mnist (the latter from TFDS only)
    c.data.tfds_data_dir = ""  # TFDS data dir; "" means TFDS's default ($TFDS_DATA_DIR)
    c.data.train_size = 0  # keep the first N training examples; 0: all
    c.data.validation_size = 0  # hold N training examples out as a validation split; 0: none
    c.data.eval_split = "test"  # the split the loop evaluates each epoch: test or validation

    c.model = ml_collections.ConfigDict()
    c.model.hidden = (128,)  # hidden layer widths; the input is 784 pixels, the output num_classes
    c.model.activation = "relu"  # sigmoid, tanh, relu, gelu or linear
    c.model.dropout_rate = 0.0  # dropout after each hidden layer (training only)
    c.model.num_classes = 10

    c.loss = ml_collections.ConfigDict()
    c.loss.label_smoothing = 0.0  # alpha: the target gets 1 - alpha + alpha / K on the true class
    c.loss.l2 = 0.0  # lambda of the L2 penalty lambda * 0.5 * sum(w^2) on weight matrices

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"  # sgd, momentum, nesterov, rmsprop, adam, adamw or lion
    c.optim.implementation = "scratch"  # scratch: p2t_jax/optim/scratch.py; optax: Optax's own
    c.optim.learning_rate = 1e-3  # peak (or constant) learning rate
    c.optim.schedule = "constant"  # constant or warmup_cosine
    c.optim.end_learning_rate = 0.0  # warmup_cosine decays to this
    c.optim.warmup_steps = 0  # warmup_cosine: linear warm-up from 0
    c.optim.decay_steps = 0  # warmup_cosine: cosine length; 0 means train.num_steps
    c.optim.momentum = 0.9  # momentum / nesterov: the velocity's decay
    c.optim.rms_decay = 0.9  # rmsprop: decay of the mean square
    c.optim.b1 = 0.9  # adam, adamw, lion
    c.optim.b2 = 0.999  # adam, adamw, lion
    c.optim.eps = 1e-8  # adam, adamw, rmsprop
    c.optim.weight_decay = 0.0  # decoupled weight decay (adamw and lion only), on weight matrices
    c.optim.grad_clip_norm = 0.0  # clip_by_global_norm; 0 turns it off

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # examples per update
    c.train.num_epochs = 10  # passes over the training split; sets num_steps
    c.train.num_steps = 0  # set from num_epochs (used as is when num_epochs is 0)
    c.train.log_every = 0  # train metrics every N steps; 0: once per epoch
    c.train.eval_every = 0  # evaluation every N steps; 0: once per epoch
    c.train.eval_batch_size = 1000  # largest evaluation batch (a divisor of the split size is used)
    c.train.checkpoint_every = 0  # Orbax save every N steps (and at each eval and the end); 0: per epoch
    c.train.keep_checkpoints = 1  # latest saves kept (the best by eval loss is kept apart)
    c.train.early_stop_patience = 0  # stop after N evaluations without a lower eval loss; 0: never

    c.experiment = ml_collections.ConfigDict()
    c.experiment.optimizers = ("sgd", "momentum", "adam")  # trained side by side (any of optim.name's)
    c.experiment.learning_rates = ml_collections.ConfigDict(dict(  # per optimiser: the common defaults
        sgd=0.01, momentum=0.01, nesterov=0.01, rmsprop=1e-3, adam=1e-3, adamw=1e-3, lion=1e-4))
    c.experiment.decoupled_weight_decay = 1e-4  # optim.weight_decay for adamw and lion
    c.experiment.full_batch_optimizer = "adam"  # trained once more on the whole training split per update
    c.experiment.full_batch_steps = 100  # updates of the full-batch run
    c.experiment.surface = "rosenbrock"  # loss-surface figure: rosenbrock or quadratic
    c.experiment.surface_steps = 500  # optimiser steps drawn on the surface
    c.experiment.surface_learning_rates = ml_collections.ConfigDict(dict(  # per optimiser, on the surface
        sgd=1e-3, momentum=1e-3, nesterov=1e-3, rmsprop=1e-2, adam=5e-2, adamw=5e-2, lion=1e-2))

    if variant == "embedded":
        pass
    elif variant == "full":
        c.data.source = "tfds"
        c.model.hidden, c.model.dropout_rate = (512, 512), 0.2
        c.optim.schedule, c.optim.warmup_steps = "warmup_cosine", 200
        c.train.batch_size, c.train.num_epochs = 128, 20
        c.experiment.optimizers = ("adam",)
        c.experiment.full_batch_steps = 0
    elif variant == "smoke":
        c.data.source = "embedded"
        c.data.train_size = 256
        c.model.hidden = (32,)
        c.optim.learning_rate = 1e-2
        c.train.batch_size, c.train.num_epochs, c.train.eval_batch_size = 32, 2, 250
        c.experiment.full_batch_steps = 5
        c.experiment.surface_steps = 50
    else:
        raise ValueError(f"unknown variant '{variant}'; choose embedded, full or smoke")
    return c
