"""Chapter 1: Rosenblatt's perceptron on logic gates and on separable points.

Variants (``--config configs/perceptron.py:VARIANT``):

* ``default`` 100 seeds x 1,000 epochs per gate; 100 separable data sets of 200 points
              with margins from 0.02 to 0.2.
* ``smoke``   a few seeds and epochs, for tests.
"""

import ml_collections


def get_config(arg=None):
    variant = arg or "default"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0  # root PRNG key: seeds, initial weights, example orders and data sets derive from it

    c.gates = ml_collections.ConfigDict()
    c.gates.names = ("AND", "OR", "NAND", "XOR")  # gates to train on (from p2t_jax.data.logic.GATES)
    c.gates.num_seeds = 100  # independent runs per gate, vmapped
    c.gates.num_epochs = 1000  # epochs per run
    c.gates.learning_rate = 1.0  # the rule's step size: w += lr * (y - y_hat) * x
    c.gates.init_scale = 0.5  # initial w and b drawn from N(0, init_scale^2); 0 starts at zero
    c.gates.shuffle = True  # a fresh random example order every epoch

    c.separable = ml_collections.ConfigDict()
    c.separable.num_datasets = 100  # random separable problems (one run each, from zero weights)
    c.separable.num_points = 200  # N points per problem
    c.separable.dim = 2  # D input dimensions
    c.separable.margin_min = 0.02  # each data set's margin gamma (no point nearer the true line) is drawn
    c.separable.margin_max = 0.2  # log-uniformly from [margin_min, margin_max]
    c.separable.num_epochs = 500  # epochs per run (each epoch before convergence costs at least one update)
    c.separable.learning_rate = 1.0  # the bound does not depend on it (the run starts at zero)

    c.plot = ml_collections.ConfigDict()
    c.plot.epochs = 12  # epochs of decision lines drawn in the AND and XOR figures
    c.plot.error_epochs = 40  # epochs shown in the errors-per-epoch figure

    if variant == "default":
        pass
    elif variant == "smoke":
        c.gates.num_seeds, c.gates.num_epochs = 8, 60
        c.separable.num_datasets, c.separable.num_points, c.separable.num_epochs = 8, 40, 200
        c.plot.epochs, c.plot.error_epochs = 6, 20
    else:
        raise ValueError(f"unknown variant '{variant}'; choose default or smoke")
    return c
