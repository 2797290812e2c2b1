"""The shared persistent compilation cache (:mod:`p2t_jax.compile_cache`): a process started with its
environment writes every program, however small, and a later one loads it instead of compiling."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from p2t_jax import compile_cache

PROBE = """
import json, jax, jax.monitoring
events = {"built": 0, "loaded": 0}
def seen(event, **kw):
    events["built"] += event == "/jax/compilation_cache/compile_requests_use_cache"  # compiled or loaded
    events["loaded"] += event == "/jax/compilation_cache/cache_hits"
jax.monitoring.register_event_listener(seen)
def f(x):
    return x * 3.0 + 1.0
first = float(jax.jit(f)(2.0))
built = dict(events)
jax.clear_caches()  # this process's own caches: the program again, from the folder or compiled
again = float(jax.jit(f)(2.0))
print(json.dumps({"first": dict(built, value=first),
                  "second": {k: events[k] - built[k] for k in events} | {"value": again}}))
"""


def test_share_sets_the_variables_once_and_keeps_a_named_cache(tmp_path):
    env = {}
    assert compile_cache.share(tmp_path, env)
    assert env == {"JAX_COMPILATION_CACHE_DIR": str(tmp_path), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                   "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "-1"}
    env = {"JAX_COMPILATION_CACHE_DIR": "/elsewhere"}
    assert not compile_cache.share(tmp_path, env) and env == {"JAX_COMPILATION_CACHE_DIR": "/elsewhere"}


def test_a_program_is_written_however_small_and_loaded_when_built_again(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_PERSISTENT") and k != "JAX_COMPILATION_CACHE_DIR"}
    env.update(compile_cache.environment(tmp_path / "cache"))

    def probe() -> dict:
        done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    seen = probe()
    first, second = seen["first"], seen["second"]
    assert first["built"] >= 1 and first["loaded"] == 0 and first["value"] == 7.0
    # a program that compiles in milliseconds is written too (JAX's defaults write none under a second)
    assert any((tmp_path / "cache").iterdir())
    assert second["loaded"] == second["built"] == first["built"] and second["value"] == 7.0
