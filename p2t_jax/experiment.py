"""What every ``experiments/NN_*.py`` script shares: its command line, claims and results.json.

A script defines ``run(config, workdir, claims) -> dict`` and hands it to
:func:`main`, which parses ``--workdir``, ``--config`` and ``--config.key=value``, turns a
bad config into one sentence on stderr and exit status 2, writes ``results.json`` (the
numbers, the claims with pass/fail, the config and the command) and returns 1 if any
claim failed.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np

from p2t_jax.configuration import REPO_ROOT, ConfigError, apply_overrides, load_config, require, split_overrides
from p2t_jax.data.cache import DataUnavailableError
from p2t_jax.host_memory import keep_freed_host_memory
from p2t_jax.parent_watch import stop_with_parent
from p2t_jax.training import metrics, workdir_lock
from p2t_jax.training.checkpoint import CheckpointError
from p2t_jax.training.stopping import RunStopped, abort_on_further_signals


class Claims:
    """The claims an experiment checks, each a statement, a pass/fail and the measured value."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    def check(self, name: str, passed: bool, statement: str, measured: Any = None) -> bool:
        """Records claim ``name``; prints one PASS/FAIL line; returns ``passed``."""
        passed = bool(passed)
        self.items[name] = {"passed": passed, "statement": statement, "measured": to_jsonable(measured)}
        shown = "" if measured is None else f"  [measured: {_short(measured)}]"
        print(f"  {'PASS' if passed else 'FAIL'}  {statement}{shown}", flush=True)
        return passed

    @property
    def all_passed(self) -> bool:
        return all(item["passed"] for item in self.items.values())

    def failed(self) -> list[str]:
        return [name for name, item in self.items.items() if not item["passed"]]


MAX_WORKERS = 8


def require_workers(config: ml_collections.ConfigDict) -> int:
    """``experiment.workers`` (runs trained side by side; 1 when absent) must be an integer in 1 .. 8."""
    workers = config.experiment.get("workers", 1)
    require(isinstance(workers, int) and not isinstance(workers, bool) and 1 <= workers <= MAX_WORKERS,
            f"config key 'experiment.workers' must be an integer from 1 to {MAX_WORKERS} (runs trained side by "
            f"side), got {workers!r}.")
    return workers


def _short(value: Any) -> str:
    value = to_jsonable(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value)
    return text if len(text) < 120 else text[:117] + "..."


def to_jsonable(value: Any) -> Any:
    """``value`` with JAX/NumPy arrays and scalars turned into lists and Python numbers (inf/nan as strings)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (jax.Array, np.ndarray, np.generic)):
        return to_jsonable(np.asarray(value).tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_json(path: pathlib.Path, data: Any) -> None:
    """Writes ``data`` (arrays and all, see :func:`to_jsonable`) as JSON, atomically."""
    metrics.write_json(path, to_jsonable(data))


def parse_command_line(argv: Sequence[str] | None, *, description: str, default_workdir: str,
                       default_config: str) -> tuple[pathlib.Path, ml_collections.ConfigDict]:
    """``--workdir DIR --config FILE[:VARIANT] --config.key=value ...`` -> ``(workdir, config)``.

    Raises:
      ConfigError: for an unknown argument, config file, key or a badly typed value.
    """
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                     epilog="Override any config field with --config.KEY=VALUE.")
    parser.add_argument("--workdir", default=default_workdir, help=f"run folder (default {default_workdir})")
    parser.add_argument("--config", default=default_config, help=f"config file[:variant] (default {default_config})")
    rest, overrides = split_overrides(list(sys.argv[1:] if argv is None else argv))
    args, unknown = parser.parse_known_args(rest)
    if unknown:
        raise ConfigError(f"unknown argument '{unknown[0]}'; use --workdir, --config or --config.KEY=VALUE.")
    config = load_config(args.config)
    apply_overrides(config, overrides)
    return pathlib.Path(args.workdir), config


def main(run: Callable[[ml_collections.ConfigDict, pathlib.Path, Claims], dict], *, script: str, description: str,
         default_workdir: str, default_config: str, validate: Callable[[ml_collections.ConfigDict], None],
         argv: Sequence[str] | None = None) -> int:
    """Runs an experiment from the command line; returns the exit status.

    ``script`` is the experiment's ``__file__`` (named in the printed command).

    0: every claim held. 1: some claim failed, or none was checked (results.json still
    written). 2: bad input (one sentence on stderr, nothing written). 3, 4, 130, 143: a
    training run inside stopped (:mod:`p2t_jax.training.stopping`); run the same command
    again to resume it.
    """
    keep_freed_host_memory()  # early, before JAX starts its threads (p2t_jax.host_memory)
    stop_with_parent()  # a chapter of `p2t reproduce` stops (saving) if the runner dies, even by kill -9
    try:
        workdir, config = parse_command_line(argv, description=description, default_workdir=default_workdir,
                                             default_config=default_config)
        validate(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if workdir.exists() and not workdir.is_dir():
        print(f"error: --workdir '{workdir}' exists and is not a folder.", file=sys.stderr)
        return 2
    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # one experiment per workdir, for the whole run (a folder it created and left empty goes again)
        with workdir_lock.hold(workdir):
            return _main(run, script, description, argv, workdir, config)
    except ConfigError as e:  # another run holds the workdir, or it cannot be created or written
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(run: Callable, script: str, description: str, argv: list[str], workdir: pathlib.Path,
          config: ml_collections.ConfigDict) -> int:
    script_path = pathlib.Path(script).resolve()
    if script_path.is_relative_to(REPO_ROOT):
        script_path = script_path.relative_to(REPO_ROOT)
    command = shlex.join(["python", str(script_path)] + argv)
    print(f"{description}\n  workdir {workdir}\n  command {command}", flush=True)
    claims = Claims()
    start = time.perf_counter()
    try:
        results = run(config, workdir, claims)
    except (ConfigError, DataUnavailableError, CheckpointError) as e:  # found only once running: still bad input
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        abort_on_further_signals(130)
        print("\ninterrupted; run the same command to resume.", file=sys.stderr)
        return 130
    results = dict(results, claims=claims.items, all_claims_passed=claims.all_passed, config=config.to_dict(),
                   command=command, seconds=time.perf_counter() - start, jax_version=jax.__version__,
                   device=str(jax.devices()[0].platform))
    write_json(workdir / "results.json", results)
    print(f"wrote {workdir / 'results.json'} ({results['seconds']:.1f} s)")
    if not claims.items:
        print("error: no claim was checked, so the experiment showed nothing; see the messages above.",
              file=sys.stderr)
        return 1
    if not claims.all_passed:
        print(f"claims failed: {', '.join(claims.failed())}", file=sys.stderr)
        return 1
    return 0
