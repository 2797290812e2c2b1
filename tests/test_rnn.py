"""models.rnn: each cell equals a NumPy reference of its equations, the LSTM and GRU equal flax's cells with
the same weights, and padding never changes a result."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from p2t_jax.models.rnn import (
    CELLS,
    Bidirectional,
    GRUCell,
    LSTMCell,
    Recurrent,
    RecurrentClassifier,
    make_cell,
    orthogonal_blocks,
    per_gate,
    small_uniform,
)

B, T, D, H = 3, 7, 5, 4


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_reference(kind: str, cell_params: dict, x_BTD: np.ndarray):
    """The cell's equations, written out in float64 NumPy, one step at a time.

    Returns (outputs h [B, T, H], states: per step the carry, final carry)."""
    W = np.asarray(cell_params["input"]["kernel"], np.float64)
    b = np.asarray(cell_params["input"]["bias"], np.float64)
    U = np.asarray(cell_params["recurrent"]["kernel"], np.float64)
    x = np.asarray(x_BTD, np.float64)
    h = np.zeros((x.shape[0], U.shape[0]))
    c = np.zeros_like(h)
    hs, cs = [], []
    for t in range(x.shape[1]):
        xw, hu = x[:, t] @ W + b, h @ U
        if kind == "rnn":
            h = np.tanh(xw + hu)
        elif kind == "lstm":
            i, f, g, o = np.split(xw + hu, 4, axis=-1)
            c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            h = _sigmoid(o) * np.tanh(c)
        else:  # gru
            b_hn = np.asarray(cell_params["recurrent_bias"], np.float64)
            x_r, x_z, x_n = np.split(xw, 3, axis=-1)
            h_r, h_z, h_n = np.split(hu, 3, axis=-1)
            r, z = _sigmoid(x_r + h_r), _sigmoid(x_z + h_z)
            n = np.tanh(x_n + r * (h_n + b_hn))
            h = (1 - z) * n + z * h
        hs.append(h)
        cs.append(c)
    hs, cs = np.stack(hs, 1), np.stack(cs, 1)
    if kind == "lstm":
        return hs, (cs, hs), (c, h)
    return hs, hs, h


@functools.cache
def _variables(kind):
    layer = Recurrent(make_cell(kind, H, bias_init=nn.initializers.normal(0.5)))  # non-zero biases
    return layer.init(jax.random.PRNGKey(1), jnp.zeros((B, T, D)))


def _init(kind, x, **kw):
    """A layer of ``kind`` (with ``kw``, e.g. ``reverse``) and its variables (the same for every ``kw``)."""
    return Recurrent(make_cell(kind, H), **kw), _variables(kind)


def _x(seed=0, shape=(B, T, D)):
    return jax.random.normal(jax.random.PRNGKey(seed), shape)


@pytest.mark.parametrize("kind", list(CELLS))
def test_each_cell_equals_its_equations_in_numpy(kind):
    x = _x()
    layer, variables = _init(kind, x)
    out = jax.jit(layer.apply, static_argnames="return_states")(variables, x, return_states=True)
    h_ref, states_ref, final_ref = numpy_reference(kind, variables["params"]["cell"], x)
    np.testing.assert_allclose(out.outputs, h_ref, atol=1e-6)
    chex.assert_trees_all_close(out.states, states_ref, atol=1e-6)
    chex.assert_trees_all_close(out.final, final_ref, atol=1e-6)


@pytest.mark.parametrize("kind, gates", [("rnn", 1), ("lstm", 4), ("gru", 3)])
def test_parameter_shapes_and_counts(kind, gates):
    _, variables = _init(kind, _x())
    p = variables["params"]["cell"]
    chex.assert_shape([p["input"]["kernel"], p["input"]["bias"], p["recurrent"]["kernel"]],
                      [(D, gates * H), (gates * H,), (H, gates * H)])
    extra = H if kind == "gru" else 0  # the GRU's b_hn
    assert sum(a.size for a in jax.tree.leaves(p)) == gates * (D * H + H * H + H) + extra


@pytest.mark.parametrize("rows", [H, 2 * H, H // 2])
def test_recurrent_gate_blocks_are_each_orthogonal(rows):
    _, variables = _init("lstm", _x())
    U = variables["params"]["cell"]["recurrent"]["kernel"]  # the default: orthogonal_blocks
    for kernel, n in ((U, H), (orthogonal_blocks(4)(jax.random.PRNGKey(0), (rows, 4 * H)), rows)):
        blocks = jnp.split(kernel, 4, axis=-1)
        for block in blocks:
            gram = block.T @ block if n >= H else block @ block.T
            np.testing.assert_allclose(gram, np.eye(min(n, H)), atol=1e-5)
        assert float(jnp.abs(blocks[0] - blocks[1]).max()) > 0.1  # each block drawn apart


def test_small_uniform_draws_within_one_over_root_h_and_contracts():
    U = small_uniform(jax.random.PRNGKey(0), (256, 256))
    bound = 1 / np.sqrt(256)
    assert float(jnp.abs(U).max()) <= bound and float(jnp.abs(U).max()) > 0.99 * bound
    np.testing.assert_allclose(float(U.std()), bound / np.sqrt(3), rtol=0.02)  # the variance of U(-a, a)
    radius = float(np.abs(np.linalg.eigvals(np.asarray(U, np.float64))).max())
    assert 0.5 < radius < 0.65  # the circular law: about 1/sqrt(3) = 0.577, below 1


@pytest.mark.parametrize("kind", sorted(CELLS))
def test_classifier_draws_u_small_and_opens_only_the_lstm_forget_gate(kind):
    """recurrent_init="small_uniform" draws every block of U within 1/sqrt(H) (the orthogonal default is
    checked above); forget_bias lands on the LSTM's f block only."""
    model = RecurrentClassifier(vocab_size=11, embed_dim=D, cell_type=kind, features=8, num_classes=3,
                                recurrent_init="small_uniform", forget_bias=1.0)
    cell = model.init(jax.random.PRNGKey(2), jnp.ones((2, 5), jnp.int32))["params"]["rnn"]["cell"]
    U, b = np.asarray(cell["recurrent"]["kernel"]), np.asarray(cell["input"]["bias"])
    assert U.shape == (8, CELLS[kind].gates * 8) and 0 < np.abs(U).max() <= 1 / np.sqrt(8)
    expected = np.zeros_like(b)
    if kind == "lstm":  # only the forget block (i, f, g, o) starts at the bias; the other cells ignore it
        expected[8:16] = 1.0
    np.testing.assert_array_equal(b, expected)


def test_an_unknown_recurrent_init_is_refused():
    model = RecurrentClassifier(vocab_size=11, embed_dim=D, cell_type="rnn", features=8, num_classes=3,
                                recurrent_init="identity")
    with pytest.raises(ValueError, match="unknown recurrent init 'identity'; choose one of orthogonal, small_uniform"):
        model.init(jax.random.PRNGKey(0), jnp.ones((1, 3), jnp.int32))


def test_per_gate_draws_each_block_on_its_own_key():
    init = nn.initializers.normal(1.0)
    kernel = per_gate(init, 3)(jax.random.PRNGKey(0), (D, 3 * H))
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    np.testing.assert_array_equal(kernel, jnp.concatenate([init(k, (D, H)) for k in keys], axis=-1))


def test_lstm_equals_flax_optimized_lstm_cell_with_the_same_weights():
    x = _x(2)
    layer, variables = _init("lstm", x)
    p = variables["params"]["cell"]
    W, b, U = p["input"]["kernel"], p["input"]["bias"], p["recurrent"]["kernel"]
    flax_params = {}
    for k, gate in enumerate("ifgo"):  # same gate order: block k of W, U and b
        cols = slice(k * H, (k + 1) * H)
        flax_params[f"i{gate}"] = {"kernel": W[:, cols]}
        flax_params[f"h{gate}"] = {"kernel": U[:, cols], "bias": b[cols]}
    flax_rnn = nn.RNN(nn.OptimizedLSTMCell(H), return_carry=True)
    chex.assert_trees_all_equal_shapes(
        flax_params, flax_rnn.init(jax.random.PRNGKey(0), x)["params"]["cell"])
    (c_flax, h_flax), outputs_flax = flax_rnn.apply({"params": {"cell": flax_params}}, x)
    ours = layer.apply(variables, x)
    np.testing.assert_allclose(ours.outputs, outputs_flax, atol=1e-6)
    chex.assert_trees_all_close(ours.final, (c_flax, h_flax), atol=1e-6)


def test_gru_equals_flax_gru_cell_with_the_same_weights():
    x = _x(3)
    layer, variables = _init("gru", x)
    p = variables["params"]["cell"]
    W, b, U = p["input"]["kernel"], p["input"]["bias"], p["recurrent"]["kernel"]
    flax_params = {}
    for k, gate in enumerate("rzn"):
        cols = slice(k * H, (k + 1) * H)
        flax_params[f"i{gate}"] = {"kernel": W[:, cols], "bias": b[cols]}
        flax_params[f"h{gate}"] = {"kernel": U[:, cols]}
    flax_params["hn"]["bias"] = p["recurrent_bias"]
    outputs_flax = nn.RNN(nn.GRUCell(H)).apply({"params": {"cell": flax_params}}, x)
    np.testing.assert_allclose(layer.apply(variables, x).outputs, outputs_flax, atol=1e-6)


@pytest.mark.parametrize("kind", list(CELLS))
def test_a_cell_call_is_one_whole_step(kind):
    """``cell(carry, x_t)`` = ``step(carry, project(x_t))``: flax's cell interface, as nn.RNN uses it."""
    x = _x(4)
    layer, variables = _init(kind, x)
    outputs = nn.RNN(make_cell(kind, H)).apply({"params": variables["params"]}, x)
    np.testing.assert_allclose(outputs, layer.apply(variables, x).outputs, atol=1e-6)


@pytest.mark.parametrize("kind", list(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
def test_padding_never_changes_a_result(kind, reverse):
    """Each row of a padded batch equals the NumPy reference run on that row alone, at its own length, whatever
    the padding holds; outputs at the padding are zero."""
    lengths = [7, 4, 1]
    x = _x(5)
    layer, variables = _init(kind, x, reverse=reverse)
    mask = jnp.arange(T)[None, :] < jnp.asarray(lengths)[:, None]
    apply = jax.jit(layer.apply)
    for garbage in (0.0 * x, 100.0 * _x(6)):
        padded = apply(variables, jnp.where(mask[..., None], x, garbage), mask)
        for row, n in enumerate(lengths):
            seq = np.asarray(x[row:row + 1, :n])
            h_ref, _, final_ref = numpy_reference(kind, variables["params"]["cell"], seq[:, ::-1] if reverse else seq)
            np.testing.assert_allclose(padded.outputs[row, :n], (h_ref[:, ::-1] if reverse else h_ref)[0], atol=1e-6)
            chex.assert_trees_all_close(jax.tree.map(lambda a, r=row: a[r], padded.final),
                                        jax.tree.map(lambda a: a[0], final_ref), atol=1e-6)
            assert float(jnp.abs(padded.outputs[row, n:]).max(initial=0.0)) == 0.0


@pytest.mark.parametrize("kind", list(CELLS))
def test_padding_gets_no_gradient_and_the_final_carry_is_the_last_real_state(kind):
    x = _x(7)
    layer, variables = _init(kind, x)
    mask = jnp.arange(T)[None, :] < jnp.asarray([5, 3, 7])[:, None]

    def loss(x):
        out = layer.apply(variables, x, mask, return_states=True)
        return sum(jnp.sum(leaf) for leaf in jax.tree.leaves(out.final)), out

    grads, out = jax.grad(loss, has_aux=True)(x)
    assert float(jnp.abs(jnp.where(mask[..., None], 0.0, grads)).max()) == 0.0
    last = jax.tree.map(lambda s: s[jnp.arange(B), jnp.asarray([4, 2, 6])], out.states)
    chex.assert_trees_all_close(out.final, last)


def test_unrolled_scan_computes_the_same():
    x = _x(8)
    layer, variables = _init("lstm", x)
    unrolled = Recurrent(make_cell("lstm", H), unroll=4)
    chex.assert_trees_all_close(unrolled.apply(variables, x), layer.apply(variables, x), atol=1e-6)


def test_bidirectional_halves_are_a_forward_and_a_reversed_run():
    x = _x(9)
    mask = jnp.arange(T)[None, :] < jnp.asarray([7, 5, 2])[:, None]
    bi = Bidirectional("gru", H)
    variables = bi.init(jax.random.PRNGKey(0), x, mask)
    outputs, (fwd_final, bwd_final) = bi.apply(variables, x, mask)
    chex.assert_shape(outputs, (B, T, 2 * H))
    p = variables["params"]
    fwd = Recurrent(GRUCell(H)).apply({"params": p["forward"]}, x, mask)
    bwd = Recurrent(GRUCell(H), reverse=True).apply({"params": p["backward"]}, x, mask)
    np.testing.assert_allclose(outputs, jnp.concatenate([fwd.outputs, bwd.outputs], -1), atol=1e-6)
    # the backward half ends (its final carry) at each sequence's first step
    np.testing.assert_allclose(bwd_final, bwd.outputs[:, 0], atol=1e-6)
    np.testing.assert_allclose(fwd_final, fwd.outputs[jnp.arange(B), jnp.asarray([6, 4, 1])], atol=1e-6)


def test_lstm_carry_is_c_then_h():
    cell = LSTMCell(H)
    c, h = cell.initialize_carry(None, (B, D))
    chex.assert_shape([c, h], [(B, H), (B, H)])
    assert LSTMCell.output((c, h + 1)) is not None and float(LSTMCell.output((c, h + 1)).sum()) == B * H


def test_unknown_cell_type_is_refused_in_one_sentence():
    with pytest.raises(ValueError, match=r"unknown cell type 'transformer'; choose one of rnn, lstm, gru\."):
        make_cell("transformer", 4)


def test_a_mask_of_the_wrong_shape_is_refused():
    x = _x()
    layer, variables = _init("rnn", x)
    with pytest.raises(ValueError, match="does not match the inputs"):
        layer.apply(variables, x, jnp.ones((B, T + 1), bool))


# --- chapter 8: the memory task, the seed sweep, the measurements, the experiment -------------------------------

from conftest import load_experiment  # noqa: E402

from p2t_jax.chapters import recurrent_memory as rm  # noqa: E402
from p2t_jax.configuration import ConfigError, apply_overrides, load_config  # noqa: E402
from p2t_jax.data import memory  # noqa: E402
from p2t_jax.tasks import memory as memory_task  # noqa: E402
from p2t_jax.training import sweep  # noqa: E402
from p2t_jax.training.loop import create_state  # noqa: E402
from p2t_jax.training.steps import make_train_step  # noqa: E402


def test_memory_sentences_are_subject_fillers_verb_name():
    batches = memory.MemoryBatches(seed=3, batch_size=64, train_fillers=(2, 5), max_len=12)
    batch = batches.train_batch(7)
    chex.assert_trees_all_equal(batch, memory.MemoryBatches(3, 64, (2, 5), 12).train_batch(7))  # (seed, step)
    assert batch["tokens"].shape == (64, 8) and set(np.unique(batch["fillers"])) == {2, 3, 4, 5}
    for row, label, n in zip(batch["tokens"], batch["label"], batch["fillers"]):
        words = memory.VOCAB.decode(row).split()
        assert len(words) == n + 3 and words[0] == memory.SUBJECTS[label]
        assert all(w in memory.FILLERS for w in words[1:n + 1])
        assert words[n + 1] in memory.VERBS and words[n + 2] in memory.SUBJECTS  # the object is a name too
        assert np.all(row[n + 3:] == memory.PAD)
    held = batches.eval_set(9, 16)
    assert held["tokens"].shape == (16, 12) and np.all(held["fillers"] == 9)
    chex.assert_trees_all_equal(held, batches.eval_set(9, 16))
    with pytest.raises(ValueError, match="more than the maximum of 12"):
        batches.eval_set(10, 4)


def _memory_config(*overrides):
    config = load_config("configs/rnn_memory.py:smoke")
    apply_overrides(config, list(overrides))
    return config


@pytest.mark.slow  # three compilations of the recurrent train step (~20 s on 2 cores)
def test_the_seed_sweep_is_the_one_seed_step_vmapped():
    """Seed s of train_seeds starts as create_state starts it for seed s and follows the loop's own step."""
    config = _memory_config("train.num_steps=3", "train.log_every=1", "model.cell=rnn")
    with config.unlocked():
        del config["experiment"]
    build = lambda c: memory_task.build(c)[0]  # noqa: E731
    seeds = [4, 9]
    first = sweep.initial_states(build(config), config, seeds)
    singles = []
    for i, seed in enumerate(seeds):
        c = sweep.seed_config(config, seed)
        task = build(c)
        singles.append((task, create_state(task.init_variables, c)))
        chex.assert_trees_all_equal(sweep.unstack(first, i).checkpoint_items(), singles[-1][1].checkpoint_items())
    states, summary = sweep.train_seeds(build, config, seeds, log=None, states=first)
    assert summary["steps"] == [1, 2, 3] and np.asarray(summary["loss"]).shape == (3, 2)
    in_turn, summary_in_turn = sweep.train_seeds(build, config, seeds, log=None, vmap=False)  # seed after seed
    assert summary_in_turn["steps"] == [1, 2, 3] and np.asarray(summary_in_turn["loss"]).shape == (3, 2)
    np.testing.assert_allclose(summary_in_turn["loss"], summary["loss"], rtol=1e-5)
    step = jax.jit(make_train_step(build(config).loss_fn))  # the same model for every seed: one compile
    for i, (task, state) in enumerate(singles):
        for n in range(3):
            state, _ = step(state, task.train_batch(n))
        chex.assert_trees_all_close(sweep.unstack(states, i).params, state.params, atol=1e-5)
        chex.assert_trees_all_close(sweep.unstack(in_turn, i).params, state.params, atol=1e-5)
        assert int(sweep.unstack(states, i).step) == 3 and int(sweep.unstack(in_turn, i).step) == 3


def test_geometric_slope_and_first_below():
    distance = np.arange(2, 20)
    slope, r2 = rm.geometric_slope(distance, 3.0 * 0.5 ** distance)
    np.testing.assert_allclose(slope, np.log10(0.5), rtol=1e-9)
    assert r2 == pytest.approx(1.0)
    assert rm.first_below([0, 5, 6, 7, 8], [0.2, 1.0, 0.6, 0.4, 0.7], 0.5, after=5) == 7
    assert rm.first_below([0, 5, 6], [0.2, 1.0, 0.6], 0.5, after=5) is None


def test_first_input_gradient_is_jax_grad_of_the_loss():
    """The norm per sentence equals jax.grad of that one sentence's loss with respect to its first embedding."""
    config = _memory_config()
    model = memory_task.make_model(config)
    batch = memory_task.make_batches(config).eval_set(3, 4)
    shapes = jax.eval_shape(memory_task.build(config)[0].init_variables, jax.random.PRNGKey(0))["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)
    norms = rm.first_input_gradients(model, jax.tree.map(lambda p: p[None], params), batch)[0]

    @jax.jit
    @jax.vmap
    def one_sentence(tokens_L, label):
        x_LE = model.apply({"params": params}, tokens_L[None], method=lambda m, t: m.embed(t))[0]

        def loss(x0_E):
            logits = model.apply({"params": params}, x_LE.at[0].set(x0_E)[None], tokens_L[None] != 0,
                                 method=model.from_embeddings)
            return -jax.nn.log_softmax(logits)[0, label]

        return jnp.linalg.norm(jax.grad(loss)(x_LE[0]))

    np.testing.assert_allclose(norms, one_sentence(batch["tokens"], batch["label"]), rtol=1e-4)
    assert float(np.min(norms)) > 0


def test_rows_cut_to_the_longest_sentence_are_the_same_sentences():
    """The measurements cut every evaluation row to the longest sentence measured: the same sentences, only
    padding dropped (which changes no output, final state or gradient: the padding tests above)."""
    batches = memory_task.make_batches(_memory_config())
    cut, full = rm.eval_rows(batches, 3, 8, 7), batches.eval_set(3, 8)
    assert cut["tokens"].shape == (8, 7) and full["tokens"].shape[1] == 16
    np.testing.assert_array_equal(cut["tokens"], full["tokens"][:, :7])
    assert np.all(full["tokens"][:, 7:] == 0) and np.all(cut["tokens"][:, :6] != 0)
    chex.assert_trees_all_equal({k: v for k, v in cut.items() if k != "tokens"},
                                {k: v for k, v in full.items() if k != "tokens"})
    with pytest.raises(ValueError, match="sentences with 6 fillers have 9 words, more than the 8 kept"):
        rm.eval_rows(batches, 6, 4, 8)


@pytest.mark.parametrize("override, match", [
    ("data.test_fillers=(0, 14)", "sentences of 17 words, longer than model.max_len = 16"),
    ("data.train_fillers=(5, 2)", "must be \\(lo, hi\\) with 0 <= lo <= hi"),
    ("model.cell=transformer", "config key 'model.cell' must be one of rnn, lstm, gru"),
    ("model.recurrent_init=identity", "config key 'model.recurrent_init' must be one of orthogonal, small_uniform"),
    ("experiment.cells=('rnn', 'tcn')", "allowed cells are rnn, lstm, gru"),
    ("experiment.examples=('alice saw dog',)", "holds 'dog', not in the vocabulary"),
    ("experiment.examples=(' ',)", "is empty; give at least one word"),
    ("experiment.examples=('alice' + ' very' * 16,)", "has 17 words, more than the configured maximum of 16"),
])
def test_bad_input_is_one_sentence(override, match):
    if "+" in override:  # built here: the override parser takes literals only
        config = _memory_config()
        config.experiment.examples = ("alice" + " very" * 16,)
    else:
        config = _memory_config(override)
    with pytest.raises(ConfigError, match=match):
        load_experiment("08_rnn.py").validate(config)


def test_saved_sweep_parameters_load_back_exactly(tmp_path):
    from p2t_jax.training.checkpoint import CheckpointError

    config = _memory_config()
    states = sweep.initial_states(memory_task.build(config)[0], config, [0, 1])
    path = sweep.save_params(tmp_path / "rnn" / sweep.PARAMS_FILE, states.params)
    loaded = sweep.load_params(path)
    chex.assert_trees_all_equal(loaded, jax.device_get(states.params))
    assert jax.tree.structure(loaded) == jax.tree.structure(jax.device_get(states.params))
    assert not list(path.parent.glob("*.partial"))
    (tmp_path / "junk").write_bytes(b"not msgpack")
    for bad, match in ((tmp_path / "none", "does not exist"), (tmp_path / "junk", "is not a parameter file")):
        with pytest.raises(CheckpointError, match=match):
            sweep.load_params(bad)
    model = memory_task.make_model(config)
    like = jax.eval_shape(lambda: memory_task.init_variables(model, config.model.max_len, jax.random.PRNGKey(0)))
    chex.assert_trees_all_equal(sweep.load_params(path, like=like["params"]), loaded)
    with config.unlocked():
        config.model.cell = "lstm" if config.model.cell != "lstm" else "rnn"
        config.model.features += 1
    other = memory_task.make_model(config)
    like = jax.eval_shape(lambda: memory_task.init_variables(other, config.model.max_len, jax.random.PRNGKey(0)))
    with pytest.raises(CheckpointError, match=f"'{path}' holds parameters of another model: '"):
        sweep.load_params(path, like=like["params"])


def test_experiment_refuses_bad_input_with_exit_status_2(tmp_path, capsys):
    workdir = tmp_path / "w"
    status = load_experiment("08_rnn.py").cli(["--workdir", str(workdir), "--config", "configs/rnn_memory.py:smoke",
                                               "--config.model.cell=gpt"])
    err = capsys.readouterr().err
    assert status == 2 and "'gpt'" in err and len(err.strip().splitlines()) == 1 and not workdir.exists()


@pytest.mark.slow
def test_experiment_smoke_run(tmp_path, capsys):
    """The experiment runs end to end on a tiny budget and writes its figures and results (its claims need the
    full budget: at smoke size they are measured, not expected to hold)."""
    import json

    status = load_experiment("08_rnn.py").cli(["--workdir", str(tmp_path), "--config", "configs/rnn_memory.py:smoke"])
    assert status in (0, 1), capsys.readouterr().err
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["claims"]) == {"rnn_learns_trained_range", "gated_cells_hold", "gradient_vanishes_for_rnn"}
    observed = results["observations"]["rnn_falls_toward_chance"]
    assert observed["reproduced"] == (observed["trained_range_accuracy"] >= 0.95 and observed["first_below_half"] is not None)
    assert set(results["figures"]) == {"accuracy_by_fillers.png", "gradient_by_distance.png"}
    assert {c: r["params"] for c, r in results["cells"].items()} == {"rnn": "rnn/params.msgpack",
                                                                      "lstm": "lstm/params.msgpack"}
    for name in results["figures"]:
        assert (tmp_path / name).stat().st_size > 0
    acc = np.asarray(results["cells"]["rnn"]["accuracy"])
    assert acc.shape == (13, 2) and np.all((acc >= 0) & (acc <= 1))
    assert len(results["cells"]["lstm"]["gradient_trained"]["slopes"]) == 2


def test_lstm_gates_are_the_cell_equations_on_the_filler_steps():
    config = _memory_config("model.cell=lstm")
    model = memory_task.make_model(config)
    batch = memory_task.make_batches(config).eval_set(4, 3)
    shapes = jax.eval_shape(memory_task.build(config)[0].init_variables, jax.random.PRNGKey(0))["params"]
    rng = np.random.default_rng(1)
    params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype), shapes)
    gates = rm.lstm_gates_on_fillers(model, jax.tree.map(lambda p: p[None], params), batch)
    x = np.asarray(params["embed"]["embedding"])[batch["tokens"]]  # [N, L, E]
    _, (cs, hs), _ = numpy_reference("lstm", params["rnn"]["cell"], x)
    h_prev = np.concatenate([np.zeros_like(hs[:, :1]), hs[:, :-1]], axis=1)
    cell = params["rnn"]["cell"]
    z = x @ np.asarray(cell["input"]["kernel"]) + np.asarray(cell["input"]["bias"]) + h_prev @ np.asarray(
        cell["recurrent"]["kernel"])
    f = _sigmoid(np.split(z, 4, axis=-1)[1])[:, 1:5]  # the four filler steps
    np.testing.assert_allclose(gates["forget_mean"][0], f.mean(), atol=1e-5)
    np.testing.assert_allclose(gates["forget_above_095"][0], (f > 0.95).mean(), atol=1e-6)
