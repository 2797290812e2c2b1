"""Chapter 10: the 826K-parameter Transformer against the 112K one on Shakespeare.

Each variant of ``configs/shakespeare.py`` listed in ``variants`` is trained (or resumed,
or reused when its run is complete) in ``<workdir>/<variant>``; then both are compared on
validation loss and on the structure of their samples for the prompt.
"""

import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.shakespeare_config = "configs/shakespeare.py"  # the config file whose variants are compared
    c.variants = ("small", "large")  # smaller model first; the claim is that the last beats the first
    c.data_source = "auto"  # data.source for every variant: auto, embedded or tfds
    # "VARIANT:KEY=VALUE" overrides of each variant's own config: this chapter's budget (module docstring)
    c.variant_overrides = ("small:train.num_steps=600", "large:train.num_steps=600")
    c.num_steps = 0  # 0: each variant's train.num_steps (after variant_overrides); > 0 overrides all (smoke runs)
    c.seed = 0  # the seed of every variant (initialisation, data order)

    c.sample = ml_collections.ConfigDict()
    c.sample.prompt = "ROMEO:"
    c.sample.max_new_tokens = 500  # characters generated per sample
    c.sample.num_samples = 8  # samples per model for the structure statistics
    c.sample.temperature = 0.8
    c.sample.top_k = 40
    c.sample.seed = 0
    if arg == "smoke":
        c.variants = ("smoke",)
        c.num_steps = 20
        c.sample.max_new_tokens, c.sample.num_samples = 40, 2
    elif arg not in (None, ""):
        raise ValueError(f"unknown variant '{arg}'; choose the default or smoke")
    return c
