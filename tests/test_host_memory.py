"""keep_freed_host_memory: a freed 48 MB block is reused without page faults (glibc only)."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the malloc knobs exist on glibc only")

# Runs in a fresh process: the setting is process-wide. Prints the minor page faults of the
# second allocate-touch-free of 48 MB, before and after the call, and the call's result.
_SCRIPT = """
import resource
import numpy as np
from p2t_jax.host_memory import keep_freed_host_memory

def faults():
    counts = []
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        a = np.ones(12_000_000, np.float32)
        del a
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return counts[-1]

default = faults()
applied = keep_freed_host_memory()
faults()  # the first block after the change may still come from a fresh mapping
print(default, faults(), applied, keep_freed_host_memory())
"""


def _run(env_extra: dict) -> tuple[int, int, str, str]:
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, env=env, check=True)
    default, tuned, applied, again = out.stdout.split()
    return int(default), int(tuned), applied, again


def test_freed_block_is_reused_without_faulting():
    default, tuned, applied, again = _run({"P2T_KEEP_MALLOC_DEFAULTS": "0"})
    assert applied == "True" and again == "True"
    assert default > 100  # glibc maps and unmaps the 48 MB block each time
    assert tuned < default / 10


def test_opt_out_leaves_malloc_alone():
    default, tuned, applied, _ = _run({"P2T_KEEP_MALLOC_DEFAULTS": "1"})
    assert applied == "False"
    assert tuned > 100 and default > 100
