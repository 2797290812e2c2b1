"""Character-level Shakespeare Transformer.

Variants (``--config configs/shakespeare.py:VARIANT``):

* ``small``       ~112K parameters: width 64, 2 layers, 4 heads, context 64 (the default).
* ``large``       ~826K parameters: width 128, 4 layers, 4 heads, context 128.
* ``nanogpt_cpu`` nanoGPT's CPU recipe: 4 layers, 4 heads, width 128, context 64,
                  batch 12, 2,000 steps, cosine to lr/10, 100 warm-up, beta2 0.99,
                  no dropout, no biases, tied embeddings; peak lr 3e-3 where nanoGPT
                  uses 1e-3, which under-trains in 2,000 steps (README: the lr sweep).
* ``smoke``       tiny, for tests.
"""

import ml_collections


def get_config(arg=None):
    variant = arg or "small"
    c = ml_collections.ConfigDict()
    c.variant = variant
    c.seed = 0  # one seed for init, dropout and data order

    c.data = ml_collections.ConfigDict()
    c.data.source = "auto"  # auto: TFDS tiny_shakespeare if prepared, else embedded; or tfds / embedded
    c.data.tfds_data_dir = ""  # TFDS data dir; "" means TFDS's default ($TFDS_DATA_DIR)

    c.model = ml_collections.ConfigDict()
    c.model.vocab_size = 65  # the 65-character tiny-shakespeare alphabet
    c.model.max_len = 64  # context length in characters
    c.model.emb_dim = 64  # residual width D
    c.model.num_heads = 4  # attention heads; must divide emb_dim
    c.model.num_layers = 2  # Transformer blocks
    c.model.mlp_dim = 256  # MLP hidden width (4 * D)
    c.model.dropout_rate = 0.0  # attention and residual dropout
    c.model.use_bias = True  # biases in Dense and LayerNorm
    c.model.tie_embeddings = False  # output head shares the token embedding
    c.model.gelu_approximate = False  # tanh GELU (GPT-2) instead of exact erf
    c.model.dtype = "float32"  # compute dtype: float32 or bfloat16 (params stay float32)
    c.model.scan_layers = False  # nn.scan over the blocks: compile time flat in depth
    # How the projections run; the parameters are the same either way, so checkpoints move
    # between backends. auto: rows on CPU, general elsewhere; rows: on [B*T, D] rows through
    # p2t_jax.models.dense.Dense (plain-matmul weight gradients, the faster XLA-CPU kernels);
    # general: nn.DenseGeneral on [B, T, D] (what GPUs and TPUs want).
    c.model.dense_impl = "auto"

    c.optim = ml_collections.ConfigDict()
    c.optim.learning_rate = 3e-3  # peak learning rate after warm-up
    c.optim.end_learning_rate = 3e-4  # cosine decays to this
    c.optim.warmup_steps = 100  # linear warm-up from 0
    c.optim.decay_steps = 0  # cosine length; 0 means train.num_steps
    c.optim.b1 = 0.9
    c.optim.b2 = 0.99
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.1  # decoupled, on matrices and embeddings only
    c.optim.grad_clip_norm = 1.0  # clip_by_global_norm; 0 turns it off

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # windows per step
    c.train.num_steps = 2000
    c.train.log_every = 50  # train metrics every N steps
    c.train.eval_every = 250  # validation loss every N steps
    c.train.eval_batches = 20  # validation batches per evaluation
    c.train.checkpoint_every = 500  # Orbax save every N steps (and at each eval and the end)
    c.train.keep_checkpoints = 2  # latest saves kept (the best by val loss is kept apart)

    # Devices and hosts (README, "Scaling out"). Not part of what a resumed run must match:
    # a checkpoint saved on one mesh restores onto another.
    c.parallel = ml_collections.ConfigDict()
    c.parallel.mesh_shape = (-1, 1, 1)  # devices along (data, fsdp, tensor); -1: the rest; one device: 1x1x1
    c.parallel.logical_axis_rules = (  # logical axis name -> mesh axis (or axes, or None: replicated)
        ("batch", ("data", "fsdp")),  # the batch is split over data and fsdp
        ("embed", "fsdp"),  # parameters sharded over fsdp (activations: batch took fsdp first)
        ("mlp", "tensor"),  # MLP hidden units split over tensor
        ("heads", "tensor"),  # attention heads split over tensor
        ("kv", None),  # head width: never split
        ("vocab", None),  # 65 characters: too few to split
        ("length", None),  # sequence positions: never split
    )
    c.parallel.coordinator_address = ""  # multi-process: process 0's host:port; "" reads $P2T_COORDINATOR_ADDRESS
    c.parallel.num_processes = 0  # processes in the run; 0 reads $P2T_NUM_PROCESSES
    c.parallel.process_id = -1  # this process's index; -1 reads $P2T_PROCESS_ID
    c.parallel.cluster_detect = False  # let JAX find the processes itself (TPU pod, SLURM, Open MPI)
    c.parallel.initialization_timeout = 300  # seconds to wait for every process to join

    if variant == "small":
        pass
    elif variant == "large":
        c.model.max_len, c.model.emb_dim, c.model.num_layers, c.model.mlp_dim = 128, 128, 4, 512
        c.optim.learning_rate, c.optim.end_learning_rate = 2e-3, 2e-4
        c.train.num_steps = 3000
    elif variant == "nanogpt_cpu":
        c.model.max_len, c.model.emb_dim, c.model.num_layers, c.model.mlp_dim = 64, 128, 4, 512
        c.model.use_bias, c.model.tie_embeddings = False, True
        c.optim.learning_rate, c.optim.end_learning_rate = 3e-3, 3e-4  # nanoGPT: 1e-3, 1e-4
        c.train.batch_size, c.train.num_steps = 12, 2000
        c.train.eval_every, c.train.eval_batches = 250, 200
    elif variant == "smoke":
        c.model.max_len, c.model.emb_dim, c.model.num_heads, c.model.num_layers, c.model.mlp_dim = 16, 32, 2, 2, 64
        c.optim.learning_rate, c.optim.end_learning_rate, c.optim.warmup_steps = 1e-2, 1e-3, 5
        c.train.batch_size, c.train.num_steps = 8, 40
        c.train.log_every, c.train.eval_every, c.train.eval_batches, c.train.checkpoint_every = 10, 20, 2, 20
    else:
        raise ValueError(f"unknown variant '{variant}'; choose small, large, nanogpt_cpu or smoke")
    return c
