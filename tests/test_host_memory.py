"""keep_freed_host_memory: freed blocks are reused without page faults (glibc only); schedule_for_memory's flag."""

import os
import pathlib
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the malloc knobs exist on glibc only")

# Runs in a fresh process (the setting is process-wide and, for threads, must come before
# they allocate). Prints the call's results (or "skipped" with argument "default") and the
# minor page faults of a repeated allocate-touch-free of 48 MB on the main thread and of
# 100 MB on a new thread (more than a thread arena holds).
_SCRIPT = """
import resource
import sys
import threading
import numpy as np
from p2t_jax.host_memory import keep_freed_host_memory

def faults(n_floats, in_thread):
    counts = []
    def touch():
        a = np.ones(n_floats, np.float32)
        del a
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        if in_thread:
            t = threading.Thread(target=touch)
            t.start()
            t.join()
        else:
            touch()
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return counts[-1]  # the first block after a change may still come from a fresh mapping

calls = "skipped skipped" if sys.argv[1] == "default" else f"{keep_freed_host_memory()} {keep_freed_host_memory()}"
print(calls, faults(12_000_000, False), faults(25_000_000, True))
"""


def _run(mode: str, keep_defaults: str) -> tuple[str, str, int, int]:
    env = dict(os.environ, P2T_KEEP_MALLOC_DEFAULTS=keep_defaults)
    out = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, env=env, check=True)
    applied, again, main_thread, other_thread = out.stdout.split()
    return applied, again, int(main_thread), int(other_thread)


def test_freed_blocks_are_reused_without_faulting():
    _, _, default_main, default_other = _run("default", "0")
    applied, again, main_thread, other_thread = _run("call", "0")
    assert applied == "True" and again == "True"
    assert min(default_main, default_other) > 100  # glibc maps and unmaps each block every time
    assert main_thread < default_main / 10  # 48 MB on the main thread
    assert other_thread < default_other / 10  # 100 MB on another thread


def test_opt_out_leaves_malloc_alone():
    applied, _, main_thread, other_thread = _run("call", "1")
    assert applied == "False"
    assert min(main_thread, other_thread) > 100


_SCHEDULE = """
import os
from p2t_jax.host_memory import keep_freed_host_memory, schedule_for_memory
print(keep_freed_host_memory() if os.environ.get("VIA_KEEP") else schedule_for_memory(), schedule_for_memory())
print(os.environ.get("XLA_FLAGS", ""))
"""
_FLAG = "--xla_cpu_scheduler_type"
_MEMORY = _FLAG + "=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"
_OLD = "--xla_cpu_enable_concurrency_optimized_scheduler"  # deprecated by XLA: a caller naming it keeps it


@pytest.mark.parametrize("xla_flags, platforms, via_keep, expected", [
    ("--xla_force_host_platform_device_count=2", "cpu", "", "--xla_force_host_platform_device_count=2 " + _MEMORY),
    ("", "cpu", "1", _MEMORY),  # keep_freed_host_memory sets it too, even with malloc's defaults kept
    (_FLAG + "=CPU_SCHEDULER_TYPE_DEFAULT", "cpu", "", _FLAG + "=CPU_SCHEDULER_TYPE_DEFAULT"),  # the caller's choice
    (_OLD + "=true", "cpu", "", _OLD + "=true"),
    ("", "cuda", "", ""),  # not on the CPU: nothing
])
def test_schedule_for_memory_adds_the_flag_once_unless_named_or_not_on_cpu(xla_flags, platforms, via_keep, expected):
    env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS=platforms, VIA_KEEP=via_keep, P2T_KEEP_MALLOC_DEFAULTS="1")
    out = subprocess.run([sys.executable, "-c", _SCHEDULE], capture_output=True, text=True, env=env, check=True)
    first, flags = out.stdout.splitlines()
    assert flags == expected
    assert first.split()[1] == "False"  # idempotent: the second call finds the flag
    if not via_keep:
        assert first.split()[0] == str(expected != xla_flags)


def test_schedule_for_memory_does_nothing_once_jax_has_started():
    script = ("import os, jax; jax.numpy.zeros(1).block_until_ready()\n"
              "from p2t_jax.host_memory import schedule_for_memory\n"
              "print(schedule_for_memory(), repr(os.environ.get('XLA_FLAGS', '')))")
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["False", "''"]


_TEMP_BYTES = """
import sys
sys.path.insert(0, "bench")
import harness, memory  # memory's import asks for the schedule, as the p2t command does
config = harness.load("configs/shakespeare.py:smoke", ["model.max_len=64", "train.batch_size=4"])
print(memory.compiled_memory(config)[0]["temp"])
"""


def test_the_scheduler_flag_and_its_deprecated_form_are_the_same_choice():
    """XLA reads both (this jaxlib): the memory-optimised schedule asked for either way takes the same
    temporaries, fewer than XLA's default schedule's, which the caller can keep by naming either flag."""
    def temp(xla_flags):
        env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS="cpu")
        out = subprocess.run([sys.executable, "-c", _TEMP_BYTES], capture_output=True, text=True, env=env, check=True,
                             cwd=pathlib.Path(__file__).resolve().parents[1])
        return int(out.stdout.split()[-1])

    ours, old_form = temp(""), temp(_OLD + "=false")
    default, old_default = temp(_FLAG + "=CPU_SCHEDULER_TYPE_DEFAULT"), temp(_OLD + "=true")
    assert ours == old_form < default == old_default
