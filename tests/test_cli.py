"""The p2t command end to end on a tiny run, and its answers to bad input."""

import json
import os

import pytest

from p2t_jax.cli import main


@pytest.fixture
def trained(tiny_corpus, smoke_run):
    """The shared smoke run (conftest.smoke_run: `p2t train` of the smoke config, 20 steps); read only."""
    return smoke_run


def test_train_sample_eval(trained, capsys):
    capsys.readouterr()
    assert main(["sample", "--workdir", str(trained), "--prompt", "ROMEO:", "--max-new-tokens", "30",
                 "--seed", "1"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("ROMEO:") and len(first.rstrip("\n")) >= 36
    assert main(["sample", "--workdir", str(trained), "--prompt", "ROMEO:", "--max-new-tokens", "30",
                 "--seed", "1"]) == 0
    assert capsys.readouterr().out == first
    assert main(["eval", "--workdir", str(trained), "--batches", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == 20 and result["loss"] > 0 and result["bits_per_char"] > 0


def _error(capsys, argv):
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_sampling_input(trained, capsys, tmp_path):
    w = str(trained)
    cases = [
        (["sample", "--workdir", w, "--prompt", "ROMEO{"], "'{', which is not in the model's"),
        (["sample", "--workdir", str(tmp_path / "missing")], "does not exist"),
        (["sample", "--workdir", str(tmp_path)], "no config.json"),
        (["sample", "--workdir", w, "--temperature", "-1"], "--temperature must be"),
        (["sample", "--workdir", w, "--top-k", "-2"], "--top-k must be"),
        (["sample", "--workdir", w, "--max-new-tokens", "0"], "--max-new-tokens must be"),
        (["sample", "--workdir", w, "--max-new-tokens", "many"], "invalid int value"),
        (["sample", "--workdir", w, "--prompt", ""], "--prompt must hold"),
    ]
    for argv, message in cases:
        code, err = _error(capsys, argv)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)


def test_missing_checkpoint(trained, capsys, tmp_path):
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / name).write_text((trained / name).read_text())
    for command in ("sample", "eval"):
        code, err = _error(capsys, [command, "--workdir", str(tmp_path)])
        assert code == 2 and "no checkpoint found" in err, err


def test_bad_train_input_touches_nothing(capsys, repo_root, tmp_path):
    workdir = tmp_path / "never"
    cfg = f"{repo_root}/configs/shakespeare.py:smoke"
    cases = [
        (["train", "--config", cfg, "--workdir", str(workdir), "--config.model.num_heads=3"], "must divide"),
        (["train", "--config", cfg, "--workdir", str(workdir), "--config.model.nope=3"], "unknown config key"),
        (["train", "--config", "configs/none.py", "--workdir", str(workdir)], "does not exist"),
        (["train", "--config", cfg], "--workdir"),
        (["fly"], "invalid choice"),
    ]
    for argv, message in cases:
        code, err = _error(capsys, argv)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
    assert not os.path.exists(workdir)


def test_one_command_trains_and_evaluates_every_task(repo_root, tmp_path, capsys):
    """An image-classification config names its task: the same p2t train / eval serve it, and
    p2t sample refuses it in one sentence."""
    workdir = str(tmp_path / "mnist")
    assert main(["train", "--config", f"{repo_root}/configs/mnist_optimizers.py:smoke", "--workdir", workdir,
                 "--no-progress"]) == 0
    assert "image_classification" in capsys.readouterr().out
    assert main(["eval", "--workdir", workdir]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] > 0 and 0 <= result["accuracy"] <= 1
    code, err = _error(capsys, ["sample", "--workdir", workdir])
    assert code == 2 and "does not generate text" in err and len(err.splitlines()) == 1
    code, err = _error(capsys, ["train", "--config", f"{repo_root}/configs/mnist_optimizers.py:smoke",
                                "--workdir", str(tmp_path / "x"), "--config.task=nonsense"])
    assert code == 2 and "the known tasks are" in err and not (tmp_path / "x").exists()
