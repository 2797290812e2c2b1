"""The playground's pages under Streamlit's AppTest, then in a real headless browser.

Every page renders without an exception, changing a widget changes what it shows, bad
input becomes one message on the page, and a second interaction compiles nothing. The run
folders the pages read are trained here, tiny, with the same code the CLI and the
experiments use; chapters 8, 9 and 11's pages and runs are in tests/test_playground_sequences.py.
"""

import json
import os
import pathlib
import shutil
import socket
import subprocess
import time
import urllib.request

import jax
import matplotlib.pyplot as plt
import numpy as np
import pytest

pytest.importorskip("streamlit", reason="the playground needs the app extra: pip install -e '.[app]'")

from conftest import REPO, CompileCounter, load_experiment  # noqa: E402
from playground_pages import TIMEOUT_S, errors, images, make_sequence_runs, page, rerun  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

# Under pytest-xdist with --dist loadfile (make test) or loadgroup, every test here runs on one worker, which trains the
# run folders below once (with plain -n they may land on both workers, each training them).
pytestmark = pytest.mark.xdist_group("playground")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, smoke_run):
    """A runs folder as the commands leave it: a Transformer run (`p2t train`, smoke config on a
    tiny corpus: a copy of the shared conftest.smoke_run), an optimiser run, two regularisation
    runs, a CNN and chapter 7's four nets (the experiments' own configs and folder layout, smoke
    variants). Chapters 8, 9 and 11's runs are made by tests/test_playground_sequences.py, whose
    pages read them (a module of its own, so that the two sets of runs train on both workers)."""
    from p2t_jax.configuration import load_config
    from p2t_jax.data import mnist
    from p2t_jax.tasks import image_classification as ic

    root = tmp_path_factory.mktemp("runs")
    shutil.copytree(smoke_run, root / "smoke")
    splits, source = mnist.load_splits("embedded", "mnist")
    optimisers = load_experiment("04_optimisers.py")
    config = load_config(f"{REPO}/configs/mnist_optimizers.py:smoke")
    config.train.num_epochs = 1
    ic.train_or_reuse(optimisers.optimizer_config(config, "adam"), root / "04_optimisers" / "adam", splits, source,
                      log=lambda *_: None)
    regularisation = load_experiment("05_regularisation.py")
    config = load_config(f"{REPO}/configs/mnist_regularisation.py:smoke")
    config.train.num_epochs = 2
    for name in ("baseline", "dropout+decay"):
        ic.train_or_reuse(regularisation.run_config(config, name, config.seed),
                          root / "05_regularisation" / name.replace("+", "_and_"), splits, source, log=lambda *_: None)
    cnn = load_experiment("06_cnn.py")
    config = load_config(f"{REPO}/configs/mnist_cnn.py:smoke")
    config.train.num_epochs = 1
    ic.train_or_reuse(cnn.cnn_config(config, config.model.conv_features, config.seed),
                      root / "06_cnn" / "cnn_smoke_seed0", splits, source, log=lambda *_: None)
    # Chapter 7: its four nets at one depth, 4 steps each, in the experiment's folders (<net>_depth<D>_seed<S>).
    deep = load_experiment("07_batchnorm_residual.py")
    config = load_config(f"{REPO}/configs/deep_nets.py:smoke")
    config.data.train_size, config.model.width, config.train.batch_size, config.train.num_epochs = 64, 8, 32, 2
    config.train.log_every, config.train.eval_batch_size = 1, 500
    config.train.eval_every = config.train.checkpoint_every = 4
    for net in deep.NETS:
        ic.train_or_reuse(deep.net_config(config, net, DEEP_DEPTH, 0),
                          root / "07_batchnorm_residual" / f"{net.replace('+', '_')}_depth{DEEP_DEPTH}_seed0", splits,
                          source, log=lambda *_: None)
    return root


DEEP_DEPTH = 2  # the depth of the chapter 7 runs above



def test_perceptron_page(runs):
    at = page("perceptron", runs)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Seeds at zero errors within 60 epochs"] == "0 / 32"  # XOR: never
    first = images(at)
    assert len(first) == 2 and not errors(at)
    at.selectbox(key="pc_gate").set_value("AND")
    rerun(at)
    assert {m.label: m.value for m in at.metric}["Seeds at zero errors within 60 epochs"] == "32 / 32"
    assert images(at)[0] != first[0]
    with CompileCounter() as compiled:  # a second interaction: another rate, epoch and seed
        at.number_input(key="pc_lr").set_value(0.25)
        at.slider(key="pc_epoch").set_value(3)
        at.slider(key="pc_seed").set_value(5)
        rerun(at)
    assert compiled.count == 0
    assert "Errors after epoch 3 (seed 5)" in {m.label for m in at.metric}
    at.number_input(key="pc_lr").set_value(1e9)
    rerun(at)
    assert errors(at) == ["Learning rate must be in (0, 100], got 1000000000.0."]


def test_mlp_page(runs):
    at = page("xor_mlp", runs)
    solved = {m.label: m.value for m in at.metric}["Seeds solving XOR"]
    first = images(at)
    assert len(first) == 3 and solved.endswith("/ 64") and not errors(at)
    with CompileCounter() as compiled:  # another rate and seed count of the same size class: no compile
        at.number_input(key="mlp_lr").set_value(1.0)
        at.number_input(key="mlp_seeds").set_value(50)
        rerun(at)
    assert compiled.count == 0
    assert {m.label: m.value for m in at.metric}["Seeds solving XOR"].endswith("/ 50")
    at.slider(key="mlp_width").set_value(4)
    rerun(at)
    wide = int({m.label: m.value for m in at.metric}["Seeds solving XOR"].split("/")[0])
    assert wide > int(solved.split("/")[0]) * 50 / 64  # chapter 3: 2-4-1 gets stuck far less often
    assert images(at)[0] != first[0]
    for key, value, message in (("mlp_seeds", 10**9, "Seeds must be in [1, 1024]"),
                                ("mlp_lr", -1.0, "Learning rate must be in (0, 1000]")):
        at.number_input(key=key).set_value(value)
        rerun(at)
        assert len(errors(at)) == 1 and errors(at)[0].startswith(message)
        at.number_input(key=key).set_value(1.0 if key == "mlp_lr" else 64)


def test_optimisers_page(runs):
    from p2t_jax.optim import scratch

    at = page("optimisers", runs)
    chosen = at.multiselect(key="opt_names")
    assert chosen.value == list(scratch.OPTIMIZERS) and chosen.proto.wrap  # all seven, their chips wrapped
    surface = at.dataframe[0].value
    assert list(surface["optimiser"]) == ["sgd", "momentum", "nesterov", "rmsprop", "adam", "adamw", "lion"]
    mnist = at.dataframe[1].value
    assert list(mnist["optimiser"]) == ["adam"] and len(images(at)) == 2 and not errors(at)
    with CompileCounter() as compiled:  # a new learning rate and a shorter race reuse the compiled paths
        at.number_input(key="opt_lr_adam").set_value(0.2)
        at.slider(key="opt_shown_500").set_value(50)
        rerun(at)
    assert compiled.count == 0
    after = at.dataframe[0].value.set_index("optimiser")
    assert after.loc["adam", "learning rate"] == 0.2 and "loss at step 50" in after.columns
    assert after.loc["sgd", "loss at step 50"] != surface.set_index("optimiser").loc["sgd", "loss at step 500"]
    at.text_input(key="opt_folder").set_value(str(runs / "nothing here"))
    rerun(at)
    assert any("python experiments/04_optimisers.py --workdir" in c.value for c in at.code)
    at.multiselect(key="opt_names").set_value([])
    rerun(at)
    assert errors(at) == ["Pick at least one optimiser."]


def test_regularisation_page(runs):
    at = page("regularisation", runs)
    assert {m.label for m in at.metric} == {"Train accuracy", "Test accuracy", "Gap (points)"}
    baseline_gap = {m.label: m.value for m in at.metric}["Gap (points)"]
    first = images(at)
    at.select_slider(key="reg_dropout").set_value(0.2)
    at.select_slider(key="reg_decay").set_value(1e-4)
    rerun(at)
    gap = [m for m in at.metric if m.label == "Gap (points)"][0]
    assert not errors(at) and "vs baseline" in gap.proto.delta and images(at) != first
    assert len(at.dataframe[0].value) == 2
    at.select_slider(key="reg_dropout").set_value(0.0)  # decay without dropout: not trained here
    rerun(at)
    assert errors(at) and errors(at)[0].startswith("No run in")
    at.text_input(key="reg_folder").set_value(str(runs / "missing"))
    rerun(at)
    assert any("python experiments/05_regularisation.py --workdir" in c.value for c in at.code)
    assert baseline_gap


def test_cnn_page(runs):
    from p2t_jax.data import mnist

    at = page("cnn", runs)
    first = images(at)
    assert len(first) == 2 and not errors(at)  # feature maps, filters
    with CompileCounter() as compiled:  # another digit: the same shapes, nothing to compile
        at.number_input(key="cnn_digit").set_value(5)
        rerun(at)
    assert compiled.count == 0
    maps, filters = images(at)
    assert maps != first[0] and filters == first[1]
    label = int(mnist.load_splits("embedded", "mnist")[0]["test"].labels[5])
    assert at.metric[0].label == "Predicted digit" and at.metric[0].proto.delta == f"label {label}"
    at.number_input(key="cnn_digit").set_value(10**6)
    rerun(at)
    assert errors(at) == ["Test digit (index) must be in [0, 999], got 1000000."]
    at.text_input(key="cnn_folder").set_value(str(runs / "04_optimisers"))  # runs, but no CNN
    rerun(at)
    assert any(c.value.startswith("python experiments/06_cnn.py --workdir") for c in at.code)


def _deep_tasks(config, depth: int, seed: int = 0) -> dict:
    """``{net: (task, batches, resolved config)}`` of chapter 7's nets, as the experiment builds them."""
    from p2t_jax.chapters import deep_nets
    from p2t_jax.data import mnist
    from p2t_jax.tasks import image_classification as ic

    splits, source = mnist.load_splits("embedded", "mnist")
    config = config.copy_and_resolve_references()
    config.seed = seed
    return {net: ic.build_with_batches(deep_nets.net_config(config, net, depth), splits=splits, source=source)
            for net in deep_nets.NETS}


def test_one_compiled_call_measures_what_the_first_step_of_each_run_measures():
    """first_step_of_nets (the chapter 7 page's live measurement: four nets, many seeds, one compiled call)
    equals the loop's own first step of a run with each net and seed, on any batch; new seeds and batches
    compile nothing."""
    from p2t_jax.chapters import deep_nets
    from p2t_jax.configuration import load_config

    config = load_config(f"{REPO}/configs/deep_nets.py:smoke")
    config.data.train_size, config.model.width, config.train.batch_size = 64, 8, 16
    built = _deep_tasks(config, depth=3, seed=2)
    measure = deep_nets.first_step_of_nets({net: task for net, (task, _, _) in built.items()})
    batch = built["plain"][0].train_batch(1)  # not the batch a run's first step takes: any batch may be given
    measured = jax.device_get(measure(np.array([7, 2, 9]), batch))
    assert set(measured) == set(deep_nets.NETS)
    for net in ("plain", "residual+BN"):  # without and with batch norm (each comparison compiles a train step)
        task, _, resolved = built[net]
        direct = deep_nets.first_step_metrics(task, resolved, batch)  # a run with seed 2: the second entry
        assert {k for k in direct if "/" in k} <= set(measured[net])
        for key in [k for k in direct if "/" in k] + ["loss", "accuracy"]:
            np.testing.assert_allclose(measured[net][key][1], direct[key], rtol=2e-5, atol=1e-6, err_msg=f"{net} {key}")
        assert len(deep_nets.layer_names(direct, "grad_norm")) == 4 and measured[net]["loss"].shape == (3,)
    assert not np.allclose(measured["plain"]["grad_norm/dense_01"][0], measured["plain"]["grad_norm/dense_01"][1])
    with CompileCounter() as compiled:
        jax.block_until_ready(measure(np.array([0, 1, 2]), built["plain"][0].train_batch(5)))
    assert compiled.count == 0


def test_the_chapter_7_nets_are_the_experiments():
    from p2t_jax.chapters import deep_nets

    assert deep_nets.NETS == load_experiment("07_batchnorm_residual.py").NETS


def test_batchnorm_page(runs, monkeypatch):
    import ml_collections

    from p2t_jax.chapters import deep_nets
    from p2t_jax.playground.views import batchnorm

    monkeypatch.setattr(batchnorm, "SEEDS", 2)  # the page measures seeds first, first + 1
    at = page("batchnorm", runs)
    live, trained = images(at)
    assert not errors(at) and at.select_slider(key="bn_depth").value == DEEP_DEPTH  # the runs' depth
    table = at.dataframe[0].value.set_index("net")
    assert list(table.index) == list(deep_nets.NETS)
    with CompileCounter() as compiled:  # other seeds and another batch: the same compiled call
        at.number_input(key="bn_seed").set_value(5)
        at.number_input(key="bn_batch").set_value(1)
        rerun(at)
    assert compiled.count == 0 and not errors(at) and images(at)[0] != live and images(at)[1] == trained
    # The page's numbers are the loop's first step of runs with seeds 5 and 6 on training batch 1.
    config = ml_collections.ConfigDict(  # the runs' config, which the page measures with
        batchnorm.chapter_runs(runs / "07_batchnorm_residual")[("plain", DEEP_DEPTH, 0)]["config"])
    batch = _deep_tasks(config, DEEP_DEPTH)["plain"][0].train_batch(1)  # the runs' seed orders the batches
    table = at.dataframe[0].value.set_index("net")
    ratio = []
    for net in ("plain", "residual"):
        direct = []
        for seed in (5, 6):
            task, _, resolved = _deep_tasks(config, DEEP_DEPTH, seed)[net]
            direct.append(deep_nets.first_step_metrics(task, resolved, batch))
        layer_1 = np.array([d["grad_norm/dense_01"] for d in direct])
        np.testing.assert_allclose(table.loc[net, "layer-1 gradient norm"], layer_1.mean(), rtol=1e-5)
        np.testing.assert_allclose(table.loc[net, "loss"], np.mean([d["loss"] for d in direct]), rtol=1e-5)
        ratio.append(layer_1)
    shown = {m.label: m.value for m in at.metric}["Layer-1 gradient, residual ÷ plain (no BN)"]
    assert shown == f"{np.mean(ratio[1] / ratio[0]):.3g}x"
    # The runs: the logged step picks the records drawn; the final losses by depth.
    steps = at.select_slider(key=f"bn_run_step_{DEEP_DEPTH}_0")
    assert steps.value == 4 and list(steps.options) == ["1", "2", "3", "4"]
    steps.set_value(1)
    rerun(at)
    assert images(at)[1] != trained and not errors(at)
    losses = at.dataframe[1].value
    assert list(losses["net"]) == list(deep_nets.NETS) and list(losses.columns) == ["net", f"depth {DEEP_DEPTH}"]
    result = json.loads((runs / "07_batchnorm_residual" / f"plain_depth{DEEP_DEPTH}_seed0" / "result.json").read_text())
    assert losses[f"depth {DEEP_DEPTH}"][0].startswith(f"{result['splits']['train']['loss']:.4f} (")
    at.number_input(key="bn_batch").set_value(10**6)
    rerun(at)
    assert errors(at) == ["Training batch must be in [0, 10000], got 1000000."]
    at.number_input(key="bn_batch").set_value(0)
    at.text_input(key="bn_folder").set_value(str(runs / "06_cnn"))  # runs, but not chapter 7's
    at.select_slider(key="bn_depth").set_value(2)  # the chapter's own config at depth 2: a small compile
    rerun(at)
    assert not errors(at) and len(images(at)) == 1
    assert [c.value for c in at.code] == [f"python experiments/07_batchnorm_residual.py --workdir {runs / '06_cnn'}"]


def test_transformer_page_streams_what_p2t_sample_prints(runs, capsys):
    from p2t_jax.cli import main

    at = page("transformer", runs)
    assert not errors(at) and at.code[0].value.startswith("ROMEO:")
    at.number_input(key="tf_length").set_value(40)
    at.number_input(key="tf_seed").set_value(3)
    rerun(at)
    text = at.code[0].value
    capsys.readouterr()
    assert main(["sample", "--workdir", str(runs / "smoke"), "--prompt", "ROMEO:", "--max-new-tokens", "40",
                 "--temperature", "0.8", "--top-k", "40", "--seed", "3"]) == 0
    assert text == capsys.readouterr().out.rstrip("\n") and len(text) == len("ROMEO:") + 40
    with CompileCounter() as compiled:  # another prompt (length), temperature, top-k, top-p and length
        at.text_area(key="tf_prompt").set_value("JULIET:\nO Romeo")
        at.number_input(key="tf_temperature").set_value(1.3)
        at.number_input(key="tf_top_k").set_value(0)
        at.number_input(key="tf_top_p").set_value(0.9)
        at.number_input(key="tf_length").set_value(25)
        rerun(at)
    assert compiled.count == 0 and not errors(at)
    assert at.code[0].value.startswith("JULIET:\nO Romeo") and at.code[0].value != text
    for key, value, message in (("tf_prompt", "ROMEO@", "The prompt holds '@', which is not in the model's"),
                                ("tf_prompt", "", "The prompt is empty"),
                                ("tf_length", 10**9, "Characters to generate must be in [1, 1000]"),
                                ("tf_top_p", 0.0, "Top-p must be in (0, 1]")):
        (at.text_area if key == "tf_prompt" else at.number_input)(key=key).set_value(value)
        rerun(at)
        assert len(errors(at)) == 1 and errors(at)[0].startswith(message), errors(at)
        (at.text_area if key == "tf_prompt" else at.number_input)(key=key).set_value(
            {"tf_prompt": "ROMEO:", "tf_length": 40, "tf_top_p": 1.0}[key])
        assert not errors(rerun(at))
    heads = images(at)
    assert len(heads) == 1  # the attention figure of the last layer
    with CompileCounter() as compiled:  # another text and layer: the one padded compilation
        at.text_area(key="tf_attention_text").set_value("JULIET:\nO")
        at.slider(key="tf_attention_layer").set_value(1)
        rerun(at)
    assert compiled.count == 0 and images(at) != heads and not errors(at)
    at.text_area(key="tf_attention_text").set_value("x" * 17)
    rerun(at)
    assert errors(at) == ["The attention text has 17 characters; the model reads at most 16."]
    at.text_input(key="tf_typed").set_value(str(runs / "04_optimisers"))  # a run, but not a language model
    rerun(at)
    assert any(c.value.startswith("p2t train --config configs/shakespeare.py:small --workdir") for c in at.code)


def test_transformer_page_without_runs_says_how_to_make_one(tmp_path):
    at = page("transformer", tmp_path)
    assert [c.value for c in at.code] == [f"p2t train --config configs/shakespeare.py:small --workdir {tmp_path}/small"]
    assert not errors(at)


def test_the_app_opens_on_the_overview(runs):
    at = AppTest.from_string(f"from p2t_jax.playground.app import main\nmain(['--runs', {str(runs)!r}])",
                             default_timeout=TIMEOUT_S).run()
    assert not at.exception and at.title[0].value == "p2t playground"
    assert str(runs / "smoke") in " ".join(m.value for m in at.markdown)


def test_run_budgets_come_from_reproduce_json_else_the_config(tmp_path):
    from p2t_jax.playground.budgets import run_budget

    def folder(name: str, files: dict) -> pathlib.Path:
        for path, data in files.items():
            (tmp_path / name / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / name / path).write_text(data if isinstance(data, str) else json.dumps(data))
        return tmp_path / name

    smoke = {"config": {"variant": "smoke"}}
    cases = {
        folder("quick", {"reproduce.json": {"budget": "quick", "seconds": 3.0}, "results.json": {"config": {}}}):
            ("quick", "p2t reproduce --budget quick"),
        folder("full", {"reproduce.json": {"budget": "full"}, "run/result.json": smoke}):  # reproduce.json decides
            ("full", "p2t reproduce --budget full"),
        folder("lm/10_transformer", {"reproduce.json": {"budget": "quick"}, "small/config.json": {"variant": "small"}})
        / "small": ("quick", "p2t reproduce --budget quick"),  # a run folder inside a reproduced chapter
        folder("script", {"results.json": {"config": {"variant": "embedded"}}}): ("full", "made directly"),
        folder("smoke", {"results.json": {"config": {"variant": "embedded"}}, "adam/result.json": smoke}):
            ("quick", "its config is the smoke variant"),
        folder("trained", {"config.json": {"variant": "smoke"}}): ("quick", "its config is the smoke variant"),
        folder("garbled", {"reproduce.json": "{not json", "results.json": smoke}): ("quick", "smoke variant"),
        folder("odd", {"reproduce.json": {"budget": "medium"}, "x/result.json": "\xff"}): ("full", "made directly"),
        tmp_path / "missing": ("full", "made directly"),
    }
    for path, (name, source) in cases.items():
        budget = run_budget(path)
        assert budget.name == name and source in budget.source, (path, budget)


def test_the_overview_says_which_runs_are_quick_and_which_full(runs, tmp_path):
    mine = tmp_path / "mine"
    for name in ("04_optimisers", "06_cnn", "07_batchnorm_residual"):
        shutil.copytree(runs / name, mine / name)
    (mine / "04_optimisers" / "reproduce.json").write_text(json.dumps({"budget": "full", "seconds": 1.0}))
    (mine / "07_batchnorm_residual" / "reproduce.json").write_text(json.dumps({"budget": "quick", "seconds": 1.0}))
    at = page("home", mine)
    lines = {m.value.split("**")[1]: m.value for m in at.markdown if m.value.startswith("- **")}
    assert lines["Optimiser runs"].endswith(f"1 run — `{mine / '04_optimisers'}`: full run (p2t reproduce --budget "
                                            f"full)")
    assert lines["CNN runs"].endswith(f"`{mine / '06_cnn'}`: quick run (its config is the smoke variant)")
    assert lines["Batch-norm and residual runs"].endswith(f"4 runs — `{mine / '07_batchnorm_residual'}`: quick run "
                                                          f"(p2t reproduce --budget quick)")
    assert lines["Attention results"] == (f"- **Attention results**: none — make them with `python experiments/"
                                          f"09_attention.py --workdir {mine / '09_attention'}`")
    assert len(lines) == 8 and any(f"`p2t playground --make-runs --runs {mine}`" in m.value for m in at.markdown)


def test_errors_become_one_message_on_the_page(capfd):
    script = """
import pathlib
from p2t_jax.configuration import ConfigError
from p2t_jax.playground import ui
def render(settings):
    raise {error}
ui.show_page(render, ui.Settings(runs_dir=pathlib.Path(".")))
"""
    for error, message in (("ConfigError('config key x must be positive.')", "config key x must be positive."),
                           ("ui.InputError('Seeds must be in [1, 9], got 0.')", "Seeds must be in [1, 9], got 0."),
                           ("RuntimeError('a defect')", "This page failed (RuntimeError: a defect); the traceback is "
                                                        "in the server's log.")):
        at = AppTest.from_string(script.format(error=error), default_timeout=TIMEOUT_S).run()
        assert not at.exception and errors(at) == [message]
    assert "RuntimeError: a defect" in capfd.readouterr().err  # the defect's traceback, for the server's log


# --- a real browser ----------------------------------------------------------------------

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = os.environ.get("P2T_PLAYGROUND_SCREENSHOTS")  # e.g. docs/figures; default: the test's tmp folder
REAL_RUNS = os.environ.get("P2T_PLAYGROUND_RUNS")  # e.g. runs: take the screenshots over real runs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Headless Chromium on one playground page at a time (selenium; no browser is downloaded)."""

    def __init__(self, base: str, profile: pathlib.Path):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1500,1300"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.base = base

    def idle(self, timeout: float = TIMEOUT_S) -> None:
        """Waits until the app has rendered and no script run is in progress."""
        from selenium.webdriver.common.by import By

        deadline, quiet_since = time.time() + timeout, None
        while time.time() < deadline:
            app = self.driver.find_elements(By.CSS_SELECTOR, '[data-testid="stApp"]')
            running = app and app[0].get_attribute("data-test-script-state") == "running"
            ready = app and self.driver.find_elements(By.CSS_SELECTOR, "h1")
            if ready and not running:
                quiet_since = quiet_since or time.time()
                if time.time() - quiet_since > 0.5:
                    return
            else:
                quiet_since = None
            time.sleep(0.2)
        raise AssertionError(f"the page did not finish within {timeout} s")

    def open(self, url: str) -> None:
        self.driver.get(f"{self.base}/{url}")
        self.idle()

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def labelled(self, label: str, tag: str = "input"):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, f'{tag}[aria-label="{label}"]')

    def errors(self) -> list[str]:
        """The text of every error message and traceback on the page (without the icon's name)."""
        return [e.text.splitlines()[-1] for e in self.find('[data-testid="stException"], '
                                                           '[data-testid="stAlertContentError"]')]

    def screenshot(self, path: pathlib.Path, width: int = 1500, most: int = 3200) -> None:
        """The whole page (up to ``most`` pixels tall) as a PNG."""
        height = self.driver.execute_script('return document.querySelector(\'[data-testid="stMain"]\').scrollHeight')
        self.driver.set_window_size(width, min(most, max(1300, int(height) + 150)))
        time.sleep(1.0)  # the layout settles; resizing does not rerun the page
        self.driver.save_screenshot(str(path))
        self.driver.set_window_size(width, 1300)

    def text(self) -> str:
        return self.find('[data-testid="stMain"]')[0].text


def _type(browser: Browser, label: str, value: str, tag: str = "input", submit=None) -> None:
    from selenium.webdriver.common.keys import Keys

    element = browser.labelled(label, tag)
    element.send_keys(Keys.CONTROL, "a")
    element.send_keys(Keys.DELETE)
    element.send_keys(value)
    element.send_keys(submit or Keys.ENTER)
    time.sleep(0.5)
    browser.idle()


def _press(browser: Browser, label: str, key) -> None:
    """Moves the slider called ``label`` with one key press."""
    browser.labelled(label, 'input[type="range"]').send_keys(key)
    time.sleep(0.5)
    browser.idle()


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="headless Chromium and its driver are not installed (Debian: apt-get install chromium "
                           "chromium-driver)")
@pytest.mark.e2e
def test_every_page_in_a_real_browser(request, tmp_path):
    """Starts `p2t playground`'s server on a free port, opens each of the 11 pages, moves one widget, saves a
    screenshot of each (``playground_<page>.png``)."""
    pytest.importorskip("selenium", reason="the browser test needs selenium (the app extra)")
    from selenium.webdriver.common.keys import Keys

    from p2t_jax.playground import launch, views

    runs_dir = REAL_RUNS  # the server runs in the repository's folder
    if not runs_dir:  # this module's runs and chapters 8, 9 and 11's (tests/test_playground_sequences.py)
        runs_dir = shutil.copytree(request.getfixturevalue("runs"), tmp_path / "runs")
        make_sequence_runs(runs_dir)
    shots = pathlib.Path(SCREENSHOTS) if SCREENSHOTS else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(launch.command("127.0.0.1", port, str(runs_dir)), stdout=log, stderr=subprocess.STDOUT,
                              env=env, cwd=REPO)
    browser = None
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + TIMEOUT_S
        while True:
            try:
                if urllib.request.urlopen(f"{base}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                assert server.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.5)
        browser = Browser(base, tmp_path / "chromium-profile")

        taken = []

        def check(name: str, must_show: str) -> None:
            assert not browser.errors(), (name, browser.errors())
            assert must_show in browser.text(), (name, must_show)
            browser.screenshot(shots / f"playground_{name}.png")
            taken.append(name)

        browser.open("")
        check("overview", "Runs in")
        browser.find('[data-testid="stPageLink-NavLink"]')[0].click()  # the first link: the perceptron page
        browser.idle()
        _press(browser, "Epoch", Keys.ARROW_RIGHT)
        check("perceptron", "Errors after epoch 9")
        browser.open("mlp")
        _type(browser, "Seeds", "48")
        check("mlp", "/ 48")
        browser.open("optimisers")
        _press(browser, "Race: steps shown", Keys.ARROW_LEFT)
        check("optimisers", "499")
        browser.open("regularisation")
        _press(browser, "Dropout rate", Keys.ARROW_RIGHT)
        if browser.errors():  # dropout alone was not trained (the tiny runs): add the decay too
            _press(browser, "Weight decay (decoupled, AdamW)", Keys.ARROW_RIGHT)
        check("regularisation", "vs baseline")
        browser.open("cnn")
        _type(browser, "Test digit (index)", "1000000")  # out of range: our one message, nothing else
        assert browser.errors() == ["Test digit (index) must be in [0, 999], got 1000000."], browser.errors()
        _type(browser, "Test digit (index)", "3")
        check("cnn", "Predicted digit")
        browser.open("batchnorm")
        before = browser.text()
        _type(browser, "First seed", "3")  # other seeds: other numbers, from the same compiled call
        assert browser.text() != before and "Seeds 3..10 on training batch 0" in browser.text()
        check("batchnorm", "Layer-1 gradient")
        browser.open("rnn")
        _type(browser, "Your sentence", "erin very old quite young saw frank")
        check("rnn", "Fillers in your sentence")
        browser.open("attention")
        _type(browser, "Source sentence (verb-final)", "ben die katze sieht")
        check("attention", "Translation")
        browser.open("pointer")
        _type(browser, "Seed", "3")
        check("pointer", "Exactly right")
        browser.open("transformer")
        _type(browser, "Prompt", "JULIET:", tag="textarea", submit=Keys.CONTROL + Keys.ENTER)
        check("transformer", "JULIET:")
        # A typo above other settings: they stay drawn and keep their values while it is fixed.
        kept = {"Temperature (0: greedy)": "1.3", "Top-k (0: all)": "7", "Seed": "5"}
        for label, value in kept.items():
            _type(browser, label, value)
        _type(browser, "Characters to generate", "5000")
        assert browser.errors() == ["Characters to generate must be in [1, 1000], got 5000."], browser.errors()
        assert {label: browser.labelled(label).get_attribute("value") for label in kept} == kept
        _type(browser, "Characters to generate", "300")
        assert not browser.errors()
        assert {label: browser.labelled(label).get_attribute("value") for label in kept} == kept
        # Bad input: a message on the page, no traceback, and the server keeps serving.
        _type(browser, "Prompt", "JULIET@", tag="textarea", submit=Keys.CONTROL + Keys.ENTER)
        assert browser.errors() == ["The prompt holds '@', which is not in the model's 65-character vocabulary."]
        assert not browser.find('[data-testid="stException"]')
        browser.open("perceptron")
        assert not browser.errors() and "Seeds at zero errors" in browser.text()
        assert len(taken) == len(set(taken)) == len(views.PAGES) == 11  # every page, once
    finally:
        if browser is not None:
            browser.driver.quit()
        server.terminate()
        server.wait(timeout=30)
        log.close()


def _truncate_checkpoint(run_dir: pathlib.Path, step: int) -> None:
    """Cuts every array data file of the save at ``step`` to half its length (a copy cut short)."""
    files = [p for p in (run_dir / "checkpoints" / str(step) / "state").rglob("d/*") if p.is_file()]
    assert files
    for path in files:
        with path.open("r+b") as f:
            f.truncate(path.stat().st_size // 2)


def test_transformer_page_keeps_values_across_a_bad_value(smoke_run, tmp_path):
    """Values set below a number typed out of range stay drawn and keep their values; the
    caption speaks of compiling on the run's first request only; a prompt of spaces is refused."""
    shutil.copytree(smoke_run, tmp_path / "smoke")
    at = page("transformer", tmp_path)
    timing = lambda: [c.value for c in at.caption if " characters in " in c.value]  # noqa: E731
    assert not errors(at) and "includes compiling" in timing()[0]
    settings = {"tf_temperature": 1.3, "tf_top_k": 7, "tf_seed": 5, "tf_length": 30}
    for key, value in settings.items():
        at.number_input(key=key).set_value(value)
    rerun(at)
    text = at.code[0].value
    assert not errors(at) and "compiling" not in timing()[0] and len(text) == len("ROMEO:") + 30
    at.number_input(key="tf_length").set_value(10**9)  # above temperature, top-k and seed
    rerun(at)
    assert errors(at) == ["Characters to generate must be in [1, 1000], got 1000000000."]
    assert {k: at.number_input(key=k).value for k in settings} == {**settings, "tf_length": 10**9}
    assert at.text_area(key="tf_attention_text").value  # the section below is still drawn
    at.number_input(key="tf_length").set_value(30)
    rerun(at)
    assert not errors(at) and {k: at.number_input(key=k).value for k in settings} == settings
    assert at.code[0].value == text  # the same settings: the same text
    at.number_input(key="tf_seed").set_value(2**31)
    rerun(at)
    assert errors(at) == ["Seed must be in [0, 2147483647], got 2147483648."]
    at.number_input(key="tf_seed").set_value(5)
    at.text_area(key="tf_prompt").set_value("   ")
    rerun(at)
    assert errors(at) == ["The prompt is empty or only spaces; type at least one other character."]


def test_transformer_page_says_when_the_newest_checkpoint_cannot_be_read(tiny_corpus, tmp_path):
    from p2t_jax.cli import main
    from p2t_jax.training.checkpoint import Checkpoints

    run_dir = tmp_path / "cut"  # two saves: steps 2 and 4
    assert main(["train", "--config", f"{REPO}/configs/shakespeare.py:smoke", "--workdir", str(run_dir), "--no-progress",
                 "--config.train.num_steps=4", "--config.train.checkpoint_every=2", "--config.train.eval_every=2"]) == 0
    reader = Checkpoints(run_dir, write=False)
    steps = reader.steps()
    reader.close()
    assert len(steps) >= 2, steps
    _truncate_checkpoint(run_dir, steps[-1])
    at = page("transformer", tmp_path)
    warnings = [w.value for w in at.warning]
    assert warnings == [f"The newest checkpoint of `{run_dir}` (step {steps[-1]:,}) cannot be read; this page shows "
                        f"step {steps[-2]:,}, the newest that can (the reason is in the server's log)."]
    assert not errors(at) and at.code[0].value.startswith("ROMEO:")
    for step in steps[:-1]:
        _truncate_checkpoint(run_dir, step)
    os.utime(run_dir / "checkpoints")  # the page reloads a run whose checkpoints changed
    at = page("transformer", tmp_path)
    (message,) = errors(at)
    assert message.startswith(f"none of the {len(steps)} checkpoints in {run_dir / 'checkpoints'} can be read")
    assert "TensorStore" not in message and "pybind11" not in message and len(message) < 300, message


def test_regularisation_curves_fit_short_runs_and_state_the_given_gap():
    from p2t_jax.viz import chapter04_05 as figures

    epoch = np.arange(1.0, 4.0)
    short = {"epoch": epoch, "train_accuracy": np.array([0.31, 0.52, 0.66]), "test_accuracy": np.array([0.3, 0.5, 0.6]),
             "gap": 8.7}
    full = {"epoch": epoch, "train_accuracy": np.array([0.95, 0.99, 1.0]), "test_accuracy": np.array([0.9, 0.95, 0.96])}
    fig = figures.train_test_curves({"short": short, "full": full}, ncols=2)
    (bottom, top), = {ax.get_ylim() for ax in fig.axes if ax.get_visible()}
    assert 0.0 <= bottom < 30.0 and top == 100.5  # every point of the short run is inside the axis
    assert [ax.get_title() for ax in fig.axes[:2]] == ["short\ngap 8.70 points", "full\nlast gap 4.0 points"]
    fig = figures.train_test_curves({"full": full}, ncols=1)
    assert fig.axes[0].get_ylim() == (85.0, 100.5)  # full runs: the chapter's axis
    plt.close("all")
