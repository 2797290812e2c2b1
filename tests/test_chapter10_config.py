"""Chapter 10's budget per variant (configs/transformer_compare.py's ``variant_overrides``), without training."""

import pytest
from conftest import load_experiment

from p2t_jax.configuration import ConfigError, apply_overrides, load_config


@pytest.fixture(scope="module")
def chapter():
    return load_experiment("10_transformer.py")


def compare_config(repo_root, *overrides):
    return apply_overrides(load_config(f"{repo_root}/configs/transformer_compare.py"), list(overrides))


def test_variant_overrides_apply_to_their_variant_only(chapter, repo_root):
    c = compare_config(repo_root, "variant_overrides=('large:train.num_steps=7', 'large:train.batch_size=4', "
                                  "'small:train.eval_every=3')", "seed=5")
    own_small, own_large = (load_config(f"{repo_root}/configs/shakespeare.py:{v}") for v in ("small", "large"))
    small, large = chapter.variant_config(c, "small"), chapter.variant_config(c, "large")
    assert (large.train.num_steps, large.train.batch_size, large.train.eval_every) == (7, 4, own_large.train.eval_every)
    assert (small.train.num_steps, small.train.batch_size, small.train.eval_every) == (
        own_small.train.num_steps, own_small.train.batch_size, 3)
    assert small.seed == large.seed == 5
    assert load_config(f"{repo_root}/configs/shakespeare.py:large").train.num_steps == own_large.train.num_steps


def test_num_steps_overrides_every_variant(chapter, repo_root):
    c = compare_config(repo_root, "num_steps=60")
    assert c.variant_overrides  # the chapter's own budget is there, and num_steps wins over it (smoke, quick)
    assert [chapter.variant_config(c, v).train.num_steps for v in ("small", "large")] == [60, 60]


def test_the_chapter_compares_at_equal_steps_and_windows(chapter, repo_root):
    """The fairness the config's docstring states: the same number of updates on the same number of
    windows per update; the models (and their context lengths) differ."""
    c = load_config(f"{repo_root}/configs/transformer_compare.py")
    small, large = (chapter.variant_config(c, v) for v in c.variants)
    assert small.train.num_steps == large.train.num_steps
    assert small.train.batch_size == large.train.batch_size
    assert small.model.max_len < large.model.max_len and small.model.emb_dim < large.model.emb_dim


@pytest.mark.parametrize("item, said", [("large=train.num_steps=7", "not of the form VARIANT:KEY=VALUE"),
                                        ("large:train.num_steps", "not of the form VARIANT:KEY=VALUE"),
                                        ("large:train.no_such_key=1", "no_such_key")])
def test_bad_variant_override_is_one_sentence(chapter, repo_root, item, said):
    c = compare_config(repo_root, f"variant_overrides=('{item}',)")
    with pytest.raises(ConfigError, match=said):
        chapter.validate(c)


def test_bad_variant_override_from_the_command_line_exits_2(chapter, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert chapter.cli(["--workdir", str(workdir), "--config.variant_overrides=('large',)"]) == 2
    assert "variant_overrides" in capsys.readouterr().err and not workdir.exists()
