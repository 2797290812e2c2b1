"""Rematerialisation (``model.remat``) and the mixed-precision policy (``precision``)."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from p2t_jax.configuration import ConfigError, apply_overrides, overlay
from p2t_jax.models.transformer import REMAT_POLICIES, Transformer, TransformerConfig
from p2t_jax.tasks import language_model
from p2t_jax.training.loop import _check_resumable, create_state, train_and_evaluate
from p2t_jax.training.metrics import read_metrics
from p2t_jax.training.steps import make_train_step

POLICIES = tuple(REMAT_POLICIES)  # none, full, dots_saveable


def _loss(model):
    def loss(params, tokens_BT):
        logits = model.apply({"params": params}, tokens_BT[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, tokens_BT[:, 1:]).mean()
    return loss


def _models(**kw):
    cfg = dict(vocab_size=17, max_len=16, emb_dim=16, num_heads=2, num_layers=2, mlp_dim=32, **kw)
    return {r: Transformer(TransformerConfig(**cfg, remat=r)) for r in POLICIES}


@pytest.mark.parametrize("scan_layers", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_remat_policies_give_the_same_loss_and_gradients(scan_layers):
    models = _models(scan_layers=scan_layers)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 17), 0, 17)
    params = nn.meta.unbox(models["none"].init(jax.random.PRNGKey(0), tokens[:, :-1]))["params"]
    for model in models.values():  # one set of parameters: the names do not change with the policy
        chex.assert_trees_all_equal_shapes(params, nn.meta.unbox(model.init(jax.random.PRNGKey(0),
                                                                            tokens[:, :-1]))["params"])
    both = jax.jit(lambda p, t: {r: jax.value_and_grad(_loss(m))(p, t) for r, m in models.items()})(params, tokens)
    loss, grads = both["none"]
    for r in ("full", "dots_saveable"):
        np.testing.assert_allclose(both[r][0], loss, rtol=1e-6)
        chex.assert_trees_all_close(both[r][1], grads, atol=1e-7, rtol=1e-5)
    assert float(optax.tree.norm(grads)) > 0


def test_remat_lowers_the_compiled_memory_of_scanned_blocks():
    """XLA's memory analysis of the gradient of 4 scanned blocks on contexts of 128: the
    activations kept for the backward pass (attention scores [B, H, T, T], MLP [B, T, F]) are what
    remat drops, so the temporary memory falls with ``full``, and ``dots_saveable`` sits between.
    (Unrolled blocks show no fall on XLA-CPU, whose scheduler runs the recomputation as early as
    it can; README, "Large runs".) XLA's attention, which keeps the scores (the blocked one keeps none)."""
    cfg = dict(vocab_size=17, max_len=128, emb_dim=32, num_heads=4, num_layers=4, mlp_dim=128,
               scan_layers=True, dense_impl="general", attention_impl="xla")
    tokens = jnp.zeros((8, 129), jnp.int32)
    temp = {}
    for r in POLICIES:
        model = Transformer(TransformerConfig(**cfg, remat=r))
        params = jax.eval_shape(lambda m=model: nn.meta.unbox(m.init(jax.random.PRNGKey(0), tokens[:, :-1]))["params"])
        compiled = jax.jit(jax.grad(_loss(model))).lower(params, tokens).compile()
        temp[r] = compiled.memory_analysis().temp_size_in_bytes
    assert temp["full"] < 0.5 * temp["none"], temp  # measured: 11.2 MB against 35.0 MB
    assert temp["full"] < temp["dots_saveable"] < temp["none"], temp


def test_remat_is_a_config_choice(smoke_config):
    apply_overrides(smoke_config, ["model.remat=full"])
    assert language_model.make_model(smoke_config).cfg.remat == "full"
    apply_overrides(smoke_config, ["model.remat=some"])
    with pytest.raises(ConfigError, match="'model.remat' must be one of none, full, dots_saveable, got 'some'"):
        language_model.validate(smoke_config)


def test_bfloat16_policy_computes_in_bfloat16_and_keeps_float32_where_it_should(smoke_config, tiny_corpus):
    apply_overrides(smoke_config, ["precision.compute=bfloat16", "model.dropout_rate=0.1", "train.batch_size=2",
                                   "optim.warmup_steps=0"])
    task = language_model.make_task(smoke_config)
    model = language_model.make_model(smoke_config)
    state = create_state(task.init_variables, smoke_config)
    batch = task.train_batch(0)
    # what each part computes in: the blocks in bfloat16, the attention weights, logits and loss float32
    logits, inter = jax.jit(lambda p, x: model.apply({"params": p}, x, deterministic=False,
                                                     rngs={"dropout": jax.random.PRNGKey(0)},
                                                     capture_intermediates=True, mutable=["intermediates"]))(
        state.params, batch["inputs"])
    inter = inter["intermediates"]
    assert inter["block_0"]["__call__"][0].dtype == jnp.bfloat16
    assert inter["block_0"]["attn"]["attention_weights"][0].dtype == jnp.float32
    assert inter["ln_f"]["__call__"][0].dtype == jnp.float32
    assert logits.dtype == jnp.float32
    new_state, metrics = jax.jit(make_train_step(task.loss_fn))(state, batch)
    assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))
    # parameters and optimiser state stay float32 through an update
    chex.assert_type(jax.tree.leaves(new_state.params), jnp.float32)
    floats = {x.dtype for x in jax.tree.leaves(new_state.opt_state) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert floats == {jnp.dtype(jnp.float32)}  # Adam's moments (the step counts are integers)
    assert float(metrics["update_norm"]) > 0


@pytest.mark.slow
def test_bfloat16_smoke_run_stays_close_to_float32(smoke_config, tiny_corpus, tmp_path):
    """The smoke run (40 steps) under the mixed-precision policy: train losses within 2% of the
    float32 run's at every logged step, and the final eval loss within 0.03."""
    runs = {}
    for compute in ("float32", "bfloat16"):
        config = apply_overrides(smoke_config.copy_and_resolve_references(), [f"precision.compute={compute}"])
        _, summary = train_and_evaluate(language_model.make_task(config), config, tmp_path / compute, progress=False)
        runs[compute] = ([m["loss"] for m in read_metrics(tmp_path / compute, "train")], summary["eval"]["loss"])
    (f32, f32_eval), (bf16, bf16_eval) = runs["float32"], runs["bfloat16"]
    assert f32[-1] < 0.75 * f32[0]  # it learned, so the comparison is of a trained model
    np.testing.assert_allclose(bf16, f32, rtol=0.02)
    assert abs(bf16_eval - f32_eval) < 0.03
    assert bf16 != f32  # bfloat16 did run


def test_runs_saved_with_model_dtype_resume_and_load(smoke_config, tmp_path):
    """config.json files written before the policy existed hold ``model.dtype``: read as precision.compute."""
    saved = json.loads(smoke_config.to_json())
    del saved["precision"]
    saved["model"]["dtype"] = "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = overlay(language_model.default_config(), saved)
    assert loaded.precision.compute == "bfloat16" and "dtype" not in loaded.model
    apply_overrides(smoke_config, ["precision.compute=bfloat16"])
    _check_resumable(tmp_path, smoke_config)  # the same run: no complaint
    apply_overrides(smoke_config, ["precision.compute=float32"])
    with pytest.raises(ConfigError, match='precision.compute was "bfloat16", now "float32"'):
        _check_resumable(tmp_path, smoke_config)
