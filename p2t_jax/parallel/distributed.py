"""Multi-process start-up: ``jax.distributed.initialize`` from the config or the environment.

One process runs per host (or per GPU); every process runs the same command. The
coordinator is process 0's ``host:port``. Values come from ``config.parallel``; empty ones
are read from the environment::

    P2T_COORDINATOR_ADDRESS=10.0.0.1:1234  P2T_NUM_PROCESSES=4  P2T_PROCESS_ID=<0..3>

On TPU pods, SLURM and Open MPI, ``parallel.cluster_detect=True`` lets JAX find all three
itself. With none of these, the run is a single process and nothing is started.
"""

from __future__ import annotations

import os

import jax
import ml_collections

from p2t_jax.configuration import require

ENV_PREFIX = "P2T_"


def _setting(parallel: ml_collections.ConfigDict, key: str, unset, cast):
    value = parallel.get(key, unset)
    if value != unset:
        return value
    text = os.environ.get(ENV_PREFIX + key.upper(), "")
    if not text:
        return unset
    try:
        return cast(text)
    except ValueError:
        require(False, f"environment variable {ENV_PREFIX + key.upper()} must be {cast.__name__}, got {text!r}.")


def initialize(parallel: ml_collections.ConfigDict | None) -> bool:
    """Joins the multi-process run that ``parallel`` (or the environment) names, once.

    Must run before anything else touches JAX's devices. Returns whether this is a
    multi-process run.

    Raises:
      ConfigError: an address without a process count or id, or an id out of range.
    """
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    parallel = parallel if parallel is not None else ml_collections.ConfigDict()
    address = _setting(parallel, "coordinator_address", "", str)
    num_processes = _setting(parallel, "num_processes", 0, int)
    process_id = _setting(parallel, "process_id", -1, int)
    detect = bool(parallel.get("cluster_detect", False))
    if not address and not detect:
        return False
    if address:
        require(num_processes >= 1, f"a coordinator address ({address}) needs 'parallel.num_processes' "
                                    f"(or ${ENV_PREFIX}NUM_PROCESSES) of at least 1.")
        require(0 <= process_id < num_processes,
                f"'parallel.process_id' (or ${ENV_PREFIX}PROCESS_ID) must be in [0, {num_processes}), "
                f"got {process_id}.")
    # CPU processes talk through gloo (TCP); GPU and TPU use their own collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=address or None, num_processes=num_processes or None,
        process_id=process_id if process_id >= 0 else None,
        initialization_timeout=int(parallel.get("initialization_timeout", 300)))
    return jax.process_count() > 1
