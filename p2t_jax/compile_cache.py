"""One persistent XLA compilation cache shared by several processes, through their environment.

JAX reads ``JAX_COMPILATION_CACHE_DIR`` (and its other ``JAX_*`` settings) when it starts, so a
process sets these before importing JAX, or hands them to the processes it starts: every
program one of them compiles is written to the folder, and any of them that builds the same
program later (the same computation, shapes, compiler options and XLA flags; another seed of a
run, a chapter run again) loads it instead of compiling it. A loaded program is the same
executable a compilation would give, so results do not depend on the cache.

``p2t reproduce`` gives its chapters one (``<out>/.xla-cache``), and the test suite one per run
(``tests/conftest.py``). Nothing here imports JAX.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

DIR_VARIABLE = "JAX_COMPILATION_CACHE_DIR"
# Every program is written, however quick to compile or small: the chapters' and the tests' CPU programs take
# fractions of a second to a few seconds each (JAX's defaults skip those under one second), and there are many.
SETTINGS = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}


def environment(folder: str | os.PathLike) -> dict[str, str]:
    """The variables that make a process starting JAX use the persistent cache in ``folder``."""
    return {DIR_VARIABLE: os.fspath(folder), **SETTINGS}


def share(folder: str | os.PathLike, environ: MutableMapping[str, str] | None = None) -> bool:
    """Points ``environ`` (default ``os.environ``) at the cache in ``folder``, unless it already names
    a cache (``JAX_COMPILATION_CACHE_DIR`` set: the caller's choice stands). Returns whether it did."""
    environ = os.environ if environ is None else environ
    if DIR_VARIABLE in environ:
        return False
    environ.update(environment(folder))
    return True
