"""What the playground's page tests share (tests/test_playground.py, tests/test_playground_sequences.py):
a page rendered under Streamlit's AppTest as the app renders it, what is on it, and chapters 8, 9 and 11's
tiny runs."""

import pathlib

from conftest import REPO, load_experiment
from streamlit.testing.v1 import AppTest

TIMEOUT_S = 180  # per script run: the first run of a page compiles its functions (AppTest's default is 3 s)

PAGE_SCRIPT = """
import pathlib
from p2t_jax.playground import ui
from p2t_jax.playground.views import {name} as page
ui.show_page(page.render, ui.Settings(runs_dir=pathlib.Path({runs!r})))
"""

CHAPTER_RUNS = (
    ("08_rnn.py", "rnn_memory.py:smoke", ["--config.train.num_steps=20", "--config.experiment.seeds=1",
                                          "--config.data.test_fillers=(0,6)", "--config.experiment.claim_fillers=5",
                                          "--config.experiment.eval_size=16", "--config.experiment.gradient_size=8"]),
    ("09_attention.py", "reorder.py:smoke", ["--config.experiment.models=('with attention',)",
                                             "--config.train.num_steps=20", "--config.experiment.eval_size=4",
                                             "--config.experiment.dims=(4,8)", "--config.experiment.num_queries=4",
                                             "--config.experiment.num_keys=4"]),
    ("11_pointer.py", "pointer.py:smoke", ["--config.experiment.problems=('hull',)", "--config.decode.beam_width=1",
                                           "--config.experiment.test_size=4",
                                           "--config.experiment.hull.num_steps=15", "--config.experiment.num_drawn=0",
                                           "--config.experiment.hull.test_lengths=(5,)"]),
)


def make_sequence_runs(root: pathlib.Path) -> pathlib.Path:
    """Chapters 8, 9 and 11's runs in ``root`` (``08_rnn``, ``09_attention``, ``11_pointer``): the experiments'
    own command lines, smoke configs cut further (a few steps, one seed, hulls only). Too short to learn, so
    claims may fail (exit 1); the folders are written the same."""
    for script, config, overrides in CHAPTER_RUNS:
        status = load_experiment(script).cli(["--workdir", str(root / script.removesuffix(".py")), "--config",
                                              f"{REPO}/configs/{config}"] + overrides)
        assert status in (0, 1), script
    return root


def page(name: str, runs: pathlib.Path) -> AppTest:
    """The page ``name`` alone, rendered as the app renders it, after its first run."""
    at = AppTest.from_string(PAGE_SCRIPT.format(name=name, runs=str(runs)), default_timeout=TIMEOUT_S).run()
    assert not at.exception, at.exception
    return at


def images(at: AppTest) -> list[str]:
    """The figures on the page, as their content-hashed media addresses."""
    return [e.proto.imgs[0].url for e in at.get("image")]


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at
