"""p2t_jax: from perceptrons to transformers in JAX.

Nothing runs on import. The pieces:

* ``p2t_jax.models``   pure Flax linen modules, one file per family.
* ``p2t_jax.data``     data sources (TFDS and embedded offline corpora), tokenizers.
* ``p2t_jax.optim``    Optax chains built from configs.
* ``p2t_jax.training`` TrainState, step factories, the one training loop, checkpoints.
* ``p2t_jax.sampling`` autoregressive generation.
* ``p2t_jax.cli``      the ``p2t`` command.
"""

__version__ = "0.1.0"
