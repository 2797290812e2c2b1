"""``p2t reproduce``: every chapter's experiment, one report (see :mod:`p2t_jax.reproduce`)."""

from __future__ import annotations

import argparse
import pathlib
import shlex
import sys
import time

from p2t_jax.configuration import ConfigError
from p2t_jax.reproduce import chapters as registry
from p2t_jax.reproduce import provenance, readme, report, runner

DEFAULT_OUT = {"full": "runs/reproduce", "quick": "runs/reproduce_quick"}
HELP = "run every chapter's experiment (or some) and write REPORT.md and report.html with every claim and figure"
EPILOG = """Exit status: 0 when every chapter ran and (full budget, or --strict) every claim held; 1 when a chapter
crashed, or (full budget, or --strict) a claim failed; 2 for bad arguments; 130 / 143 when stopped by
SIGINT / SIGTERM (run the same command again to resume). The quick budget reports its claims as measured
(small runs: many cannot hold) and exits 1 only for a crash, unless --strict.
Each chapter goes into OUT/NN_name/ (its results.json, figures, log.txt and reproduce.json); a chapter
already done with the same code, budget and settings is not run again."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``reproduce`` subcommand's arguments."""
    parser.add_argument("--chapters", default="all", help="which chapters, e.g. 1,4,10 or 1-3,8 (default all 11)")
    parser.add_argument("--budget", default="full", choices=registry.BUDGETS,
                        help="full: each experiment's default config (the README's numbers); quick: small runs in "
                             "a few minutes on 2 cores, labelled quick (default full)")
    parser.add_argument("--out", default=None, help="folder of the chapter folders and the report (default "
                                                     "runs/reproduce, or runs/reproduce_quick with --budget quick: "
                                                     "a folder's chapters run with another budget start afresh)")
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help=f"chapters run side by side, the longest first (default {default_jobs()} on this "
                             f"machine's {provenance.cores()} cores)")
    parser.add_argument("--strict", action="store_true", help="with --budget quick: exit 1 when a claim fails too")
    parser.add_argument("--set", action="append", default=[], metavar="N:KEY=VALUE", dest="chapter_overrides",
                        help="a config override for chapter N on top of the budget's (repeatable), e.g. "
                             "--set 1:gates.num_seeds=4; recorded in reproduce.json and the report")
    parser.add_argument("--publish", metavar="DIR", default=None,
                        help="also write DIR/REPORT.md with its figures under DIR/docs/report/ (e.g. --publish . "
                             "from the repository root, for the committed report)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (the PASS/FAIL lines stay)")
    parser.add_argument("--no-pin", action="store_true",
                        help="let every chapter use every core (by default, with --jobs > 1, each running chapter "
                             "is kept to its share of the cores: chapters whose thread pools span all cores slow "
                             "each other down)")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help=f"no shared persistent XLA compilation cache (by default OUT/{runner.CACHE}: what one "
                             f"chapter or run compiled, the next that builds the same program loads)")


def default_jobs() -> int:
    """Two chapters at a time where there are at least two cores: while one compiles or runs small steps in
    one thread, the other core is used."""
    return 2 if provenance.cores() >= 2 else 1


def parse_overrides(items: list[str]) -> dict[int, list[str]]:
    """``["1:gates.num_seeds=4", ...]`` -> ``{1: ["gates.num_seeds=4"]}``; ConfigError (one sentence) if malformed."""
    found: dict[int, list[str]] = {}
    for item in items:
        number, sep, override = item.partition(":")
        if not sep or not number.strip().isdigit() or int(number) not in registry.CHAPTERS or "=" not in override:
            raise ConfigError(f"--set '{item}' is not N:KEY=VALUE with N a chapter number 1 to {max(registry.CHAPTERS)}, "
                              f"e.g. --set 1:gates.num_seeds=4.")
        found.setdefault(int(number), []).append(override.strip())
    return found


def command_line(args: argparse.Namespace) -> str:
    """The command, every setting spelled out (what to run again to reproduce the report)."""
    words = ["p2t", "reproduce", "--budget", args.budget, "--chapters", args.chapters, "--out", str(args.out),
             "--jobs", str(args.jobs)]
    words += [w for item in args.chapter_overrides for w in ("--set", item)]
    words += ["--strict"] if args.strict else []
    words += ["--publish", args.publish] if args.publish else []
    words += ["--no-compile-cache"] if args.no_compile_cache else []
    words += ["--no-pin"] if args.no_pin else []
    return shlex.join(words)


def main(argv: list[str]) -> int:
    """``p2t reproduce ARGV`` without the rest of ``p2t``: parses, runs, and turns bad input into one
    sentence and exit status 2 (``p2t`` itself goes through :func:`run`)."""
    parser = argparse.ArgumentParser(prog="p2t reproduce", description=HELP, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    """Runs the reproduction the parsed ``args`` describe; returns the exit status."""
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {args.jobs}.")
    try:
        chapters = registry.parse_chapters(args.chapters)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    overrides = parse_overrides(args.chapter_overrides)
    unused = sorted(set(overrides) - {c.number for c in chapters})
    if unused:
        raise ConfigError(f"--set names chapter {unused[0]}, which --chapters does not run.")
    if args.out is None:
        args.out = DEFAULT_OUT[args.budget]
    out = pathlib.Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' exists and is not a folder.")
    publish = pathlib.Path(args.publish) if args.publish else None
    if publish is not None and not publish.is_dir():
        raise ConfigError(f"--publish '{publish}' is not an existing folder.")
    if publish is not None and (publish / readme.README).is_file():
        try:
            readme.check(publish / readme.README)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    command = command_line(args)
    cores = None if args.no_pin else runner.lanes(args.jobs)
    start = time.perf_counter()
    outcomes, stopped_by = runner.run_chapters(chapters, budget=args.budget, out=out, jobs=args.jobs,
                                               extra=overrides, progress=not args.no_progress,
                                               compile_cache=not args.no_compile_cache, cores=cores)
    header = report.Header(budget=args.budget, wall_seconds=time.perf_counter() - start, jobs=args.jobs,
                           command=command, stopped_by=stopped_by, lanes=cores)
    sections = report.write(out, header, outcomes)
    print(f"wrote {out / report.REPORT_MD} and {out / report.REPORT_HTML}: "
          f"{sum(s.passed for s in sections)} of {sum(s.claimed for s in sections)} claims PASS, "
          f"{header.wall_seconds:.0f} s", file=sys.stderr)
    if stopped_by is not None:
        print(f"stopped by signal {stopped_by}; run the same command again to resume.", file=sys.stderr)
        return 128 + stopped_by
    if publish is not None:
        path = report.publish(publish, header, sections)
        print(f"published {path} with its figures under {publish / report.PUBLISHED_FIGURES}", file=sys.stderr)
        publish_readme(publish / readme.README, args.budget, header, sections)
    crashed = [o.chapter.name for o in outcomes if o.status not in runner.DONE]
    failed = [o.chapter.name for o in outcomes if o.status == "claims failed"]
    if crashed:
        print(f"chapters that did not finish: {', '.join(crashed)} (see their log.txt)", file=sys.stderr)
        return 1
    if failed and (args.budget == "full" or args.strict):
        print(f"chapters with failed claims: {', '.join(failed)}", file=sys.stderr)
        return 1
    if failed:
        print(f"quick budget: claims failed in {', '.join(failed)} (small runs; reported, not an error; --strict "
              f"makes it one)", file=sys.stderr)
    return 0


def publish_readme(path: pathlib.Path, budget: str, header: report.Header, sections) -> None:
    """Rewrites the chapters' measured blocks in the published folder's README (full budget only)."""
    if not path.is_file():
        return
    if budget != "full":
        print(f"{path} left as it was: its chapter numbers come from the full budget only.", file=sys.stderr)
        return
    done = readme.update(path, sections, header.machine)
    if done:
        print(f"updated the measured lines of {len(done)} chapter{'s' if len(done) > 1 else ''} in {path}",
              file=sys.stderr)
