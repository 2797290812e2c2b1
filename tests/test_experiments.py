"""Every chapter experiment without a smoke test of its own runs end to end on its smoke config."""

import pytest
from conftest import run_experiment_smoke


@pytest.mark.slow
def test_chapter_4_optimisers(tmp_path, capsys, repo_root):
    results = run_experiment_smoke("04_optimisers.py", f"{repo_root}/configs/mnist_optimizers.py:smoke", tmp_path,
                                   capsys)
    assert set(results["runs"]) >= {"sgd", "adam"} and (tmp_path / "optimizer_curves.png").exists()


@pytest.mark.slow
def test_chapter_5_regularisation(tmp_path, capsys, repo_root):
    """At smoke size the runs are too short to overfit: the claims are checked, not expected to hold."""
    results = run_experiment_smoke("05_regularisation.py", f"{repo_root}/configs/mnist_regularisation.py:smoke",
                                   tmp_path, capsys, claims=None)
    assert results["figures"] and all((tmp_path / name).exists() for name in results["figures"])


@pytest.mark.slow
def test_chapter_10_transformer(tiny_corpus, tmp_path, capsys, repo_root):
    """One variant at smoke size: it trains and samples, and checks no claim (two are needed)."""
    results = run_experiment_smoke("10_transformer.py", f"{repo_root}/configs/transformer_compare.py:smoke",
                                   tmp_path, capsys, claims=False)
    assert set(results["models"]) == {"smoke"} and (tmp_path / "loss_curves.png").exists()


@pytest.mark.slow
def test_chapter_10_sharded(tiny_corpus, tmp_path, capsys, repo_root):
    results = run_experiment_smoke("10_transformer_sharded.py", f"{repo_root}/configs/transformer_sharded.py:smoke",
                                   tmp_path, capsys)
    assert {"one device", "fsdp"} <= set(results["strategies"])


@pytest.mark.slow
def test_chapter_11_pointer(tmp_path, capsys, repo_root):
    """Three tiny runs (sort, hull, tsp): trained, tested by length and drawn. At smoke size the claims are
    measured, not expected to hold (about 2 minutes on 2 CPU cores, most of it compiling the decoders)."""
    results = run_experiment_smoke("11_pointer.py", f"{repo_root}/configs/pointer.py:smoke", tmp_path, capsys,
                                   claims=None)
    assert set(results["problems"]) == {"sort", "hull", "tsp"}
    assert set(results["claims"]) == {"sort_trained_lengths", "sort_degrades_gracefully", "hull_area",
                                      "tsp_near_optimal", "beam_not_worse"}
    assert results["claims"]["beam_not_worse"]["passed"]  # holds untrained: beam search at least as likely as greedy
    assert set(results["figures"]) == {"pointer_attention.png", "accuracy_by_length.png", "hulls_and_tours.png"}
    assert all((tmp_path / name).stat().st_size > 0 for name in results["figures"])
    assert results["problems"]["sort"]["lengths"] == [5, 8, 12]
