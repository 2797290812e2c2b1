"""Configs: variants, typed overrides and validation before anything compiles."""

import pytest

from p2t_jax.configuration import ConfigError, apply_overrides, load_config
from p2t_jax.tasks.language_model import validate


@pytest.mark.parametrize("variant", ["small", "large", "nanogpt_cpu", "gpu", "smoke"])
def test_variants_validate(repo_root, variant):
    validate(load_config(f"{repo_root}/configs/shakespeare.py:{variant}"))


def test_nanogpt_recipe(repo_root):
    c = load_config(f"{repo_root}/configs/shakespeare.py:nanogpt_cpu")
    assert (c.model.num_layers, c.model.num_heads, c.model.emb_dim, c.model.max_len) == (4, 4, 128, 64)
    assert (c.train.batch_size, c.train.num_steps) == (12, 2000)
    # peak lr 3e-3 where nanoGPT has 1e-3 (README: the lr sweep)
    assert (c.optim.learning_rate, c.optim.end_learning_rate, c.optim.warmup_steps, c.optim.b2) == (3e-3, 3e-4, 100, 0.99)
    assert c.model.dropout_rate == 0.0


def test_bare_name_resolves_in_configs_folder():
    assert load_config("shakespeare:large").model.emb_dim == 128


def test_overrides_are_typed(smoke_config):
    apply_overrides(smoke_config, ["model.num_layers=3", "optim.learning_rate=2e-3", "model.use_bias=false",
                                   "data.source=embedded"])
    assert smoke_config.model.num_layers == 3 and smoke_config.optim.learning_rate == 2e-3
    assert smoke_config.model.use_bias is False and smoke_config.data.source == "embedded"


@pytest.mark.parametrize("override, message", [
    ("model.nope=1", "unknown config key 'model.nope'"),
    ("modle.emb_dim=1", "unknown config key 'modle.emb_dim'"),
    ("model.emb_dim=wide", "takes an integer"),
    ("model.use_bias=maybe", "takes true or false"),
    ("model=3", "is a group"),
    ("model.emb_dim", "of the form"),
])
def test_bad_overrides(smoke_config, override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(smoke_config, [override])


@pytest.mark.parametrize("override, message", [
    ("model.num_heads=3", "must divide"),
    ("model.emb_dim=0", "must be a positive number"),
    ("train.batch_size=-4", "must be a positive number"),
    ("model.dropout_rate=1.5", r"must be in \[0, 1\)"),
    ("precision.compute=float16", "must be one of"),
    ("precision.params=bfloat16", "must be one of float32"),
    ("data.source=web", "must be one of"),
    ("optim.end_learning_rate=1.0", "between 0 and"),
    ("model.vocab_size=10", "at least 65"),
])
def test_validation(smoke_config, override, message):
    apply_overrides(smoke_config, [override])
    with pytest.raises(ConfigError, match=message):
        validate(smoke_config)


def test_missing_file_and_unknown_variant(repo_root):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("configs/nothing_here.py:small")
    with pytest.raises(ConfigError, match="unknown variant 'huge'"):
        load_config(f"{repo_root}/configs/shakespeare.py:huge")
