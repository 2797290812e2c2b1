"""Chapter 7 on CIFAR-10: ResNet-20 (He et al. 2016, section 4.2), or its plain twin.

Variants (``--config configs/cifar10_resnet.py:VARIANT``):

* ``resnet20`` (default) ResNet-20 (269,722 parameters) on TFDS ``cifar10`` (prepare it
               with ``tfds build cifar10``; nothing downloads here); SGD with momentum 0.9,
               lr 0.1 on a cosine schedule, L2 1e-4 in the loss (the paper's weight decay),
               batch 128, 160 epochs (62,400 steps; the paper: 64,000), random crops from
               4-pixel zero padding and horizontal flips, data parallel over every device.
               A GPU run: on a 2-core CPU one epoch takes far too long.
* ``plain20``  the same without the skip connections.
* ``smoke``    ResNet-8 of width 4 for tests (on ``tfds.testing.mock_data``).

Train with ``p2t train --config configs/cifar10_resnet.py --workdir runs/resnet20``; change
depth with ``--config.model.depth=56`` (6n + 2). He et al. report 8.75% test error for
ResNet-20 and plain-56 worse than plain-20 (their Fig. 6).
"""


from p2t_jax.tasks.image_classification import default_config


def get_config(arg=None):
    variant = arg or "resnet20"
    c = default_config()
    c.variant = variant
    c.data.name, c.data.source = "cifar10", "tfds"
    c.data.augment = True
    c.model.name = "resnet"
    c.model.depth, c.model.width = 20, 16
    c.model.residual, c.model.batch_norm = True, True
    c.loss.l2 = 1e-4
    c.optim.name, c.optim.learning_rate, c.optim.momentum = "momentum", 0.1, 0.9
    c.optim.schedule, c.optim.warmup_steps = "warmup_cosine", 400
    c.train.batch_size, c.train.num_epochs, c.train.eval_batch_size = 128, 160, 1000

    # Data parallel over every device (README, "Scaling out"): the parameters carry no logical
    # axis names, so they are replicated, the batch is split, and batch norm's statistics are
    # the global batch's. Not part of what a resumed run must match.
    c.parallel.mesh_shape = (-1, 1, 1)  # devices along (data, fsdp, tensor); -1: the rest

    if variant == "resnet20":
        pass
    elif variant == "plain20":
        c.model.residual = False
    elif variant == "smoke":
        c.data.train_size = 64
        c.data.augment = True
        c.model.depth, c.model.width = 8, 4
        c.optim.learning_rate, c.optim.warmup_steps = 0.05, 0
        c.train.batch_size, c.train.num_epochs, c.train.eval_batch_size = 16, 2, 16
    else:
        raise ValueError(f"unknown variant '{variant}'; choose resnet20, plain20 or smoke")
    return c
