"""Chapter 3: hand-written backpropagation, and XOR trained by gradient descent over many seeds.

Variants (``--config configs/backprop.py:VARIANT``):

* ``default`` 256 seeds x 5,000 full-batch steps per architecture and learning rate.
* ``smoke``   32 seeds x 1,500 steps and a short learning-rate list, for tests.
"""

import ml_collections


def get_config(arg=None):
    variant = arg or "default"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0  # root PRNG key: gradient-check problems and every run's initial weights

    c.gradcheck = ml_collections.ConfigDict()
    c.gradcheck.num_shapes = 3  # random MLP shapes checked against jax.grad (float64), one compile each
    c.gradcheck.max_width = 8  # widths drawn from 1..max_width
    c.gradcheck.max_layers = 4  # layer counts drawn from 1..max_layers
    c.gradcheck.max_batch = 9  # batch sizes drawn from 1..max_batch
    c.gradcheck.tolerance = 1e-6  # max |hand - jax.grad| allowed, in float64

    c.xor = ml_collections.ConfigDict()
    c.xor.activation = "sigmoid"  # hidden activation: sigmoid, tanh or relu
    c.xor.loss = "bce"  # bce (cross-entropy on sigmoid(logit)) or mse (squared error on sigmoid(logit))
    c.xor.num_seeds = 256  # independent initialisations, all trained at once with vmap
    c.xor.num_steps = 5000  # full-batch gradient-descent steps per run
    c.xor.hidden_widths = (2, 4)  # the 2-H-1 architectures compared at smooth_lr
    c.xor.smooth_lr = 0.5  # the learning rate of the architecture comparison
    c.xor.sweep_hidden = 4  # the hidden width of the learning-rate sweep (2-4-1)
    c.xor.learning_rates = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # the sweep; must include smooth_lr
    c.xor.rise_tolerance = 1e-3  # a step raises the loss if it grows by more than this fraction
    c.xor.oscillation_share = 0.01  # a run oscillates if more than this share of its steps raise the loss
    c.xor.timing_repeats = 3  # timings (vmap and Python loop, after a warm-up call) are the best of this many

    c.plot = ml_collections.ConfigDict()
    c.plot.points = 400  # steps drawn per curve (evenly spaced)
    c.plot.band = (0.1, 0.9)  # quantiles of the band around the median in the loss figure

    if variant == "default":
        pass
    elif variant == "smoke":
        c.gradcheck.num_shapes, c.gradcheck.max_layers, c.gradcheck.max_width = 1, 2, 4
        c.xor.num_seeds, c.xor.num_steps = 32, 1500
        c.xor.learning_rates = (0.5, 1.0, 32.0)
        c.xor.timing_repeats = 1
        c.plot.points = 100
    else:
        raise ValueError(f"unknown variant '{variant}'; choose default or smoke")
    return c
