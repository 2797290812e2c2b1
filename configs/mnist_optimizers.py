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

from p2t_jax.tasks.image_classification import default_config


def get_config(arg=None):
    variant = arg or "embedded"
    c = default_config()
    c.variant = variant

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
