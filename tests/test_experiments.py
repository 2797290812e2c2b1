"""Every chapter experiment without a smoke test of its own runs end to end on its smoke config."""

from conftest import run_experiment_smoke


def test_chapter_4_optimisers(tmp_path, capsys, repo_root):
    results = run_experiment_smoke("04_optimisers.py", f"{repo_root}/configs/mnist_optimizers.py:smoke", tmp_path,
                                   capsys)
    assert set(results["runs"]) >= {"sgd", "adam"} and (tmp_path / "optimizer_curves.png").exists()


def test_chapter_5_regularisation(tmp_path, capsys, repo_root):
    """At smoke size the runs are too short to overfit: the claims are checked, not expected to hold."""
    results = run_experiment_smoke("05_regularisation.py", f"{repo_root}/configs/mnist_regularisation.py:smoke",
                                   tmp_path, capsys, claims=None)
    assert results["figures"] and all((tmp_path / name).exists() for name in results["figures"])


def test_chapter_10_transformer(tiny_corpus, tmp_path, capsys, repo_root):
    """One variant at smoke size: it trains and samples, and checks no claim (two are needed)."""
    results = run_experiment_smoke("10_transformer.py", f"{repo_root}/configs/transformer_compare.py:smoke",
                                   tmp_path, capsys, claims=False)
    assert set(results["models"]) == {"smoke"} and (tmp_path / "loss_curves.png").exists()


def test_chapter_10_sharded(tiny_corpus, tmp_path, capsys, repo_root):
    results = run_experiment_smoke("10_transformer_sharded.py", f"{repo_root}/configs/transformer_sharded.py:smoke",
                                   tmp_path, capsys)
    assert {"one device", "fsdp"} <= set(results["strategies"])
