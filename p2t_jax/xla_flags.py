"""XLA flags an entry point sets in ``XLA_FLAGS`` before JAX starts (XLA reads them once, when
its first backend is created), and the one that makes a GPU's steps bit-reproducible.

* :func:`add` appends ``--flag=value`` unless ``XLA_FLAGS`` already names the flag (the
  user's choice stands) or JAX's backends have started (it would be ignored). Used by
  :func:`p2t_jax.host_memory.schedule_for_memory` and :func:`deterministic`.
* :func:`is_deterministic` says whether the GPU's deterministic operations are on (the loop
  records it in ``summary.json`` and, resuming on a GPU without them, says what that means).
* :func:`deterministic` (``p2t train --deterministic``, ``p2t sweep --deterministic``) asks XLA's
  GPU backend for deterministic operations (``--xla_gpu_deterministic_ops=true``): without it
  a GPU's reductions and scatters may add in a different order from one call to the next
  (atomics), so two runs of the same step, or a resumed run and an uninterrupted one, differ
  in the last bits, and the difference grows with training. Measured on an NVIDIA H200 (jax
  0.11.2): two 40-step runs of the ``smoke`` recipe in one process differed in all 30
  parameter arrays (largest difference 0.063) without it and in none with it
  (``bench/determinism.py``); the ``gpu`` recipe's step took 15.0 ms with it against 10.3 ms
  without (README, "What ran on real hardware"). XLA's CPU
  backend is deterministic either way, so the flag changes nothing there.

No JAX import here: an entry point calls these first.
"""

from __future__ import annotations

import os
import sys

DETERMINISTIC_GPU = "--xla_gpu_deterministic_ops"


def _values(flag: str) -> list[str]:
    """The values ``XLA_FLAGS`` gives ``flag``, in order (``true`` for a bare ``--flag``)."""
    parts = [part.split("=", 1) for part in os.environ.get("XLA_FLAGS", "").split()]
    return [part[1] if len(part) > 1 else "true" for part in parts if part[0] == flag]


def named(flag: str) -> bool:
    """Whether ``XLA_FLAGS`` names ``flag`` (with any value)."""
    return bool(_values(flag))


def backends_started() -> bool:
    """Whether JAX has created its backends in this process (then XLA has read its flags)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):
        return True  # cannot tell: assume it is too late


def add(flag: str, value: str) -> bool:
    """Appends ``flag=value`` to ``XLA_FLAGS``; returns whether it did. Does nothing when ``XLA_FLAGS``
    names ``flag`` already or JAX's backends have started. Idempotent."""
    if named(flag) or backends_started():
        return False
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}={value}".strip()
    return True


def deterministic() -> None:
    """Turns on bit-reproducible GPU steps (``--xla_gpu_deterministic_ops=true``) before JAX starts.

    Raises:
      ValueError: ``XLA_FLAGS`` turns the flag off, or JAX's backends have started (too late), in one sentence.
    """
    add(DETERMINISTIC_GPU, "true")
    if is_deterministic():
        return
    if named(DETERMINISTIC_GPU):
        raise ValueError(f"deterministic steps ask for {DETERMINISTIC_GPU}=true, but XLA_FLAGS turns it off; "
                         f"drop one of the two.")
    raise ValueError(f"deterministic steps must be asked for before JAX starts (XLA reads its flags once); set "
                     f"XLA_FLAGS={DETERMINISTIC_GPU}=true in the environment instead.")


def is_deterministic() -> bool:
    """Whether ``XLA_FLAGS`` turns the GPU's deterministic operations on."""
    values = [v.lower() for v in _values(DETERMINISTIC_GPU)]
    return bool(values) and values[-1] in ("true", "1")
