"""Character-level Shakespeare Transformer.

Variants (``--config configs/shakespeare.py:VARIANT``):

* ``small``       ~112K parameters: width 64, 2 layers, 4 heads, context 64 (the default).
* ``large``       ~826K parameters: width 128, 4 layers, 4 heads, context 128.
* ``nanogpt_cpu`` nanoGPT's CPU recipe: 4 layers, 4 heads, width 128, context 64,
                  batch 12, 2,000 steps, cosine to lr/10, 100 warm-up, beta2 0.99,
                  no dropout, no biases, tied embeddings; peak lr 3e-3 where nanoGPT
                  uses 1e-3, which under-trains in 2,000 steps (README: the lr sweep).
* ``gpu``         nanoGPT's GPU recipe (its ``train_shakespeare_char``): 6 layers,
                  6 heads, width 384, context 256, batch 64, dropout 0.2, 5,000 steps,
                  lr 1e-3 with 100 warm-up steps and cosine to 1e-4 at step 5,000,
                  beta2 0.99, no biases, tied embeddings, the mixed-precision policy
                  (``precision``: bfloat16 compute; parameters, optimiser state, softmax,
                  output head and loss in float32). The same command runs it on any
                  backend; on a CPU it is slow (bfloat16 has no fast matmul path there).
                  ``bench/accelerator.sh`` times it and trains it.
* ``smoke``       tiny, for tests.
"""

from p2t_jax.tasks.language_model import default_config


def get_config(arg=None):
    variant = arg or "small"
    c = default_config()  # every field, with a comment each (p2t_jax/tasks/language_model.py)
    c.variant = variant

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
    elif variant == "gpu":
        c.model.max_len, c.model.emb_dim, c.model.num_heads, c.model.num_layers = 256, 384, 6, 6
        c.model.mlp_dim, c.model.dropout_rate = 4 * 384, 0.2
        c.precision.compute = "bfloat16"  # parameters, optimiser state, output head and loss stay float32
        c.model.use_bias, c.model.tie_embeddings = False, True
        c.optim.learning_rate, c.optim.end_learning_rate, c.optim.warmup_steps = 1e-3, 1e-4, 100
        c.train.batch_size, c.train.num_steps = 64, 5000
        c.train.log_every, c.train.eval_every, c.train.eval_batches = 250, 250, 200
        c.train.checkpoint_every = 1000
    elif variant == "smoke":
        c.model.max_len, c.model.emb_dim, c.model.num_heads, c.model.num_layers, c.model.mlp_dim = 16, 32, 2, 2, 64
        c.optim.learning_rate, c.optim.end_learning_rate, c.optim.warmup_steps = 1e-2, 1e-3, 5
        c.train.batch_size, c.train.num_steps = 8, 40
        c.train.log_every, c.train.eval_every, c.train.eval_batches, c.train.checkpoint_every = 10, 20, 2, 20
    else:
        raise ValueError(f"unknown variant '{variant}'; choose small, large, nanogpt_cpu, gpu or smoke")
    return c
