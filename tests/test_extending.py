"""docs/extending.md runs as written: its Python blocks in order, its files written, its commands run."""

import os
import pathlib
import re
import subprocess
import sys

import pytest
from conftest import QUICK_COMPILE

REPO = pathlib.Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.S)


@pytest.mark.e2e
def test_the_extending_guide_runs_as_written(tmp_path, monkeypatch):
    text = (REPO / "docs" / "extending.md").read_text()
    blocks = BLOCK.findall(text)
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict = {"__name__": "extending_guide"}
    bin_dir = pathlib.Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", JAX_PLATFORMS="cpu",
               XLA_FLAGS=QUICK_COMPILE)  # one device, compiled as in this process
    outputs = []
    for kind, code in blocks:
        first = code.splitlines()[0]
        if kind == "python" and first.startswith("# file: "):
            (tmp_path / first[len("# file: "):].strip()).write_text(code)
        elif kind == "python":
            exec(compile(code, "docs/extending.md", "exec"), namespace)  # noqa: S102
        else:
            for line in code.strip().splitlines():
                done = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True,
                                      timeout=600)
                assert done.returncode == 0, (line, done.stderr[-2000:])
                outputs.append(done.stdout)
    assert namespace["summary"]["resumed_from"] == 200
    assert '"step": 300' in outputs[1]  # p2t eval of the run trained by the command
    assert "steps 300 -> 400" in outputs[2]
