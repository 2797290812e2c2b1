"""`p2t reproduce`: the report's structure, resuming, bad arguments, signals, and the quick budget end to end.

The fast tests run the real runner and report on two stand-in chapters: small Python scripts
with an experiment's command line and output (PASS/FAIL lines, results.json, a figure) and
no JAX, so that they cost a fraction of a CPU-second each. The slow ones run the real chapters.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

from p2t_jax.reproduce import chapters as registry
from p2t_jax.reproduce import report, runner

FAKE_SCRIPT = '''
import json, os, pathlib, signal, sys, time
from p2t_jax.parent_watch import stop_with_parent
stop_with_parent()  # as the experiment harness does first
args = sys.argv[1:]
workdir = pathlib.Path(args[args.index("--workdir") + 1])
config = dict(a[len("--config."):].split("=", 1) for a in args if a.startswith("--config."))
workdir.mkdir(parents=True, exist_ok=True)
with open(workdir / "attempts.txt", "a") as f:
    f.write(f"{os.getpid()}\\n")
(workdir / "env.json").write_text(json.dumps({k: v for k, v in os.environ.items() if k.startswith("JAX_")}))
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(143))
signal.signal(signal.SIGINT, lambda *a: stop.append(130))
print("Chapter fake", flush=True)
print("  PASS  the first claim  [measured: 1.5]", flush=True)
hold = config.get("hold")
while hold and os.path.exists(hold):
    if stop:
        print("interrupted; run the same command to resume.", file=sys.stderr, flush=True)
        sys.exit(stop[0])
    time.sleep(0.02)
passed = config.get("fail") != "1"
print(f"  {'PASS' if passed else 'FAIL'}  the second claim  [measured: 2]", flush=True)
(workdir / "curve.png").write_bytes(b"\\x89PNG\\r\\n\\x1a\\nfake")
(workdir / "cores.json").write_text(json.dumps(sorted(os.sched_getaffinity(0))))
results = {"claims": {"first": {"passed": True, "statement": "the first claim", "measured": 1.5},
                      "second": {"passed": passed, "statement": "the second claim", "measured": {"x": 2.0}}},
           "observations": {"falls": {"statement": "it falls toward chance", "reproduced": False, "at": 0.9}},
           "figures": ["curve.png"], "device": "cpu"}
(workdir / "results.json").write_text(json.dumps(results))
sys.exit(0 if passed else 1)
'''


@dataclasses.dataclass(frozen=True)
class FakeChapter(registry.Chapter):
    path: str = ""

    @property
    def script(self) -> str:
        return self.path


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """Chapters 1 and 2 replaced by the stand-in script (its own copy each); returns the scripts."""
    scripts = {}
    fake_chapters = {}
    for number, name in ((1, "01_first"), (2, "02_second")):
        script = tmp_path / f"{name}.py"
        script.write_text(FAKE_SCRIPT)
        scripts[number] = script
        fake_chapters[number] = FakeChapter(number, name, f"Fake {number}", str(script), ("first", "second"),
                                            path=str(script))
    monkeypatch.setattr(registry, "CHAPTERS", fake_chapters)
    monkeypatch.setattr(registry, "QUICK", {n: registry.Plan(str(s)) for n, s in scripts.items()})
    return scripts


def reproduce(*argv: str) -> int:
    """`p2t reproduce ARGV` in this process, as cli.main parses it."""
    from p2t_jax.cli import main

    return main(["reproduce", "--no-progress", *argv])


def test_report_structure_and_exit_status(fakes, tmp_path, capsys):
    out = tmp_path / "out"
    assert reproduce("--budget", "quick", "--out", str(out), "--set", "2:fail=1") == 0  # quick: a FAIL is no error
    err = capsys.readouterr().err
    assert "01_first: PASS  the first claim" in err and "02_second: FAIL  the second claim" in err
    md = (out / "REPORT.md").read_text()
    assert md.startswith("# From perceptrons to transformers: the arc reproduced (quick budget)")
    for fact in ("- budget: **quick**", "- claims: **3 of 4 PASS** over 2 chapters", "- wall time: **",
                 "- machine: ", "cores", "GiB memory", "accelerator:", "JAX platform: cpu", "- versions: python",
                 "jax ", "- code revision: `", "- command: `p2t reproduce --budget quick --chapters all --out"):
        assert fact in md, fact
    assert "| [1. Fake 1](#1-fake-1) | passed | 2 / 2 PASS |" in md
    assert "| [2. Fake 2](#2-fake-2) | claims failed | 1 / 2 PASS |" in md
    assert md.count("| **PASS** | the first claim <sub>`first`</sub> | 1.5 |") == 2
    assert "| **FAIL** | the second claim <sub>`second`</sub> | {\"x\": 2.0} |" in md
    assert "| **OBSERVATION** | it falls toward chance (reproduced here: no) <sub>`falls`</sub> | {\"at\": 0.9} |" in md
    assert "![curve.png](01_first/curve.png)" in md and "![curve.png](02_second/curve.png)" in md
    page = (out / "report.html").read_text()
    assert page.count("src='data:image/png;base64,") == 2 and "class='quick'" in page
    assert page.count("<td class='PASS'>PASS</td>") == 3 and page.count("<td class='OBSERVATION'>") == 2
    record = json.loads((out / "02_second" / "reproduce.json").read_text())
    assert record["budget"] == "quick" and record["status"] == "claims failed" and record["exit code"] == 1
    assert record["config overrides"] == ["fail=1"] and record["seconds"] > 0 and len(record["code hash"]) == 16
    log = (out / "02_second" / "log.txt").read_text()
    assert "  FAIL  the second claim" in log and "===== exit status 1" in log
    # The same failed claim is an error under --strict (the chapters are reused: nothing runs again).
    assert reproduce("--budget", "quick", "--out", str(out), "--set", "2:fail=1", "--strict") == 1
    assert (out / "02_second" / "attempts.txt").read_text().count("\n") == 1
    # --publish: REPORT.md where it is committed, its figures under docs/report/.
    root = tmp_path / "repo"
    root.mkdir()
    assert reproduce("--budget", "quick", "--out", str(out), "--set", "2:fail=1", "--publish", str(root)) == 0
    published = (root / "REPORT.md").read_text()
    assert "![curve.png](docs/report/01_first/curve.png)" in published and "02_second/curve.png)" in published
    assert (root / "docs" / "report" / "02_second" / "curve.png").read_bytes().startswith(b"\x89PNG")
    assert f"folder `{out}/01_first/`" in published


def test_publish_writes_the_readme_blocks_from_a_full_run(fakes, tmp_path, capsys):
    root, out = tmp_path / "repo", tmp_path / "out"
    root.mkdir()
    start, end = "<!-- reproduce:01_first:start -->", "<!-- reproduce:01_first:end -->"
    before = f"# Title\n\n### 1. First\n\nProse 0.5 stays.\n\n{start}\nold numbers\n{end}\n\nAfter.\n"
    (root / "README.md").write_text(before)
    # A quick run never writes the README's numbers.
    assert reproduce("--budget", "quick", "--out", str(tmp_path / "q"), "--publish", str(root)) == 0
    assert (root / "README.md").read_text() == before
    assert "left as it was: its chapter numbers come from the full budget only" in capsys.readouterr().err
    assert reproduce("--budget", "full", "--out", str(out), "--publish", str(root)) == 0
    assert "updated the measured lines of 1 chapter in" in capsys.readouterr().err
    text = (root / "README.md").read_text()
    head, block = text.split(start)
    block, tail = block.split(end)
    assert head == "# Title\n\n### 1. First\n\nProse 0.5 stays.\n\n" and tail == "\n\nAfter.\n"
    assert "old numbers" not in block and "`p2t reproduce --chapters 1` (the full budget: `python " in block
    assert "[REPORT.md](REPORT.md#1-fake-1)" in block and " cores" in block
    assert "- **PASS** the first claim: 1.5\n" in block and "- **PASS** the second claim: x 2\n" in block
    assert "- **OBSERVATION** it falls toward chance (reproduced here: no): at 0.9\n" in block
    # A start marker without its end: refused before anything runs (exit 2), the README untouched.
    broken = text.replace(end, "")
    (root / "README.md").write_text(broken)
    assert reproduce("--budget", "full", "--out", str(tmp_path / "other"), "--publish", str(root)) == 2
    assert "without '<!-- reproduce:01_first:end -->' after it" in capsys.readouterr().err
    assert not (tmp_path / "other").exists() and (root / "README.md").read_text() == broken


def test_readme_has_a_measured_block_for_every_chapter():
    from p2t_jax.reproduce import readme

    text = (REPO / "README.md").read_text()
    assert readme.names_with_markers(text) == [c.name for c in registry.CHAPTERS.values()]
    readme.check(REPO / "README.md")


def test_readable_values():
    from p2t_jax.reproduce.readme import readable

    assert readable({"small": 1.7402005, "large": 1.41269}) == "small 1.74, large 1.413"
    assert readable([0.5, {"a": True}]) == "0.5 / (a yes)" and readable(None) == "—" and readable(3) == "3"


def test_second_run_skips_and_changes_rerun(fakes, tmp_path, capsys):
    out = tmp_path / "out"
    assert reproduce("--budget", "quick", "--out", str(out), "--jobs", "1") == 0
    capsys.readouterr()
    assert reproduce("--budget", "quick", "--out", str(out)) == 0
    err = capsys.readouterr().err
    assert err.count("done before with the same code and settings (passed); reused") == 2 and "started" not in err
    assert "| [1. Fake 1](#1-fake-1) | passed (reused) | 2 / 2 PASS |" in (out / "REPORT.md").read_text()
    # Other overrides, or other code, start that chapter afresh; the other one is still reused.
    assert reproduce("--budget", "quick", "--out", str(out), "--set", "1:extra=1") == 0
    err = capsys.readouterr().err
    assert "01_first: config overrides changed since its last run; starting it afresh" in err
    assert "02_second: done before" in err
    fakes[2].write_text(FAKE_SCRIPT + "\n# changed\n")
    assert reproduce("--budget", "quick", "--out", str(out), "--set", "1:extra=1") == 0
    err = capsys.readouterr().err
    assert "02_second: code hash changed since its last run; starting it afresh" in err and "01_first: done" in err
    for name in ("01_first", "02_second"):  # cleared before each fresh start: one attempt each in the folder
        assert (out / name / "attempts.txt").read_text().count("\n") == 1
    # The full budget is another setting: both run again, and a failed claim is an error there.
    assert reproduce("--budget", "full", "--out", str(out), "--set", "2:fail=1") == 1


def test_chapters_share_one_compile_cache_unless_turned_off(fakes, tmp_path, capsys, monkeypatch):
    from p2t_jax import compile_cache

    def seen(out):
        return [json.loads((out / name / "env.json").read_text()) for name in ("01_first", "02_second")]

    monkeypatch.delenv(compile_cache.DIR_VARIABLE, raising=False)
    out = tmp_path / "out"
    assert reproduce("--budget", "quick", "--out", str(out)) == 0
    wanted = {"JAX_COMPILATION_CACHE_DIR": str((out / ".xla-cache").resolve()), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    assert all(env.items() >= wanted.items() for env in seen(out))
    assert compile_cache.DIR_VARIABLE not in os.environ  # the children's environment, not this process's
    out = tmp_path / "off"
    assert reproduce("--budget", "quick", "--out", str(out), "--no-compile-cache") == 0
    assert all(compile_cache.DIR_VARIABLE not in env for env in seen(out))
    assert "--no-compile-cache" in (out / "REPORT.md").read_text()  # the command, as run
    monkeypatch.setenv(compile_cache.DIR_VARIABLE, str(tmp_path / "mine"))  # a cache the caller names stands
    out = tmp_path / "named"
    assert reproduce("--budget", "quick", "--out", str(out)) == 0
    assert all(env[compile_cache.DIR_VARIABLE] == str(tmp_path / "mine") for env in seen(out))


def test_lanes_split_the_cores_evenly():
    assert runner.lanes(2, [0, 1]) == [(0,), (1,)]
    assert runner.lanes(2, [0, 1, 2, 3, 4]) == [(0, 1), (2, 3, 4)]
    assert runner.lanes(3, [4, 5, 6, 7]) == [(4,), (5,), (6, 7)]
    assert runner.lanes(1, [0, 1]) is None and runner.lanes(3, [0, 1]) is None  # one job, or more jobs than cores


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_chapters_side_by_side_keep_to_their_own_cores_unless_told_not_to(fakes, tmp_path, capsys):
    cores = sorted(os.sched_getaffinity(0))

    def seen(out):
        return [json.loads((out / name / "cores.json").read_text()) for name in ("01_first", "02_second")]

    out = tmp_path / "pinned"
    assert reproduce("--budget", "quick", "--out", str(out), "--jobs", "2") == 0
    first, second = seen(out)
    assert sorted([tuple(first), tuple(second)]) == runner.lanes(2)  # both started at once: one lane each
    assert not set(first) & set(second) and sorted(first + second) == cores
    assert json.loads((out / "01_first" / "reproduce.json").read_text())["cores"] == first
    assert "2 chapters at a time, each kept to its own core" in (out / "REPORT.md").read_text()
    out = tmp_path / "shared"
    assert reproduce("--budget", "quick", "--out", str(out), "--jobs", "2", "--no-pin") == 0
    assert seen(out) == [cores, cores]
    md = (out / "REPORT.md").read_text()
    assert "--no-pin" in md and "kept to its own" not in md


def test_folders_it_did_not_write_are_left_alone(fakes, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "01_first").mkdir(parents=True)
    (out / "01_first" / "mine.txt").write_text("a reader's own run")
    assert reproduce("--budget", "quick", "--out", str(out)) == 2
    assert "holds files not written by `p2t reproduce`" in capsys.readouterr().err
    assert sorted(p.name for p in out.rglob("*")) == ["01_first", "mine.txt"]


@pytest.mark.parametrize("argv, message", [
    (["--chapters", "12"], "--chapters entry '12' names no chapter; chapters are numbers 1 to 11"),
    (["--chapters", "1,x"], "--chapters entry 'x' is not a chapter number"),
    (["--chapters", "3-1"], "--chapters entry '3-1' names no chapter"),
    (["--budget", "slow"], "argument --budget: invalid choice: 'slow'"),
    (["--jobs", "0"], "--jobs must be at least 1, got 0."),
    (["--set", "1:novalue"], "--set '1:novalue' is not N:KEY=VALUE"),
    (["--chapters", "1", "--set", "2:a=1"], "--set names chapter 2, which --chapters does not run."),
    (["--config.seed=1"], "`p2t reproduce` takes no --config overrides"),
])
def test_bad_arguments_exit_2_and_write_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert reproduce("--out", str(out), *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists()


def test_out_that_is_a_file_exits_2(tmp_path, capsys):
    (tmp_path / "out").write_text("x")
    assert reproduce("--out", str(tmp_path / "out"), "--chapters", "1") == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "out").read_text() == "x"


DRIVER = """
import dataclasses, sys
from p2t_jax.reproduce import chapters as registry, command


@dataclasses.dataclass(frozen=True)
class FakeChapter(registry.Chapter):
    path: str = ""

    @property
    def script(self):
        return self.path


registry.CHAPTERS = {{1: FakeChapter(1, "01_first", "Fake 1", {script!r}, ("first", "second"), path={script!r})}}
registry.QUICK = {{1: registry.Plan({script!r})}}
sys.exit(command.main(sys.argv[1:]))
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def held_chapter_command(tmp_path):
    """``p2t reproduce`` (through DRIVER) over one stand-in chapter that waits while ``hold`` exists: returns the
    command, its environment, the hold file and the out folder."""
    script, hold, out = tmp_path / "01_first.py", tmp_path / "hold", tmp_path / "out"
    script.write_text(FAKE_SCRIPT)
    hold.write_text("")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(script=str(script)))
    argv = [sys.executable, str(driver), "--budget", "quick", "--out", str(out), "--no-progress",
            "--set", f"1:hold={hold}"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return argv, env, hold, out


def wait_for_chapter(proc, out):
    """Waits (60 s at most, ``proc`` still running) until the chapter has started; returns its attempts file and
    its process id."""
    attempts = out / "01_first" / "attempts.txt"
    deadline = time.monotonic() + 60
    while not (attempts.exists() and attempts.read_text().endswith("\n")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return attempts, int(attempts.read_text().split()[0])


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_the_chapter_and_the_next_run_resumes(signum, tmp_path, capsys):
    """A real signal to the reproduce process while a chapter runs: forwarded, the chapter saves and exits,
    no process is left, the record says interrupted, a second reproduce on the same folder was refused
    meanwhile, and the next run resumes the chapter in the same folder."""
    argv, env, hold, out = held_chapter_command(tmp_path)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    attempts, child = wait_for_chapter(proc, out)
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2 and "is in use by another run" in second.stderr
    os.kill(proc.pid, signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert not alive(child)
    assert f"stopped by signal {signum}; run the same command again to resume." in err
    record = json.loads((out / "01_first" / "reproduce.json").read_text())
    assert record["status"] == "interrupted" and record["exit code"] == 128 + signum
    assert not (out / "01_first" / "results.json").exists()
    assert "| [1. Fake 1](#1-fake-1) | interrupted | 0 / 0 PASS |" in (out / "REPORT.md").read_text()
    hold.unlink()
    resumed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert "its last run ended 'interrupted'; running it again" in resumed.stderr
    assert attempts.read_text().count("\n") == 2  # the same folder, not cleared
    assert json.loads((out / "01_first" / "reproduce.json").read_text())["status"] == "passed"


def test_kill_9_of_reproduce_stops_the_chapter_and_the_next_run_resumes(tmp_path):
    """kill -9 cannot be forwarded: the chapter, told by the kernel that its parent died, gets SIGTERM, stops
    (saving) and exits; nothing is left running, and the next run on the folder runs the chapter again in it."""
    argv, env, hold, out = held_chapter_command(tmp_path)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    attempts, child = wait_for_chapter(proc, out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while alive(child):
        assert time.monotonic() < deadline, "the chapter ran on after kill -9 of p2t reproduce"
        time.sleep(0.05)
    hold.unlink()
    resumed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert attempts.read_text().count("\n") == 2  # the same folder, not cleared
    assert json.loads((out / "01_first" / "reproduce.json").read_text())["status"] == "passed"


# ----------------------------------------------------------------------------------------------- the real chapters


PLAYGROUND_FOLDERS = ("04_optimisers", "05_regularisation", "06_cnn", "08_rnn", "09_attention", "10_transformer",
                      "11_pointer")


@pytest.mark.slow
def test_quick_budget_end_to_end(tmp_path):
    """Every chapter at the quick budget, as `make reproduce-quick` runs it: every folder, both reports, and
    the run folders the playground's pages read."""
    out = tmp_path / "quick"
    done = subprocess.run([sys.executable, "-m", "p2t_jax.cli", "reproduce", "--budget", "quick", "--out", str(out),
                           "--no-progress"], capture_output=True, text=True, cwd=REPO, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    for chapter in registry.CHAPTERS.values():
        folder = out / chapter.name
        record = json.loads((folder / "reproduce.json").read_text())
        assert record["budget"] == "quick" and record["status"] in runner.DONE, chapter.name
        assert (folder / "results.json").is_file() and (folder / "log.txt").is_file()
        assert list(folder.glob("*.png")), chapter.name
    md = (out / report.REPORT_MD).read_text()
    assert md.count("\n## ") == 11 and "(quick budget)" in md
    assert (out / report.REPORT_HTML).read_text().count("data:image/png;base64,") >= 11
    for name in PLAYGROUND_FOLDERS:
        assert (out / name).is_dir(), name
    from p2t_jax.playground import ui
    from p2t_jax.playground.views import attention, cnn, optimisers, pointer, rnn, transformer

    # What each page of `p2t playground --runs OUT` finds there.
    assert {p.name for p in transformer.language_model_runs(out)} == {"smoke", "small"}
    assert len(optimisers.optimiser_runs(out / "04_optimisers")) >= 2
    assert len(ui.read_results(out / "05_regularisation")) == 2 and cnn.cnn_runs(out / "06_cnn")
    assert rnn.read_run(out / "08_rnn") and attention.read_run(out / "09_attention")
    assert set(pointer.pointer_runs(out / "11_pointer")) == {"sort", "hull", "tsp"}


@pytest.mark.slow
def test_real_chapters_report_and_resume(tmp_path, capsys):
    """Chapters 1 and 2, tiny: the report of real experiments, then a second run that runs nothing."""
    out = tmp_path / "out"
    tiny = ["--set", "1:gates.num_seeds=2", "--set", "1:gates.num_epochs=8", "--set", "1:separable.num_datasets=2",
            "--set", "1:separable.num_points=10", "--set", "1:separable.num_epochs=10",
            "--set", "2:collapse.num_shapes=1", "--set", "2:collapse.num_stacks=2", "--set", "2:plot.grid=11"]
    assert reproduce("--budget", "quick", "--chapters", "1,2", "--out", str(out), *tiny) == 0
    md = (out / "REPORT.md").read_text()
    assert "- claims: **12 of 12 PASS** over 2 chapters" in md
    assert "Minsky & Papert 1969" in md and "![perceptron_xor.png](01_perceptron/perceptron_xor.png)" in md
    capsys.readouterr()
    assert reproduce("--budget", "quick", "--chapters", "1,2", "--out", str(out), *tiny) == 0
    assert "started" not in capsys.readouterr().err


@pytest.mark.slow
def test_sigint_mid_chapter_then_resume(tmp_path):
    """SIGINT to `p2t reproduce` while chapter 8 trains (quick budget): the chapter exits 130, no process is
    left, the record says interrupted, and the next run runs the chapter again in its folder to the end."""
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "p2t_jax.cli", "reproduce", "--budget", "quick", "--chapters", "8", "--out",
            str(out), "--no-progress", "--set", "8:train.num_steps=400"]
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    log = out / "08_rnn" / "log.txt"
    deadline = time.monotonic() + 600
    while not (log.exists() and "  step " in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.5)
    child = json.loads((out / "08_rnn" / "reproduce.json").read_text())["pid"]
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert not alive(child)
    assert json.loads((out / "08_rnn" / "reproduce.json").read_text())["status"] == "interrupted"
    resumed = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((out / "08_rnn" / "reproduce.json").read_text())["status"] in runner.DONE
    assert log.read_text().count("===== exit status") == 2  # both attempts, one after the other, in one log


@pytest.mark.parametrize("number", sorted(registry.QUICK))
def test_both_budgets_are_valid_configs(number):
    """Every chapter's quick and full plans parse and pass its experiment's own validation (a renamed config
    key fails here, not minutes into `p2t reproduce`)."""
    from conftest import load_experiment

    from p2t_jax.experiment import parse_command_line

    chapter = registry.CHAPTERS[number]
    module = load_experiment(pathlib.Path(chapter.script).name)
    for budget in registry.BUDGETS:
        plan = registry.plan(chapter, budget)
        _, config = parse_command_line(["--config", plan.config] + [f"--config.{o}" for o in plan.overrides],
                                       description="", default_workdir="unused", default_config=chapter.config)
        module.validate(config)
    assert registry.plan(chapter, "full") == registry.Plan(chapter.config) and (REPO / chapter.script).is_file()
