"""Chapter 2: stacked linear layers collapse to one; a hand-set 2-2-1 sigmoid MLP solves XOR.

Variants (``--config configs/xor_mlp.py:VARIANT``):

* ``default`` 4 random shapes x 16 random linear stacks; figures at full resolution.
* ``smoke``   fewer stacks, coarse figures, for tests.
"""

import ml_collections


def get_config(arg=None):
    variant = arg or "default"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0  # root PRNG key for the random stacks and inputs

    c.collapse = ml_collections.ConfigDict()
    c.collapse.num_shapes = 4  # random shapes of linear stacks (one compile each)
    c.collapse.num_stacks = 16  # random stacks (weights and inputs) per shape
    c.collapse.max_width = 16  # widths (input, hidden, output) drawn from 1..max_width
    c.collapse.max_layers = 4  # layer counts drawn from 2..max_layers
    c.collapse.batch_size = 32  # random inputs per trial
    c.collapse.tolerance = 1e-5  # float32: max |stack(x) - (x W + b)| relative to max |stack(x)|
    c.collapse.nonlinear_activation = "tanh"  # the same stacks with this activation must NOT collapse

    c.hand = ml_collections.ConfigDict()
    c.hand.scale = 20.0  # s: OR = sig(s x1 + s x2 - s/2), AND = sig(s x1 + s x2 - 3s/2), out = s OR - s AND - s/2
    c.hand.max_output_error = 1e-3  # every output within this of its XOR target
    c.hand.perceptron_epochs = 50  # chapter 1's rule on the hidden features must reach zero errors within this

    c.plot = ml_collections.ConfigDict()
    c.plot.grid = 241  # points per side of the decision-band image
    c.plot.z_range = 5.0  # activations drawn on [-z_range, z_range]

    if variant == "default":
        pass
    elif variant == "smoke":
        c.collapse.num_shapes, c.collapse.num_stacks = 2, 4
        c.plot.grid = 41
    else:
        raise ValueError(f"unknown variant '{variant}'; choose default or smoke")
    return c
