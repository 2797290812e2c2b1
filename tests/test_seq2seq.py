"""Chapter 9: the reordering data, the Bahdanau encoder-decoder, its measurements and the experiment."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment

from p2t_jax.chapters import reordering
from p2t_jax.configuration import ConfigError, apply_overrides, load_config
from p2t_jax.data import reorder
from p2t_jax.data.words import PAD
from p2t_jax.tasks import reorder as reorder_task


def _batches(**kw):
    args = dict(seed=0, batch_size=32, lengths=(3, 9), max_len=9, test_share=0.2)
    args.update(kw)
    return reorder.ReorderBatches(**args)


def test_source_is_the_word_by_word_translation_with_the_verb_moved_last():
    batch = _batches().train_batch(3)
    for src, tgt, n in zip(batch["source"], batch["target"], batch["length"]):
        words, source_words = reorder.decode_target(tgt).split(), reorder.SOURCE_VOCAB.decode(src).split()
        assert len(words) == len(source_words) == n and tgt[n] == reorder.EOS and np.all(tgt[n + 1:] == PAD)
        assert words[0] in reorder.NAMES and words[1] in reorder.VERBS
        aligned = [source_words[0], source_words[-1]] + source_words[1:-1]  # target j <- source 0, last, j-1
        translate = {**reorder.VERBS, **reorder.ARTICLE, **reorder.ADJECTIVES, **reorder.NOUNS, **reorder.PREPOSITIONS,
                     **reorder.ADVERBS}
        assert [translate.get(w, w) for w in words] == aligned
        assert np.all(src[n:] == PAD)


def test_batches_are_deterministic_and_split_by_sentence():
    a, b = _batches(), _batches()
    chex.assert_trees_all_equal(a.train_batch(5), b.train_batch(5))
    assert not np.array_equal(a.train_batch(5)["source"], a.train_batch(6)["source"])
    train = [s[:n] for step in range(20) for s, n in zip(a.train_batch(step)["source"], a.train_batch(step)["length"])]
    assert not any(reorder.is_test_sentence(s, 0.2) for s in train)
    held = a.eval_set(4, 64)
    assert all(reorder.is_test_sentence(s[:4], 0.2) for s in held["source"]) and np.all(held["length"] == 4)
    chex.assert_trees_all_equal(held, b.eval_set(4, 64))


def test_the_held_out_share_is_the_configured_share():
    rng = np.random.default_rng(0)
    sentences = [reorder.to_source(reorder.target_sentence(rng, int(n))) for n in rng.integers(3, 12, 4000)]
    share = np.mean([reorder.is_test_sentence(s, 0.1) for s in sentences])
    assert 0.08 < share < 0.12


def _model_and_params(use_attention=True, cell="gru"):
    config = load_config("configs/reorder.py:smoke")
    apply_overrides(config, [f"model.use_attention={use_attention}", f"model.cell={cell}"])
    task, _ = reorder_task.build(config)
    shapes = jax.eval_shape(task.init_variables, jax.random.PRNGKey(0))["params"]  # no PRNG to compile
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)
    return config, reorder_task.make_model(config), params


@pytest.fixture(scope="module")
def with_attention():
    return _model_and_params()


def test_teacher_forcing_shapes_and_attention_weights(with_attention):
    config, model, params = with_attention
    batch = reorder_task.make_batches(config).train_batch(0)
    logits, weights = jax.jit(model.apply)({"params": params}, batch["source"], batch["target"])
    B, S = batch["source"].shape
    chex.assert_shape([logits, weights], [(B, S + 1, len(reorder.TARGET_VOCAB)), (B, S + 1, S)])
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    padding = (batch["source"] == PAD)[:, None, :]
    assert float(jnp.where(padding, weights, 0.0).max()) == 0.0


def test_source_padding_never_changes_a_translation(with_attention):
    config, model, params = with_attention
    batch = reorder_task.make_batches(config).train_batch(1)
    n = int(batch["length"][0])
    short = batch["source"][:1, :n]
    long = np.concatenate([short, np.zeros((1, 4), np.int32)], axis=1)
    apply = lambda s: model.apply({"params": params}, s, batch["target"][:1])  # noqa: E731
    (logits_short, w_short), (logits_long, w_long) = apply(short), apply(long)
    np.testing.assert_allclose(logits_short, logits_long, atol=1e-5)
    np.testing.assert_allclose(w_short, w_long[..., :n], atol=1e-6)


@pytest.mark.parametrize("use_attention", [True, False])
def test_greedy_decoding_feeds_back_its_own_words(use_attention, with_attention):
    """Greedy output = argmax of the teacher-forced pass fed that same output (one jit, a scan of fixed length)."""
    config, model, params = with_attention if use_attention else _model_and_params(False)
    batch = reorder_task.make_batches(config).eval_set(5, 8)
    length = config.model.max_len + 1
    tokens, weights = reordering.greedy(model, jax.tree.map(lambda p: p[None], params), batch["source"], length)
    logits, tf_weights = model.apply({"params": params}, batch["source"], jnp.asarray(tokens[0]))
    np.testing.assert_array_equal(np.asarray(logits.argmax(-1)), tokens[0])
    np.testing.assert_allclose(weights[0], tf_weights, atol=1e-5)
    if not use_attention:
        assert "attention" not in params["decoder"] and float(np.abs(weights).max()) == 0.0


@pytest.mark.slow
def test_lstm_cells_work_too():
    config, model, params = _model_and_params(cell="lstm")
    batch = reorder_task.make_batches(config).train_batch(0)
    loss, (metrics, _) = reorder_task.make_loss_fn(model)(params, {}, batch, jax.random.PRNGKey(0), True)
    assert np.isfinite(float(loss)) and 0 <= float(metrics["token_accuracy"]) <= 1


def test_measurements_on_known_arrays():
    target = np.asarray([[5, 6, reorder.EOS, PAD], [7, 8, 9, reorder.EOS]])
    tokens = np.asarray([[[5, 6, reorder.EOS, 3], [7, 8, 9, 4]]])  # right, then wrong at <eos>
    np.testing.assert_array_equal(reordering.exact_match(tokens, target), [[True, False]])
    w = np.zeros((1, 2, 4, 3))
    w[0, 0, 1, 1], w[0, 1, 1, 2] = 0.7, 0.4
    np.testing.assert_allclose(reordering.verb_attention(w, np.asarray([2, 3])), [[0.7, 0.4]])


def test_softmax_saturates_without_the_scaling():
    s = reordering.softmax_saturation((4, 64, 1024), num_keys=16, num_queries=512, seed=0)
    assert np.all(np.diff(s["max_weight_unscaled"]) > 0) and s["max_weight_unscaled"][-1] > 0.9
    assert s["entropy_unscaled"][-1] < 0.1 * np.log(16)
    assert np.max(np.abs(s["entropy_scaled"] / s["entropy_scaled"][0] - 1)) < 0.1
    assert np.all(s["entropy_scaled"] <= np.log(16) + 1e-6)


@pytest.mark.slow
def test_a_tiny_run_through_the_loop_learns(tmp_path):
    from p2t_jax.training.loop import train_and_evaluate

    config = load_config("configs/reorder.py:smoke")
    with config.unlocked():
        del config["experiment"]
    apply_overrides(config, ["train.num_steps=60", "train.eval_every=60", "train.checkpoint_every=60"])
    task, config = reorder_task.build(config)
    _, summary = train_and_evaluate(task, config, tmp_path / "run", progress=False)
    assert summary["final_step"] == 60 and summary["train"]["loss"] < 0.9 * np.log(len(reorder.TARGET_VOCAB))
    assert {"loss", "token_accuracy", "exact_match"} <= set(summary["eval"])


@pytest.mark.parametrize("override, match", [
    ("data.lengths=(3, 20)", "longer than model.max_len = 6"),
    ("data.lengths=(2, 5)", "must be \\(lo, hi\\) with 3 <= lo <= hi"),
    ("model.cell=transformer", "config key 'model.cell' must be one of rnn, lstm, gru"),
    ("data.test_share=1.0", "data.test_share"),
    ("experiment.heatmap_sentences=('anna oft sieht',)", None),  # fine: every word known
    ("experiment.heatmap_sentences=('anna often sieht',)", "holds 'often', not in the vocabulary"),
    ("experiment.heatmap_sentences=('',)", "is empty; give at least one word"),
    ("experiment.heatmap_sentences=('anna oft oft oft oft oft sieht',)",
     "has 7 words, more than the configured maximum of 6"),
    ("experiment.models=('with attention',)", None),  # fine: the heat maps' model alone
    ("experiment.models=('without attention',)", "must hold 'with attention'"),
    ("experiment.models=('transformer',)", "allowed models are with attention, without attention"),
])
def test_bad_input_is_one_sentence(override, match):
    config = load_config("configs/reorder.py:smoke")
    apply_overrides(config, [override])
    experiment = load_experiment("09_attention.py")
    if match is None:
        experiment.validate(config)
        return
    with pytest.raises(ConfigError, match=match):
        experiment.validate(config)


def test_experiment_refuses_bad_input_with_exit_status_2(tmp_path, capsys):
    workdir = tmp_path / "w"
    status = load_experiment("09_attention.py").cli(
        ["--workdir", str(workdir), "--config", "configs/reorder.py:smoke",
         "--config.experiment.heatmap_sentences=('anna xyz sieht',)"])
    err = capsys.readouterr().err
    assert status == 2 and "'xyz'" in err and len(err.strip().splitlines()) == 1 and not workdir.exists()


@pytest.mark.slow
def test_experiment_smoke_run(tmp_path, capsys):
    """The experiment runs end to end on a tiny budget and writes its figures and results (its claims need the
    full budget: at smoke size they are measured, not expected to hold)."""
    import json

    status = load_experiment("09_attention.py").cli(["--workdir", str(tmp_path), "--config",
                                                     "configs/reorder.py:smoke"])
    assert status in (0, 1), capsys.readouterr().err
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["claims"]) == {"attention_finds_the_verb", "attention_holds_with_length",
                                      "scaling_prevents_saturation"}
    assert results["claims"]["scaling_prevents_saturation"]["passed"]  # needs no training
    for name in results["figures"]:
        assert (tmp_path / name).stat().st_size > 0
    assert set(results["figures"]) == {"attention_heatmaps.png", "exact_match_by_length.png", "softmax_saturation.png"}
    assert np.asarray(results["models"]["with attention"]["exact_match"]).shape == (4, 1)
