"""Any optimiser from the config: named Optax optimisers with their kwargs, declarative chains,
factories; each refusal one sentence; the learning rate and injected hyperparameters logged."""

import re
import sys

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from p2t_jax.configuration import ConfigError, apply_overrides, load_config
from p2t_jax.optim import chains
from p2t_jax.training.state import TrainState
from p2t_jax.training.steps import injected_hyperparams, make_train_step

NUM_STEPS = 6


def _params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    return {"dense": {"kernel": jax.random.normal(k1, (3, 4)), "bias": jax.random.normal(k2, (4,))}}


def _loss(params, x):
    return jnp.sum(jnp.tanh(x @ params["dense"]["kernel"] + params["dense"]["bias"]) ** 2)


def _steps(tx, n=NUM_STEPS):
    """The params after each of ``n`` updates of ``tx`` on a fixed problem."""
    params = _params()
    state = tx.init(params)
    out = []
    for i in range(n):
        x = jax.random.normal(jax.random.PRNGKey(i + 1), (5, 3))
        grads = jax.grad(_loss)(params, x)
        updates, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, updates)
        out.append(params)
    return out


def _assert_same_steps(a, b):
    for i, (p, q) in enumerate(zip(_steps(a), _steps(b))):
        chex.assert_trees_all_close(p, q, rtol=1e-6, atol=1e-7, custom_message=f"step {i + 1}")


def _config(**optim):
    """The Shakespeare smoke config with ``optim`` fields set (as the command line would)."""
    c = load_config("configs/shakespeare.py:smoke")
    apply_overrides(c, [f"optim.{k}={v}" for k, v in optim.items()])
    return c


SCHEDULE = dict(learning_rate=1e-2, warmup_steps=2, end_learning_rate=1e-3)


def _schedule():
    return optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, NUM_STEPS, 1e-3)


def test_chain_from_config_equals_the_hand_written_optax_chain():
    chain = ("[('clip_by_global_norm', {'max_norm': 0.5}), ('scale_by_adam', {'b1': 0.8, 'b2': 0.95}), "
             "('add_decayed_weights', {'weight_decay': 0.1, 'mask': 'matrices'}), 'scale_by_learning_rate']")
    c = _config(chain=chain, **SCHEDULE)
    chains.validate_optim(c)
    tx, logged = chains.make_optimizer(c.optim, NUM_STEPS, config=c)
    assert logged is None  # a chain's learning rate is read from its state
    expected = optax.chain(optax.clip_by_global_norm(0.5), optax.scale_by_adam(b1=0.8, b2=0.95),
                           optax.add_decayed_weights(0.1, mask=chains.decay_mask),
                           optax.scale_by_learning_rate(_schedule()))
    _assert_same_steps(tx, expected)


@pytest.mark.parametrize("name, kwargs, expected", [
    ("lion", {}, lambda s: optax.lion(s, b1=0.9, b2=0.99, weight_decay=0.1, mask=chains.decay_mask)),
    ("adan", {"b3": 0.95}, lambda s: optax.adan(s, b3=0.95)),
    ("adafactor", {"decay_rate": 0.7}, lambda s: optax.adafactor(s, decay_rate=0.7)),
    ("nadam", {}, lambda s: optax.nadam(s)),
    ("adam", {"nesterov": True}, lambda s: optax.adam(s, b1=0.9, b2=0.99, eps=1e-8, nesterov=True)),
])
def test_named_optimizer_with_kwargs_equals_optax(name, kwargs, expected):
    wd = 0.1 if name == "lion" else 0.0
    c = _config(name=name, weight_decay=wd, grad_clip_norm=0.0, **SCHEDULE,
                **{f"kwargs.{k}": v for k, v in kwargs.items()})
    chains.validate_optim(c)
    tx, _ = chains.make_optimizer(c.optim, NUM_STEPS, config=c)
    _assert_same_steps(tx, expected(_schedule()))


def test_the_classic_named_optimizers_keep_their_state_and_log_their_schedule():
    """Runs saved before keep resuming: adamw's state is clip + adamw, as it was."""
    c = _config(**SCHEDULE)
    tx, logged = chains.make_optimizer(c.optim, NUM_STEPS, config=c)
    assert logged is not None and float(logged(2)) == pytest.approx(1e-2)
    assert injected_hyperparams(tx.init(_params())) == {}
    expected = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(_schedule(), b1=0.9, b2=0.99, eps=1e-8,
                                                                         weight_decay=0.1, mask=chains.decay_mask))
    chex.assert_trees_all_equal_structs(tx.init(_params()), expected.init(_params()))
    _assert_same_steps(tx, expected)


@pytest.mark.parametrize("optim, match", [
    (dict(name="lamb2"), "config key 'optim.name' must be one of adabelief, adadelta"),
    (dict(name="adafactor", implementation="scratch"), "'adafactor' is Optax's"),
    (dict(name="adafactor", **{"kwargs.decay": 0.8}), "'optim.kwargs' gives 'decay', which optax.adafactor does not "
                                                      "take; it takes learning_rate, min_dim_size_to_factor"),
    (dict(name="adafactor", **{"kwargs.decay_rate": "'fast'"}), "decay_rate='fast'; optax.adafactor takes a number"),
    (dict(name="adam", weight_decay=0.0, **{"kwargs.nesterov": 1}), "nesterov=1; optax.adam takes true or false"),
    (dict(name="adam", weight_decay=0.0, **{"kwargs.b1": 0.5}), "'optim.kwargs.b1' repeats optim.b1"),
    (dict(name="adafactor"), "'optim.weight_decay' (0.1) is not used by optax.adafactor"),
    (dict(chain="[('scale_by_adamm', {})]"), "'optim.chain[0]' names 'scale_by_adamm', which is not an Optax transform"),
    (dict(chain="[('clip_by_global_norm', {'max_nrm': 1.0})]"), "'optim.chain[0]' gives 'max_nrm', which "
                                                                "optax.clip_by_global_norm does not take"),
    (dict(chain="[('clip_by_global_norm', {})]"), "'optim.chain[0]' must give max_norm"),
    (dict(chain="['scale_by_adam', ('add_decayed_weights', {'mask': 'biases'})]"),
     "'optim.chain[1]' names mask 'biases'"),
    (dict(chain="[('scale_by_adam', 3)]"), "'optim.chain[0]' must be (transform name"),
    (dict(factory="nomodule_here:make"), "'optim.factory' is 'nomodule_here:make', whose module cannot be"),
    (dict(factory="optax"), "'optim.factory' must be 'module:function'"),
    (dict(factory="optax:no_such_function"), "module optax has no function no_such_function"),
])
def test_each_bad_entry_is_refused_in_one_sentence(optim, match):
    c = _config(**optim)
    with pytest.raises(ConfigError, match=re.escape(match)) as e:
        chains.validate_optim(c)
    assert str(e.value).count(". ") == 0 and str(e.value).endswith(".")


def test_open_kwargs_group_takes_new_keys_from_the_command_line_and_keeps_other_groups_closed():
    c = _config(name="lion", **{"kwargs.b1": 0.95})
    assert c.optim.kwargs.b1 == 0.95 and c.optim.name == "lion"
    apply_overrides(c, ["optim.kwargs.b1=0.9"])
    assert c.optim.kwargs.b1 == 0.9
    with pytest.raises(ConfigError, match="unknown config key 'optim.nme'"):
        apply_overrides(c, ["optim.nme=lion"])


def factory(config):
    """A factory for the test below: SGD at the config's peak rate, its rate injected."""
    return optax.inject_hyperparams(optax.sgd)(learning_rate=config.optim.learning_rate, momentum=0.5)


def not_a_transformation(config):
    return 3


def test_factory_from_config(monkeypatch):
    monkeypatch.setitem(sys.modules, "my_factories", sys.modules[__name__])
    c = _config(factory="my_factories:factory", learning_rate=0.05)
    tx, logged = chains.make_optimizer(c.optim, NUM_STEPS, config=c)
    assert logged is None
    _assert_same_steps(tx, optax.sgd(0.05, momentum=0.5))
    c = _config(factory="my_factories:not_a_transformation")
    with pytest.raises(ConfigError, match=r"returned a int, not an Optax GradientTransformation"):
        chains.validate_optim(c)


def _train_metrics(tx, schedule=None, n=4):
    """The metrics of ``n`` steps of the package's train step on a tiny model."""
    def loss_fn(params, model_state, batch, rng, train):
        return _loss(params, batch["x"]), ({}, model_state)

    state = TrainState.create(variables={"params": _params()}, tx=tx, rng=jax.random.PRNGKey(0))
    step = jax.jit(make_train_step(loss_fn, schedule))
    out = []
    for i in range(n):
        state, m = step(state, {"x": jax.random.normal(jax.random.PRNGKey(i), (5, 3))})
        out.append(jax.device_get(m))
    return out


def test_learning_rate_of_a_users_own_injected_chain_is_logged():
    schedule = optax.linear_schedule(0.1, 0.02, 3)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.inject_hyperparams(optax.adam)(learning_rate=schedule, b1=0.8))
    metrics = _train_metrics(tx)
    np.testing.assert_allclose([m["learning_rate"] for m in metrics], [schedule(i) for i in range(4)], rtol=1e-6)
    np.testing.assert_allclose([m["b1"] for m in metrics], 0.8, rtol=1e-6)


def test_config_chain_logs_its_learning_rate_and_injected_hyperparameters():
    c = _config(chain="[('clip_by_global_norm', {'max_norm': 0.5}), 'scale_by_adam', 'scale_by_learning_rate']",
                **SCHEDULE)
    tx, logged = chains.make_optimizer(c.optim, NUM_STEPS, config=c)
    metrics = _train_metrics(tx, logged)
    np.testing.assert_allclose([m["learning_rate"] for m in metrics], [_schedule()(i) for i in range(4)], rtol=1e-6)
    np.testing.assert_allclose([m["max_norm"] for m in metrics], 0.5)


def test_named_optax_optimizer_logs_its_learning_rate():
    c = _config(name="adafactor", weight_decay=0.0, **SCHEDULE)
    tx, logged = chains.make_optimizer(c.optim, NUM_STEPS, config=c)
    assert logged is None
    metrics = _train_metrics(tx, logged)
    np.testing.assert_allclose([m["learning_rate"] for m in metrics], [_schedule()(i) for i in range(4)], rtol=1e-6)


def test_every_task_takes_the_optimiser_fields():
    from p2t_jax import tasks

    for name in tasks.REGISTRY:
        optim = tasks.module(name).default_config().optim
        assert {"name", "implementation", "schedule", "kwargs", "chain", "factory"} <= set(optim.keys()), name
        assert isinstance(optim.kwargs, ml_collections.ConfigDict)
