"""Where and with what a reproduction ran: the code's hash, the git revision, the machine, the versions.

Nothing here imports JAX or starts a backend: the chapters run in their own processes, and a
parent holding an accelerator would take its memory from them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import pathlib
import platform
import shutil
import subprocess
import sys

from p2t_jax.configuration import REPO_ROOT

PACKAGE = pathlib.Path(__file__).resolve().parents[1]
# Parts of the package that do not change what an experiment computes: a change there does not re-run a chapter.
NOT_EXPERIMENT_CODE = ("playground", "reproduce", "cli.py")


def code_files(script: str, config: str) -> list[pathlib.Path]:
    """The files a chapter's results depend on: the package's Python sources (those under
    :data:`NOT_EXPERIMENT_CODE` left out), the experiment ``script`` and every config file
    in ``configs/`` (a config may load another, as chapter 10's does)."""
    files = [p for p in sorted(PACKAGE.rglob("*.py"))
             if p.relative_to(PACKAGE).parts[0] not in NOT_EXPERIMENT_CODE]
    files.append(REPO_ROOT / script)
    files.extend(sorted((REPO_ROOT / "configs").glob("*.py")))
    config_file = (REPO_ROOT / config.split(":")[0]).resolve()
    if config_file not in files:
        files.append(config_file)
    return files


def code_hash(script: str, config: str) -> str:
    """SHA-256 (first 16 hex digits) over the names and contents of :func:`code_files`."""
    digest = hashlib.sha256()
    for path in code_files(script, config):
        name = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"(missing)")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def git_revision() -> str:
    """``abc1234`` (``abc1234+changes`` with uncommitted changes to tracked files), or ``unknown``."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        rev = subprocess.run([git, "-C", str(REPO_ROOT), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if rev.returncode:
            return "unknown"
        dirty = subprocess.run([git, "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev.stdout.strip() + ("+changes" if dirty else "")


def cpu_model() -> str:
    """The CPU's model name, family and model from ``/proc/cpuinfo`` (or what ``platform`` knows)."""
    try:
        first = pathlib.Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        first = ""
    fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}
    if "model name" not in fields:
        return platform.processor() or platform.machine() or "unknown CPU"
    family = f" family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else ""
    return fields["model name"] + family


def cores() -> int:
    """The CPU cores this process may use."""
    from p2t_jax.resources import usable_cores

    return usable_cores()


def memory_gib() -> float | None:
    """Total memory in GiB (``/proc/meminfo``), or None where unknown."""
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def accelerators() -> str:
    """GPUs as ``nvidia-smi -L`` names them, or ``none`` (the chapters' own JAX platform is reported beside)."""
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            out = ""
        names = [line.split(":", 1)[1].split("(")[0].strip() for line in out.splitlines() if line.startswith("GPU")]
        if names:
            return f"{len(names)} x {names[0]}"
    return "none"


def machine_line() -> str:
    """``Intel(R) Xeon(R) ..., 2 cores, 7.8 GiB memory, accelerator: none``."""
    mem = memory_gib()
    return (f"{cpu_model()}, {cores()} cores, {f'{mem:.1f} GiB' if mem else 'unknown'} memory, "
            f"accelerator: {accelerators()}")


def versions() -> dict[str, str]:
    """Python and the libraries the chapters use, from package metadata (nothing imported)."""
    found = {"python": platform.python_version()}
    for name in ("p2t_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def python() -> str:
    """The interpreter the chapters run under (the one running this)."""
    return sys.executable
