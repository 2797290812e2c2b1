"""Keeps freed host memory in the process, so each XLA-CPU step does not fault it back in.

Every call of a compiled XLA-CPU computation allocates its temporary buffer (48 MB for the
nanoGPT CPU training step) and frees it on return. glibc's ``malloc`` serves a block that
large with a fresh ``mmap`` and gives it back with ``munmap``, so every step page-faults its
whole working set in again: 11-13 ms of kernel time in a 22-28 ms step on two cores.
Raising malloc's mmap and trim thresholds keeps such blocks in the heap for the next step,
and one arena for all threads lets blocks larger than a thread arena's 64 MB (the ``large``
config's step needs 336 MB) be kept too: the nanoGPT step drops to ~17 ms, the ``large``
step from ~132 to ~103 ms (``bench/NOTES.md``). Results are unchanged: this is where freed
memory waits, not what is computed.

The setting is process-wide and costs up to ``limit_bytes`` of memory the process keeps
rather than returns to the system. It belongs to entry points, called first thing, before
JAX starts its threads (the one-arena part applies to threads that have not allocated yet):
the ``p2t`` command, the experiment harness and the benches call it; a library function
never does. It applies only where JAX will run on the CPU (``JAX_PLATFORMS`` names only
``cpu``, or no accelerator plugin is installed): an accelerator's step does not allocate
in host memory. Set ``P2T_KEEP_MALLOC_DEFAULTS=1`` to leave malloc alone. Only glibc (Linux)
has these knobs; elsewhere it does nothing.

The same setting from the shell, for a program that does not call this function::

    MALLOC_ARENA_MAX=1 MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 python my_script.py

:func:`keep_freed_host_memory` also makes that temporary buffer smaller
(:func:`schedule_for_memory`): it asks XLA-CPU to order each computation's operations for
the least memory instead of for running independent operations side by side. The nanoGPT
recipe's step at context 512 (width 128, 4 layers, 1,024 tokens) then needs 40 MiB of
temporaries instead of 53 (``bench/NOTES.md``, change 16). From the shell:
``XLA_FLAGS=--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED``; a program that
names that flag in its own ``XLA_FLAGS`` (``CPU_SCHEDULER_TYPE_DEFAULT`` for XLA's default), or
the older ``--xla_cpu_enable_concurrency_optimized_scheduler`` (deprecated in XLA; the same
choice, tested), keeps its choice.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import importlib.util
import os
import platform

from p2t_jax import xla_flags

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_applied: int | None = None
_SCHEDULER_FLAG = "--xla_cpu_scheduler_type"
_SCHEDULER_FOR_MEMORY = "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"
_OLD_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler"  # =false: the same, deprecated by XLA


def cpu_backend_expected() -> bool:
    """Whether JAX will run on the CPU, judged without starting JAX: ``JAX_PLATFORMS`` names
    only ``cpu``, or no accelerator plugin (CUDA, ROCm, TPU) is installed."""
    platforms = [p.strip() for p in os.environ.get("JAX_PLATFORMS", "").split(",") if p.strip()]
    if platforms:
        return platforms == ["cpu"]
    if importlib.util.find_spec("libtpu") is not None:
        return False
    return not list(importlib.metadata.entry_points(group="jax_plugins"))


def schedule_for_memory() -> bool:
    """Adds ``--xla_cpu_scheduler_type=CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED`` to ``XLA_FLAGS``, so that
    XLA-CPU schedules each computation for the least memory; returns whether it did.

    XLA's default on the CPU orders operations so that independent ones can run side by
    side, which keeps more buffers alive at once. Changes nothing (returns False) when
    ``XLA_FLAGS`` already names that flag or its deprecated form (the caller's choice stands), when JAX will not run
    on the CPU (:func:`cpu_backend_expected`), or when JAX's backends have started: XLA reads
    its flags once, when the first backend is created, so an entry point calls this before
    any JAX computation. Idempotent.
    """
    if xla_flags.named(_OLD_SCHEDULER_FLAG) or not cpu_backend_expected():
        return False
    return xla_flags.add(_SCHEDULER_FLAG, _SCHEDULER_FOR_MEMORY)


def keep_freed_host_memory(limit_bytes: int = 1 << 30) -> bool:
    """Lets glibc keep freed blocks below ``limit_bytes`` for reuse, in one arena; returns whether it applied.

    Idempotent. Returns False (and changes nothing) when ``P2T_KEEP_MALLOC_DEFAULTS=1``,
    when JAX will not run on the CPU (:func:`cpu_backend_expected`), off glibc, or when glibc
    refuses the values. Whatever it returns, it first calls :func:`schedule_for_memory`.
    """
    global _applied
    schedule_for_memory()
    if os.environ.get("P2T_KEEP_MALLOC_DEFAULTS", "") not in ("", "0") or not cpu_backend_expected():
        return False
    if _applied is not None and _applied >= limit_bytes:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    limit = min(int(limit_bytes), 2**31 - 1)
    ok = all(mallopt(option, value) == 1
             for option, value in ((_M_ARENA_MAX, 1), (_M_MMAP_THRESHOLD, limit), (_M_TRIM_THRESHOLD, limit)))
    if ok:
        _applied = limit
    return ok
