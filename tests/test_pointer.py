"""Chapter 11: exact answers (hull, Held-Karp), the generated data, the pointer network, its decoders,
its metrics, and bad input through ``p2t train`` and the experiment."""

import functools
import itertools
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_experiment

from p2t_jax.cli import main
from p2t_jax.configuration import ConfigError, apply_overrides, load_config
from p2t_jax.data import geometry
from p2t_jax.data import pointer as problems
from p2t_jax.models.attention import MASKED
from p2t_jax.models.pointer import END, PAD, beam_search, greedy_decode, sequence_log_likelihood
from p2t_jax.tasks import pointer as pointer_task
from p2t_jax.tasks import pointer_metrics as metrics
from p2t_jax.training.loop import parameter_count

SMOKE = "configs/pointer.py:smoke"


# --- exact answers ------------------------------------------------------------------------------------------------

def brute_force_hull(points):
    """The hull by definition: i -> j is a counter-clockwise hull edge when every other point lies strictly
    to its left. Walk the edges from the vertex of lowest index."""
    n = len(points)
    succ = {}
    for i, j in itertools.permutations(range(n), 2):
        a, b = points[i], points[j]
        others = [k for k in range(n) if k not in (i, j)]
        cross = [(b[0] - a[0]) * (points[k][1] - a[1]) - (b[1] - a[1]) * (points[k][0] - a[0]) for k in others]
        if all(c > 0 for c in cross):
            succ[i] = j
    start = min(succ)
    order = [start]
    while succ[order[-1]] != start:
        order.append(succ[order[-1]])
    return np.asarray(order)


def test_convex_hull_equals_the_brute_force_hull_counter_clockwise_from_the_lowest_index():
    rng = np.random.default_rng(0)
    for n in (3, 4, 5, 8, 12):
        for _ in range(20):
            points = rng.random((n, 2))
            hull = geometry.convex_hull(points)
            np.testing.assert_array_equal(hull, brute_force_hull(points))
            assert hull[0] == hull.min()
            signed = np.dot(points[hull, 0], np.roll(points[hull, 1], -1)) - np.dot(points[hull, 1],
                                                                                     np.roll(points[hull, 0], -1))
            assert signed > 0  # counter-clockwise
            assert np.isclose(geometry.polygon_area(points, hull), geometry.polygon_area(points[hull]))


def test_convex_hull_by_hand():
    # an interior point (4), a point on an edge (5, not a vertex), corners given clockwise from index 0
    square = np.asarray([[1, 1], [1, 0], [0, 0], [0, 1], [0.5, 0.5], [0.5, 0.0]])
    np.testing.assert_array_equal(geometry.convex_hull(square), [0, 3, 2, 1])
    assert geometry.polygon_area(square, [0, 3, 2, 1]) == 1.0
    with pytest.raises(ValueError, match="one line"):
        geometry.convex_hull(np.asarray([[0, 0], [0.5, 0.5], [1, 1]]))


def test_a_hull_with_duplicate_points_names_the_lowest_index_and_scores_by_location():
    # the square's corners, the corner (1, 0) twice (indices 1 and 5) and (0, 1) twice (3 and 6), an inner point
    points = np.asarray([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5], [1, 0], [0, 1]], np.float32)
    np.testing.assert_array_equal(geometry.convex_hull(points), [0, 1, 2, 3])  # the lowest index of each location
    np.testing.assert_array_equal(geometry.convex_hull(points[[5, 1, 2, 3, 0]]), [0, 2, 3, 4])  # (1, 0) is 0 here
    batch = problems.instances("hull", [points.tolist()], max_length=8)
    np.testing.assert_array_equal(batch["targets"][0, :5], [1, 2, 3, 4, 0])
    assert batch["targets"].shape == (1, 8)
    rows = jnp.asarray([[1, 6, 3, 7, 0, PAD, PAD, PAD],  # the same hull through the other copies
                        [1, 2, 3, 4, 0, PAD, PAD, PAD],  # the target itself
                        [1, 2, 6, 3, 4, 0, PAD, PAD],  # a location twice: not the hull
                        [1, 2, 3, 0, PAD, PAD, PAD, PAD]])  # a corner missed
    batch = {k: np.repeat(v, len(rows), 0) for k, v in batch.items()}
    got = jax.jit(metrics.output_metrics, static_argnums=0)("hull", batch, rows)
    np.testing.assert_array_equal(got["exact_match"], [1, 1, 0, 0])
    np.testing.assert_allclose(got["pointer_accuracy"], [1, 1, 0.4, 0.6], atol=1e-6)
    np.testing.assert_allclose(got["area_coverage"], [1, 1, 1, 0.5], atol=1e-6)


def brute_force_tour(points):
    n = len(points)
    best = min(((0, *p) for p in itertools.permutations(range(1, n))),
               key=lambda t: geometry.tour_length(points, np.asarray(t)))
    return np.asarray(best), geometry.tour_length(points, np.asarray(best))


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6, 7])
def test_held_karp_equals_the_best_permutation(n):
    points = np.random.default_rng(n).random((6, n, 2))
    tours, lengths = geometry.held_karp(points)
    chex.assert_shape([tours, lengths], [(6, n), (6,)])
    for p, tour, length in zip(points, tours, lengths):
        reference, best = brute_force_tour(p)
        assert np.isclose(length, best) and np.isclose(geometry.tour_length(p, tour), best)
        assert sorted(tour) == list(range(n)) and tour[0] == 0
        np.testing.assert_array_equal(tour, geometry.canonical_tour(p, reference))  # one spelling of the tour
        if n > 2:
            q = p[tour]
            assert np.dot(q[:, 0], np.roll(q[:, 1], -1)) - np.dot(q[:, 1], np.roll(q[:, 0], -1)) > 0


def test_held_karp_refuses_sizes_it_does_not_solve():
    with pytest.raises(ValueError, match="2 to"):
        geometry.held_karp(np.zeros((1, geometry.HELD_KARP_MAX + 1, 2)))


# --- the generated problems ---------------------------------------------------------------------------------------

def test_targets_sort_number_hull_and_tour_batches():
    batches = problems.PointerBatches("sort", seed=3, batch_size=16, train_lengths=(3, 7))
    b = batches.train_batch(0)
    chex.assert_shape([b["inputs"], b["mask"], b["targets"], b["length"]], [(16, 7, 1), (16, 7), (16, 7), (16,)])
    for x, n, t in zip(b["inputs"][..., 0], b["length"], b["targets"]):
        assert 3 <= n <= 7 and np.all(t[n:] == PAD)
        np.testing.assert_array_equal(t[:n], np.argsort(x[:n]) + 1)
        assert np.all(np.diff(x[t[:n] - 1]) > 0) and np.all(x[n:] == 0)
    hull = problems.PointerBatches("hull", 3, 8, (4, 6)).train_batch(1)
    for x, n, t in zip(hull["inputs"], hull["length"], hull["targets"]):
        h = geometry.convex_hull(x[:n].astype(np.float64))
        np.testing.assert_array_equal(t[:len(h) + 1], np.r_[h + 1, END])
        assert np.all(t[len(h) + 1:] == PAD) and hull["targets"].shape[1] == 7
    tsp = problems.PointerBatches("tsp", 3, 8, (4, 6)).train_batch(2)
    for x, n, t, best in zip(tsp["inputs"], tsp["length"], tsp["targets"], tsp["optimal"]):
        _, reference = brute_force_tour(x[:n].astype(np.float64))
        assert np.isclose(best, reference, rtol=1e-5) and np.isclose(geometry.tour_length(x[:n], t[:n] - 1), best, rtol=1e-5)


def test_batches_are_deterministic_from_seed_and_step():
    for problem in problems.PROBLEMS:
        a = problems.PointerBatches(problem, seed=5, batch_size=8, train_lengths=(4, 6))
        b = problems.PointerBatches(problem, seed=5, batch_size=8, train_lengths=(4, 6))  # a resumed run
        chex.assert_trees_all_equal(a.train_batch(7), b.train_batch(7))
        assert not np.array_equal(a.train_batch(7)["inputs"], a.train_batch(8)["inputs"])
        other = problems.PointerBatches(problem, seed=6, batch_size=8, train_lengths=(4, 6))
        assert not np.array_equal(a.train_batch(7)["inputs"], other.train_batch(7)["inputs"])
        chex.assert_trees_all_equal(a.eval_set(5, 4), b.eval_set(5, 4))
        assert not np.array_equal(a.eval_set(5, 4)["inputs"], a.train_batch(0)["inputs"][:4, :5])
    pool = problems.PointerBatches("sort", 5, 8, (4, 6), train_examples=24)  # three fixed batches, cycled
    chex.assert_trees_all_equal(pool.train_batch(1), pool.train_batch(4))


def test_padding_keeps_the_answers():
    batch = problems.PointerBatches("hull", 0, 4, (5, 5)).eval_set(5, 4)
    padded = problems.pad("hull", batch, 10)
    chex.assert_shape([padded["inputs"], padded["targets"]], [(4, 10, 2), (4, 11)])
    np.testing.assert_array_equal(padded["targets"][:, :6], batch["targets"])
    assert np.all(padded["targets"][:, 6:] == PAD) and not padded["mask"][:, 5:].any()


# --- the model and its decoders -----------------------------------------------------------------------------------

@functools.cache
def _model(problem):
    config = load_config(SMOKE)
    apply_overrides(config, [f"data.problem={problem}", "model.embed_dim=8", "model.features=8",
                             "model.attention_dim=8", "data.max_length=10"])
    model = pointer_task.make_model(config)
    params = pointer_task.init_variables(model, problem, jax.random.PRNGKey(1))["params"]
    # larger weights than the initialisation's: sharper, more varied pointer distributions to test against
    params = jax.tree.map(lambda p: 3 * p, params)
    return model, params


def _batch(problem, n=6, size=4, seed=0):
    return problems.PointerBatches(problem, seed, size, (n, n)).eval_set(n, size)


@functools.cache
def _decoded(problem):
    """One batch of 6 instances of 6 elements, decoded every way the tests compare (one compile each)."""
    model, params = _model(problem)
    batch = _batch(problem, n=6, size=6, seed=1)

    @jax.jit
    def everything(params, inputs, mask, targets):
        greedy = greedy_decode(model, params, inputs, mask)
        one = beam_search(model, params, inputs, mask, 1)
        wide = beam_search(model, params, inputs, mask, 4)
        logits = model.apply({"params": params}, inputs, mask, targets)
        teacher = {name: sequence_log_likelihood(model, params, inputs, mask, d.positions_BT)
                   for name, d in (("greedy", greedy), ("wide", wide))}
        return greedy, one, wide, logits, teacher

    out = everything(params, batch["inputs"], batch["mask"], batch["targets"])
    return batch, *jax.device_get(out)


def test_parameter_count_is_the_sum_of_the_parts():
    config = load_config(SMOKE)  # E = H = A = 16
    for problem, D in (("sort", 1), ("hull", 2)):
        apply_overrides(config, [f"data.problem={problem}"])
        model = pointer_task.make_model(config)
        shapes = jax.eval_shape(functools.partial(pointer_task.init_variables, model, problem), jax.random.PRNGKey(0))
        E = H = A = 16
        lstm = E * 4 * H + 4 * H + H * 4 * H
        expected = (D * E + E) + 2 * E + 2 * lstm + (H * A + H * A + A + A)  # embed; end, go; 2 LSTMs; W_k, W_q + b, v
        assert parameter_count(shapes["params"]) == expected


# hull is the fuller case (the end position, outputs of several lengths); sort's compile is behind slow
BOTH = ["hull", pytest.param("sort", marks=pytest.mark.slow)]


@pytest.mark.parametrize("problem", BOTH)
def test_shapes_and_masks(problem):
    batch, greedy, _, _, logits, _ = _decoded(problem)
    B, N = batch["mask"].shape
    T, S = batch["targets"].shape[1], N + 1
    chex.assert_shape(logits, (B, T, S))
    for b, t in itertools.product(range(B), range(T)):  # the end only for hulls; earlier targets masked
        if batch["targets"][b, t] == PAD:
            continue
        assert (logits[b, t, 0] == MASKED) == (problem == "sort")
        for s in batch["targets"][b, :t]:
            if s > 0:
                assert logits[b, t, s] == MASKED
    chex.assert_shape([greedy.positions_BT, greedy.log_likelihood_B, greedy.weights_BTS], [(B, T), (B,), (B, T, S)])
    for row, w in zip(greedy.positions_BT, greedy.weights_BTS):
        real = row[row != PAD]
        elements = real[real != END]
        assert len(set(elements.tolist())) == len(elements)  # never points twice at one element
        if problem == "sort":
            assert sorted(real.tolist()) == list(range(1, N + 1))
        else:
            assert real[-1] == END and len(real) <= N + 1
        for t, s in enumerate(real):
            assert s == np.argmax(w[t]) and np.isclose(w[t].sum(), 1, atol=1e-5)  # greedy: the argmax
            assert np.all(w[t, real[:t]] == 0)  # the chosen positions weigh exactly 0
        assert np.all(w[len(real):] == 0)
    if problem == "hull":
        assert len({len(r[r != PAD]) for r in greedy.positions_BT}) > 1  # outputs of several lengths were tested


@pytest.mark.parametrize("problem", BOTH)
def test_beam_of_one_is_greedy_and_a_wider_beam_is_at_least_as_likely(problem):
    _, greedy, one, wide, _, teacher = _decoded(problem)
    np.testing.assert_array_equal(one.positions_BT, greedy.positions_BT)
    np.testing.assert_allclose(one.log_likelihood_B, greedy.log_likelihood_B, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(teacher["greedy"], greedy.log_likelihood_B, rtol=1e-4, atol=1e-4)  # decoding = teacher forcing
    assert np.all(wide.log_likelihood_B >= greedy.log_likelihood_B - 1e-5)
    np.testing.assert_allclose(teacher["wide"], wide.log_likelihood_B, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_a_beam_as_wide_as_every_output_finds_the_most_likely_permutation():
    model, params = _model("sort")
    batch = _batch("sort", n=4, size=3, seed=2)
    perms = np.asarray(list(itertools.permutations(range(1, 5))), np.int32)  # 24 outputs
    beam = beam_search(model, params, batch["inputs"], batch["mask"], 24)
    for b in range(3):
        rows = {k: np.repeat(v[b:b + 1], len(perms), axis=0) for k, v in batch.items()}
        ll = sequence_log_likelihood(model, params, rows["inputs"], rows["mask"], jnp.asarray(perms))
        np.testing.assert_array_equal(beam.positions_BT[b], perms[int(np.argmax(ll))])
        assert np.isclose(beam.log_likelihood_B[b], ll.max(), atol=1e-4)


@pytest.mark.slow
def test_padding_never_changes_an_output():
    model, params = _model("hull")
    batch = _batch("hull", n=5, size=4, seed=3)
    padded = problems.pad("hull", batch, 8)
    short = greedy_decode(model, params, batch["inputs"], batch["mask"])
    long = greedy_decode(model, params, padded["inputs"], padded["mask"])
    np.testing.assert_array_equal(long.positions_BT[:, :6], short.positions_BT)
    assert np.all(long.positions_BT[:, 6:] == PAD)
    np.testing.assert_allclose(long.log_likelihood_B, short.log_likelihood_B, atol=1e-5)


def test_decoding_is_one_scan_whatever_the_length():
    """No Python loop per output step: the traced program holds a scan and has the same size for 4 and 9 elements."""
    model, params = _model("sort")

    def eqns(fn, n):
        jaxpr = jax.make_jaxpr(functools.partial(fn, model, params))(jnp.zeros((2, n, 1)), jnp.ones((2, n), bool))
        return [e.primitive.name for e in jaxpr.jaxpr.eqns]

    for fn in (greedy_decode, functools.partial(beam_search, beam_width=3)):
        short, long = eqns(fn, 4), eqns(fn, 9)
        assert "scan" in short and short == long


def test_beam_width_zero_is_refused():
    model, params = _model("sort")
    with pytest.raises(ValueError, match="at least 1"):
        beam_search(model, params, jnp.zeros((1, 3, 1)), jnp.ones((1, 3), bool), 0)


# --- metrics --------------------------------------------------------------------------------------------------------

def test_metrics_on_hand_made_outputs():
    square = np.asarray([[[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]]], np.float32)  # hull 1 2 3 4 (CCW), end
    target = np.asarray([[1, 2, 3, 4, 0, PAD]])
    outputs = {
        "right": ([1, 2, 3, 4, 0, PAD], 1.0, 1.0, 1.0),
        "a vertex missed": ([1, 2, 3, 0, PAD, PAD], 0.6, 0.0, 0.5),  # triangle: half the square
        "the inner point": ([1, 2, 3, 5, 4, 0], 0.6, 0.0, 0.75),  # a simple pentagon with a dent
        "crossing": ([1, 3, 2, 4, 0, PAD], 0.6, 0.0, 0.0),  # a bow tie: not simple, area counts 0
        "two points": ([1, 2, 0, PAD, PAD, PAD], 0.4, 0.0, 0.0),
    }
    measure = jax.jit(metrics.output_metrics, static_argnums=0)  # one compile for every case
    rows = jnp.asarray([row for row, *_ in outputs.values()])
    got = measure("hull", {"inputs": np.repeat(square, len(rows), 0), "targets": np.repeat(target, len(rows), 0)}, rows)
    want = np.asarray([expected for _, *expected in outputs.values()])
    np.testing.assert_allclose(np.stack([got["pointer_accuracy"], got["exact_match"], got["area_coverage"]], 1), want,
                               atol=1e-6, err_msg=str(list(outputs)))
    np.testing.assert_array_equal(got["simple_polygon"], [1, 1, 1, 0, 0])
    tsp = {"inputs": square[:, :4], "targets": np.asarray([[1, 2, 3, 4]]), "optimal": np.asarray([4.0], np.float32)}
    tsp = {k: np.repeat(v, 2, 0) for k, v in tsp.items()}
    got = measure("tsp", tsp, jnp.asarray([[1, 3, 2, 4], [1, 4, 3, 2]]))  # crossing; the optimal tour the other way round
    np.testing.assert_allclose(got["tour_length"], [2 + 2 * np.sqrt(2), 4], rtol=1e-6)
    np.testing.assert_allclose(got["tour_excess"], [(2 + 2 * np.sqrt(2)) / 4 - 1, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["pointer_accuracy"], [0.5, 0.5])


def test_jax_metrics_agree_with_numpy_geometry():
    batch = problems.PointerBatches("tsp", 0, 16, (5, 8)).train_batch(0)
    rng = np.random.default_rng(0)
    positions = np.full_like(batch["targets"], PAD)
    for b, n in enumerate(batch["length"]):
        positions[b, :n] = rng.permutation(n) + 1
    got = metrics.tour_length(batch["inputs"], jnp.asarray(positions))
    want = [geometry.tour_length(x[:n], p[:n] - 1) for x, n, p in zip(batch["inputs"], batch["length"], positions)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    area = metrics.polygon_area(batch["inputs"], jnp.asarray(positions))
    want = [geometry.polygon_area(x[:n], p[:n] - 1) for x, n, p in zip(batch["inputs"], batch["length"], positions)]
    np.testing.assert_allclose(area, want, rtol=1e-4, atol=1e-6)


# --- bad input ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, match", [
    ("data.train_lengths=(1, 5)", "allowed are 2 to 40"),
    ("data.eval_lengths=(5, 41)", "allowed are 2 to 40"),
    ("data.train_lengths=(6, 5)", "lo <= hi"),
    ("decode.beam_width=0", "'decode.beam_width' must be a whole number >= 1"),
    ("data.problem=knapsack", "'data.problem' must be one of"),
])
def test_bad_config_is_one_sentence(override, match):
    config = load_config(SMOKE)
    apply_overrides(config, [override])
    with pytest.raises(ConfigError, match=match):
        pointer_task.validate(config)


def test_bad_instances_are_one_sentence():
    cases = [
        ("sort", [[0.2, 1.5, 0.3]], "holds 1.5; the model sorts numbers in \\[0, 1\\)"),
        ("sort", [[0.2]], "allowed are 2 to 10"),
        ("sort", [np.linspace(0, 0.9, 11).tolist()], "of length 11; allowed are 2 to 10"),
        ("hull", [[[0.1, 0.2], [1.2, 0.5], [0.3, 0.9]]], "outside the unit square"),
        ("hull", [[[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]], "on one line"),
        ("tsp", [[[0.1, 0.2], [-0.1, 0.5]]], "outside the unit square"),
        ("hull", [["a", "b"]], "is not a list of numbers"),
        ("hull", [[0.1, 0.2, 0.3]], "must be a list of \\(x, y\\) points"),
    ]
    for problem, values, match in cases:
        with pytest.raises(ConfigError, match=match):
            problems.instances(problem, values, 10)
    batch = problems.instances("hull", [[[0, 0], [1, 0], [0, 1], [0.2, 0.2]]], 10)
    np.testing.assert_array_equal(batch["targets"][0], [1, 2, 3, 0, PAD])


def _error(capsys, call):
    capsys.readouterr()
    code = call()
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("override, match", [
    ("--config.data.train_lengths=(1, 5)", "allowed are 2 to 40"),
    ("--config.data.eval_lengths=(5, 41)", "allowed are 2 to 40"),
    ("--config.decode.beam_width=0", "decode.beam_width"),
])
def test_p2t_train_refuses_bad_input_and_writes_nothing(override, match, capsys, repo_root, tmp_path):
    workdir = tmp_path / "never"
    code, err = _error(capsys, lambda: main(["train", "--config", f"{repo_root}/{SMOKE}", "--workdir", str(workdir),
                                             "--no-progress", override]))
    assert code == 2 and match in err and len(err.splitlines()) == 1, err
    assert not workdir.exists()


@pytest.mark.parametrize("override, match", [
    ("--config.experiment.sort_example=(0.2, 1.5, 0.3)", "holds 1.5"),
    ("--config.experiment.sort.test_lengths=(5, 40)", "allowed are 2 to 16"),
    ("--config.experiment.tsp.test_lengths=(1,)", "allowed are 2 to 6"),
    ("--config.decode.beam_width=0", "decode.beam_width"),
    ("--config.experiment.hull.pad_to=(10, 50)", "'experiment.hull.pad_to' must hold widths from 1 to"),
])
def test_the_experiment_refuses_bad_input_with_exit_status_2(override, match, capsys, repo_root, tmp_path):
    workdir = tmp_path / "never"
    experiment = load_experiment("11_pointer.py")
    code, err = _error(capsys, lambda: experiment.cli(["--workdir", str(workdir), "--config", f"{repo_root}/{SMOKE}",
                                                       override]))
    assert code == 2 and match in err and len(err.splitlines()) == 1, err
    assert not workdir.exists()


# --- the one loop ---------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_p2t_train_resumes_to_the_straight_run_and_evaluates(capsys, repo_root, tmp_path):
    """``p2t train`` to step 15, then again to 30 (resumed), equals one straight run of 30 steps; ``p2t eval`` reads it."""
    from p2t_jax.training.loop import restore_state

    config = f"{repo_root}/{SMOKE}"
    fixed = "--config.optim.decay_steps=30"  # the schedule of a 30-step run, also while the first call stops at 15
    split, straight = tmp_path / "split", tmp_path / "straight"
    assert main(["train", "--config", config, "--workdir", str(split), "--no-progress", fixed,
                 "--config.train.num_steps=15"]) == 0
    assert main(["train", "--config", config, "--workdir", str(split), "--no-progress", fixed]) == 0
    assert "steps 15 -> 30" in capsys.readouterr().out
    assert main(["train", "--config", config, "--workdir", str(straight), "--no-progress", fixed]) == 0
    task, cfg = pointer_task.build(apply_overrides(load_config(config), ["optim.decay_steps=30"]))
    a, _ = restore_state(task.init_variables, cfg, split)
    b, _ = restore_state(task.init_variables, cfg, straight)
    assert int(a.step) == int(b.step) == 30
    chex.assert_trees_all_equal(jax.device_get(a.params), jax.device_get(b.params))
    capsys.readouterr()
    assert main(["eval", "--workdir", str(split)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 30 and 0 <= result["pointer_accuracy"] <= 1 and "beam_exact_match" in result


def test_test_widths_take_the_smallest_configured_width_that_holds_the_instances():
    bucket = load_experiment("11_pointer.py").bucket
    assert [bucket(n, (10, 40)) for n in (5, 10, 11, 15, 40)] == [10, 10, 40, 40, 40]
    assert [bucket(n, (20,)) for n in (5, 20, 21)] == [20, 20, 30]  # past the widths: the next multiple of 10
    assert [bucket(n) for n in (5, 10, 12, 40)] == [10, 10, 20, 40]
