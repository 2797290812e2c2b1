"""p2t_jax: from perceptrons to transformers in JAX.

Nothing runs on import. Where things live, bottom to top; a module imports only from the
rows below its own (``tests/test_layering.py`` checks it):

* ``configuration``, ``xla_flags``, ``resources``, ``host_memory``, ``parent_watch``, ``compile_cache``:
  config files and ``--config.*`` overrides, the one-sentence ``ConfigError``; the XLA flags
  an entry point sets before JAX starts (the GPU's deterministic operations); free device
  memory; the host allocator; a child process that stops when its parent dies; the
  environment of a shared persistent XLA compilation cache.
* ``models/`` pure Flax linen modules, one file per family; ``regularisation`` (dropout,
  L2, smoothed cross-entropy). ``data/`` sources (TFDS and embedded offline corpora),
  tokenizers, synthetic problems, deterministic batches.
* ``optim/`` Optax chains built from configs, hand-written transforms. ``parallel/``
  device meshes, logical-axis rules, multi-process start-up.
* ``training/`` TrainState, the train/eval steps (and the older ``pmap`` step), the one
  loop, Orbax checkpoints, metrics, vmapped sweeps; ``config_groups``: the ``train``,
  ``optim`` and ``parallel`` groups every task's config is built from.
* ``tasks/`` a model + loss + data packaged as a ``Task`` for the loop, one module per
  task, named by ``config.task``; what a task measures (``pointer_metrics``) and builds
  (``image_models``) lives beside it.
* ``sampling`` autoregressive generation. ``runs`` a trained run folder as ``p2t`` and
  the playground read it, and their ``UsageError``.
* At the top, importing from anything below: ``chapters/`` what a chapter's experiment
  computes (hand-written backprop, perceptron rule, seed sweeps, measurements), ``viz/``
  the figures, ``experiment`` the harness every ``experiments/NN_*.py`` script runs under;
  above them ``reproduce/`` (every chapter's experiment run into one report), then
  ``playground/`` the Streamlit app (its ``--make-runs`` uses reproduce's quick budget);
  ``cli`` the ``p2t`` command at the very top.

Outside the package: ``configs/`` (``get_config(arg)`` files), ``experiments/`` (one script
per chapter), ``bench/``, ``tests/``, ``docs/`` (``docs/extending.md``: your own task).
"""

__version__ = "0.1.0"
