"""How much memory a device has free, a one-sentence refusal when a request will not fit, and how many CPU cores
this process may use."""

from __future__ import annotations

import os

import jax

from p2t_jax.configuration import ConfigError


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: fewer than the machine's when it was pinned,
    e.g. by ``p2t reproduce``'s lanes or ``taskset``)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:,.1f} GiB"


def available_memory(device: jax.Device | None = None) -> int | None:
    """Bytes free on ``device`` (default: the first device): on a CPU the host's available memory
    (``MemAvailable``), on an accelerator its limit minus what is in use; None when unknown."""
    device = device or jax.local_devices()[0]
    if device.platform == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    stats = device.memory_stats() or {}
    if "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def require_memory(nbytes: float, what: str, hint: str, device: jax.Device | None = None) -> None:
    """Raises ConfigError when ``nbytes`` exceed what ``device`` has free.

    Args:
      nbytes: the estimate or the compiler's figure.
      what: the subject of the sentence, e.g. ``"one training step"``.
      hint: what to change, e.g. ``"lower train.batch_size"``.
    """
    available = available_memory(device)
    if available is not None and nbytes > available:
        platform = (device or jax.local_devices()[0]).platform
        where = "in host memory" if platform == "cpu" else f"on the {platform} device"
        raise ConfigError(f"{what} needs {_gib(nbytes)} but only {_gib(available)} is free {where}; {hint}.")
