"""Test set-up: eight forced CPU devices (for sharding tests), set before JAX starts.

The suite compiles far more than it computes (tiny models, a few steps each), so XLA's
CPU backend is asked to compile quickly (``QUICK_COMPILE``):

* LLVM's optimisations off (``--xla_backend_optimization_level=0``): the same programs in
  about 40% less CPU time (tests/test_sampling.py: 106 s of CPU at the default level, 61 s at 0);
* fusions through XLA's older elemental emitter instead of its MLIR fusion emitters
  (``--xla_cpu_use_fusion_emitters=false``): a further 40% less (test_transformer,
  test_optimizers and test_sampling: 91 s of CPU with them, 54 s without; the whole of
  ``make test`` 369 s -> 288 s of wall time on the idle 2-core EPYC). Training runs slower so
  compiled (the nanoGPT CPU step 36.8 -> 44.5 ms, ``bench/step.py --variant``), which is why
  only the tests compile this way.

Results may differ from the default's in the last bits (no fused multiply-adds, other
loop code), so a test compares numbers computed under one setting: in this process,
or in subprocesses that all set their own ``XLA_FLAGS`` (tests/test_faults.py), or with a
tolerance (tests/test_multihost.py's processes compile as this one does).
"""

import os

QUICK_COMPILE = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {QUICK_COMPILE}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TQDM_DISABLE", "1")
# This process schedules XLA-CPU's operations as the commands do (``p2t``, the experiments, and the worker processes
# of chapters 5-7 add the memory-minimising scheduler's flag to XLA_FLAGS when they start): with the elemental
# emitter the schedule can change the last bits of a result, and a test compares this process's numbers with theirs.
from p2t_jax import host_memory  # noqa: E402  (no JAX import)

host_memory.schedule_for_memory()
if "JAX_COMPILATION_CACHE_DIR" not in os.environ and os.environ.get("P2T_TEST_COMPILE_CACHE") != "0":
    # One persistent compilation cache for the whole run, shared by both xdist workers (they start from this
    # process's environment) and by every process a test starts (``p2t`` commands, the playground's server): a
    # program compiled once (the smoke Transformer's steps, a chapter's model) is loaded, not compiled again, by the
    # next test or process that builds it. A fresh folder each run, removed at its end, so nothing carries over
    # from one run to the next. ``P2T_TEST_COMPILE_CACHE=0`` turns it off (to measure what it saves).
    import atexit
    import shutil
    import tempfile

    from p2t_jax import compile_cache

    _CACHE_DIR = tempfile.mkdtemp(prefix="p2t-test-xla-cache-")
    compile_cache.share(_CACHE_DIR)  # every program, however quick to compile
    atexit.register(shutil.rmtree, _CACHE_DIR, ignore_errors=True)

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent


# The files that take longest, longest first (by `--durations=0` summed per file). `make test` hands whole files to its two workers
# (`--dist loadfile`) in collection order (`--no-loadscope-reorder`; pytest-xdist's own order is by
# number of tests, which would leave a long file of one test, such as the extending guide, to the
# end while the other worker idles). Files not named here follow, in their usual order.
SLOWEST_FILES = ("test_faults.py", "test_playground.py", "test_extending.py", "test_sampling.py", "test_accumulation.py",
                 "test_sweep.py", "test_playground_sequences.py", "test_training.py", "test_export.py",
                 "test_parallel.py", "test_backprop.py", "test_transformer.py", "test_batchnorm.py", "test_own_lm.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


@pytest.fixture
def repo_root() -> pathlib.Path:
    return REPO


def load_experiment(name: str):
    """The module of ``experiments/<name>`` (scripts are not a package, so load them by path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name.replace(".py", "").lstrip("0123456789_"),
                                                  REPO / "experiments" / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_bench(name: str):
    """The module of ``bench/<name>.py``, loaded by path with ``bench/`` on sys.path while it loads (the scripts
    import each other by name, as when run)."""
    import importlib.util
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "bench"))


def run_experiment_smoke(name: str, config: str, workdir: pathlib.Path, capsys, *,
                         claims: bool | None = True) -> dict:
    """Runs ``experiments/<name>`` with ``--config config`` into ``workdir`` and returns its results.json.

    ``claims=True`` (the default): asserts exit status 0 and that every claim held.
    ``claims=None``: claims were checked, but a smoke budget need not show them (exit 0 or 1).
    ``claims=False``: no claim was checked, and the experiment said so with exit status 1.
    """
    import json

    status = load_experiment(name).cli(["--workdir", str(workdir), "--config", config])
    err = capsys.readouterr().err
    results = json.loads((workdir / "results.json").read_text())
    if claims:
        assert status == 0, err
        assert results["claims"] and results["all_claims_passed"]
    elif claims is None:
        assert status == (0 if results["all_claims_passed"] else 1) and results["claims"], err
    else:
        assert status == 1 and not results["claims"] and "no claim was checked" in err, err
    return results


PASSAGE = """ROMEO:
But soft, what light through yonder window breaks?
It is the east, and Juliet is the sun.

JULIET:
O Romeo, Romeo! wherefore art thou Romeo?
Deny thy father and refuse thy name.

ROMEO:
Shall I hear more, or shall I speak at this?

"""


def _patch_corpus(monkeypatch) -> dict:
    from p2t_jax.data import shakespeare

    texts = {"train": PASSAGE * 40, "validation": PASSAGE * 4}
    monkeypatch.setattr(shakespeare, "load_texts", lambda source="auto", data_dir=None: (dict(texts), "test:passage"))
    return texts


@pytest.fixture
def tiny_corpus(monkeypatch):
    """Replaces the Shakespeare corpus with a small repeated passage (no download)."""
    return _patch_corpus(monkeypatch)


SMOKE_RUN_STEPS = 20


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One run folder of `p2t train` (the ``smoke`` Shakespeare config on the test passage,
    ``SMOKE_RUN_STEPS`` steps), trained once per test process and shared by the modules that
    read a trained Transformer run. Read it only: a test that changes a run copies this one
    first (``shutil.copytree``)."""
    from p2t_jax.cli import main

    workdir = tmp_path_factory.mktemp("smoke_run") / "smoke"
    with pytest.MonkeyPatch.context() as mp:
        _patch_corpus(mp)
        assert main(["train", "--config", str(REPO / "configs" / "shakespeare.py") + ":smoke", "--workdir", str(workdir),
                     "--no-progress", f"--config.train.num_steps={SMOKE_RUN_STEPS}"]) == 0
    before = _listing(workdir)
    yield workdir
    assert _listing(workdir) == before, "a test changed the shared smoke run; copy it first"


def _listing(folder: pathlib.Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
                  if p.is_file())


@pytest.fixture
def smoke_config():
    """The ``smoke`` Shakespeare config, unlocked copy."""
    from p2t_jax.configuration import load_config

    return load_config(str(REPO / "configs" / "shakespeare.py") + ":smoke")


class CompileCounter:
    """Programs built while in a ``with`` block: ``with CompileCounter() as c: ...; c.count``.

    Counts XLA compilations and loads from the persistent compilation cache (the suite shares
    one, see above): a program another test compiled first is loaded, not compiled, and still
    counts as built here."""

    COMPILED = "/jax/core/compile/backend_compile_duration"
    LOADED = "/jax/compilation_cache/cache_hits"

    def __init__(self):
        self.count = 0

    def _compiled(self, event, duration, **kwargs):
        if event == self.COMPILED:
            self.count += 1

    def _loaded(self, event, **kwargs):
        if event == self.LOADED:
            self.count += 1

    def __enter__(self):
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(self._compiled)
        jax.monitoring.register_event_listener(self._loaded)
        return self

    def __exit__(self, *exc):
        import jax.monitoring

        jax.monitoring.unregister_event_duration_listener(self._compiled)
        jax.monitoring.unregister_event_listener(self._loaded)
