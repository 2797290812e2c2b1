"""Chapter 5: an over-sized MLP that overfits the embedded MNIST digits, and regularisers.

Variants (``--config configs/mnist_regularisation.py:VARIANT``):

* ``embedded`` (default) a 784-512-512-10 ReLU MLP on 3,500 of the embedded training digits
               (500 more held out for validation, 1,000 test), AdamW 1e-3 without decay on a
               cosine schedule, batch 64, 40 epochs.
* ``smoke``    tiny, for tests.

The ``experiment`` group is read by ``experiments/05_regularisation.py`` only: each run
is the base config plus one regulariser (or two) at the strength given here.
"""

import ml_collections


def get_config(arg=None):
    variant = arg or "embedded"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0  # one seed for init, dropout, the validation split and the order of examples

    c.data = ml_collections.ConfigDict()
    c.data.source = "auto"  # auto: TFDS if prepared, else the embedded digits; or tfds / embedded
    c.data.name = "mnist"  # mnist or fashion_mnist (the latter from TFDS only)
    c.data.tfds_data_dir = ""  # TFDS data dir; "" means TFDS's default ($TFDS_DATA_DIR)
    c.data.train_size = 0  # keep the first N training examples (after the validation hold-out); 0: all
    c.data.validation_size = 500  # hold N training examples out as a validation split (early stopping)
    c.data.eval_split = "test"  # the split the loop evaluates each epoch: test or validation

    c.model = ml_collections.ConfigDict()
    c.model.hidden = (512, 512)  # hidden layer widths: ~670K weights for 3,500 examples
    c.model.activation = "relu"  # sigmoid, tanh, relu, gelu or linear
    c.model.dropout_rate = 0.0  # dropout after each hidden layer (training only)
    c.model.num_classes = 10

    c.loss = ml_collections.ConfigDict()
    c.loss.label_smoothing = 0.0  # alpha: the target gets 1 - alpha + alpha / K on the true class
    c.loss.l2 = 0.0  # lambda of the L2 penalty lambda * 0.5 * sum(w^2) on weight matrices

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"  # sgd, momentum, nesterov, rmsprop, adam, adamw or lion
    c.optim.implementation = "scratch"  # scratch: p2t_jax/optim/scratch.py; optax: Optax's own
    c.optim.learning_rate = 1e-3  # peak (or constant) learning rate
    c.optim.schedule = "warmup_cosine"  # constant or warmup_cosine
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
    c.train.batch_size = 64  # examples per update
    c.train.num_epochs = 40  # passes over the training split; sets num_steps
    c.train.num_steps = 0  # set from num_epochs (used as is when num_epochs is 0)
    c.train.log_every = 0  # train metrics every N steps; 0: once per epoch
    c.train.eval_every = 0  # evaluation every N steps; 0: once per epoch
    c.train.eval_batch_size = 1000  # largest evaluation batch (a divisor of the split size is used)
    c.train.checkpoint_every = 0  # Orbax save every N steps (and at each eval and the end); 0: per epoch
    c.train.keep_checkpoints = 1  # latest saves kept (the best by eval loss is kept apart)
    c.train.early_stop_patience = 0  # stop after N evaluations without a lower eval loss; 0: never

    c.experiment = ml_collections.ConfigDict()
    c.experiment.runs = ("baseline", "dropout", "weight_decay", "dropout+decay", "l2", "label_smoothing",
                         "early_stopping")  # which runs to train (see experiments/05_regularisation.py)
    c.experiment.dropout_rate = 0.2  # model.dropout_rate of the dropout runs
    c.experiment.weight_decay = 1e-4  # optim.weight_decay (decoupled, AdamW) of the decay runs
    c.experiment.l2 = 1e-4  # loss.l2 of the L2-penalty run
    c.experiment.label_smoothing = 0.1  # loss.label_smoothing of the label-smoothing run
    c.experiment.patience = 5  # train.early_stop_patience of the early-stopping run (on validation loss)
    c.experiment.claim_seeds = 3  # baseline and dropout+decay are trained with seeds seed .. seed + N - 1
    c.experiment.histogram_range = 0.25  # weight histograms bin [-r, r] (values beyond land in the end bins)

    if variant == "embedded":
        pass
    elif variant == "smoke":
        c.data.source = "embedded"
        c.data.train_size, c.data.validation_size = 256, 100
        c.model.hidden = (64,)
        c.train.batch_size, c.train.num_epochs, c.train.eval_batch_size = 32, 3, 250
        c.experiment.patience, c.experiment.claim_seeds = 1, 1
    else:
        raise ValueError(f"unknown variant '{variant}'; choose embedded or smoke")
    return c
