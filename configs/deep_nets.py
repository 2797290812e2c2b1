"""Chapter 7: deep MLPs on MNIST, plain or residual, with or without batch norm.

Variants (``--config configs/deep_nets.py:VARIANT``):

* ``embedded`` (default) a 30-layer, width-128 residual MLP with batch norm (``deep_mlp``)
               on the 5,000 embedded digits (4,000 train, 1,000 test); SGD with momentum
               0.9 at lr 0.01 (constant), batch 64, 8 epochs (496 steps).
* ``smoke``    tiny, for tests.

``p2t train --config configs/deep_nets.py --workdir W --config.model.residual=false``
trains one net. The ``experiment`` group is read by ``experiments/07_batchnorm_residual.py``
only: it trains every (plain / residual) x (without / with batch norm) x depth net with
this config's data, optimiser and budget.

Why 8 epochs: the chapter's measures have settled by then. With a constant learning rate an
8-epoch run is the first half of a 16-epoch one (the same steps on the same batches); in the
16-epoch runs (`p2t reproduce`, 2026-12-03) the training loss logged over steps 466-496 already
ordered the plain nets by depth, 0.28 / 1.46 / 2.30 without batch norm and 0.09 / 0.30 / 0.83
with it (the claims ask for a rise to >= 2x depth 10's), while the residual nets' rose by at most
0.03 and 0.015 (the claims allow a tenth of the plain nets' rise: 0.20 and 0.075); the depth-30
plain net's layer-1 gradient is 1e5 times below the residual net's from the first step on, and
the batch-norm band holds at every logged step. Half the steps halve the chapter's step time.

Plain SGD (not Adam) is the optimiser on purpose: Adam divides each gradient by its own
running RMS, so a layer whose gradient has vanished still takes full-sized steps, and the
effect this chapter measures would be hidden from the training curves.
"""

import ml_collections

from p2t_jax.tasks.image_classification import default_config


def get_config(arg=None):
    variant = arg or "embedded"
    c = default_config()
    c.variant = variant
    c.model.name = "deep_mlp"
    c.model.depth, c.model.width = 30, 128
    c.model.residual, c.model.batch_norm = True, True
    c.optim.name, c.optim.learning_rate, c.optim.momentum = "momentum", 0.01, 0.9
    c.train.batch_size, c.train.num_epochs = 64, 8  # 62 steps per epoch: 496 steps (settled: see above)
    c.train.log_every = 31  # twice per epoch: the per-layer curves have 16 points
    c.train.eval_every = c.train.checkpoint_every = 248  # every 4 epochs (and at the end)

    c.experiment = ml_collections.ConfigDict()
    c.experiment.depths = (10, 20, 30)  # every net is trained at each depth
    c.experiment.claim_depth = 30  # the depth of the gradient and activation claims
    c.experiment.seeds = 1  # each net is trained with seeds seed .. seed + N - 1 (claims on their means)
    c.experiment.gradient_ratio = 100.0  # claim: the plain net's layer-1 gradient is this many times smaller
    c.experiment.bn_mean_tolerance = 0.25  # claim: with BN every layer's pre-activation |mean| stays below this
    c.experiment.bn_std_range = (0.75, 1.33)  # ... and its std inside this range, at every logged step
    c.experiment.degradation_factor = 2.0  # claim: the deepest plain net's loss is >= this many times the shallowest's
    c.experiment.residual_rise_fraction = 0.1  # claim: residual losses rise by <= this fraction of the plain nets' rise
    c.experiment.compare_adam = True  # also train the claim-depth nets without BN with Adam (no claim: a note)
    c.experiment.adam_learning_rate = 1e-3
    c.experiment.workers = 2  # runs trained side by side (threads); the results do not depend on it

    if variant == "embedded":
        pass
    elif variant == "smoke":  # the mechanics at depth 8, with thresholds a depth-8 net can show
        c.data.source = "embedded"
        c.data.train_size = 512
        c.model.width = 32
        c.train.num_epochs, c.train.eval_batch_size, c.train.log_every = 12, 250, 8
        c.train.eval_every = c.train.checkpoint_every = 96
        c.experiment.depths = (2, 8)
        c.experiment.claim_depth = 8
        c.experiment.gradient_ratio = 5.0
        c.experiment.degradation_factor = 1.5
        c.experiment.compare_adam = False
        c.experiment.workers = 1  # one process: no worker start-up in tests
    else:
        raise ValueError(f"unknown variant '{variant}'; choose embedded or smoke")
    return c
