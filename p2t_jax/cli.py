"""The ``p2t`` command: ``p2t train | sweep | sample | eval | playground | reproduce``.

Examples::

    p2t train  --config configs/shakespeare.py:small --workdir runs/small [--config.train.num_steps=500]
    p2t sweep  --config configs/shakespeare.py:nanogpt_cpu --workdir runs/lr_sweep \
               --sweep optim.learning_rate=1e-3,3e-3 --sweep seed=0,1
    p2t sample --workdir runs/small --prompt "ROMEO:" --max-new-tokens 300 --temperature 0.8 --top-k 40 --seed 0
    p2t eval   --workdir runs/small
    p2t playground [--port 8501] [--runs runs] [--host 127.0.0.1] [--make-runs]
    p2t reproduce  [--chapters 1,4,10] [--budget full|quick] [--out runs/reproduce] [--jobs 2]

Bad input (a config value, an argument, a prompt, a path, a checkpoint) is reported in one
sentence on stderr with exit code 2; nothing on disk is changed by a failed command. A
training run that stops early says why in one sentence and exits 3 (diverged), 4 (a save
failed) or 129 / 130 / 143 (SIGHUP / SIGINT / SIGTERM, after saving): see
p2t_jax.training.stopping. One run at a time per workdir: a second `p2t train` there is refused
(exit 2), naming the process that holds it.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys

from p2t_jax.runs import UsageError, load_run

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one sentence, exit 2
        raise UsageError(f"{self.prog}: {message}.")


DETERMINISTIC_HELP = ("bit-reproducible steps on a GPU, so that a resumed run equals an uninterrupted one (XLA's "
                      "deterministic operations; the gpu recipe's step 1.46x slower on an H200); a CPU's are so already")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="p2t", description="From perceptrons to transformers: train, sample and evaluate.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="train (or resume) a run in --workdir",
                           epilog="Override any config field with --config.path.to.key=value.")
    train.add_argument("--config", default="configs/shakespeare.py:small",
                       help="config file and variant, e.g. configs/shakespeare.py:large")
    train.add_argument("--workdir", required=True, help="run folder; an existing checkpoint there is resumed")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.add_argument("--allow-change", action="append", default=[], metavar="KEY",
                       help="on resume, let config KEY (or a group such as optim) differ from the saved run's; "
                            "repeatable; each change is recorded in metrics.jsonl")
    train.add_argument("--deterministic", action="store_true",
                       help=DETERMINISTIC_HELP)

    sweep = sub.add_parser("sweep", help="train (or resume) many runs of one config in one compiled step",
                           epilog="Members are every combination of the --sweep values; member i equals the run "
                                  "`p2t train` makes with its values. Override any config field with "
                                  "--config.path.to.key=value.")
    sweep.add_argument("--config", default="configs/shakespeare.py:small",
                       help="config file and variant, e.g. configs/shakespeare.py:nanogpt_cpu")
    sweep.add_argument("--workdir", required=True, help="sweep folder; an existing checkpoint there is resumed")
    sweep.add_argument("--sweep", action="append", required=True, metavar="KEY=V1,V2,...",
                       help="a swept key and its values: seed, a numeric optim.* key, or a model/loss key the task "
                            "takes traced, e.g. model.dropout_rate (repeatable: a grid)")
    sweep.add_argument("--chunk", type=int, default=0,
                       help="members per vmapped group, to bound memory; divides the members (0: the most whose "
                            "compiled step fits the free memory, said at the start)")
    sweep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sweep.add_argument("--deterministic", action="store_true",
                       help=DETERMINISTIC_HELP)

    sample = sub.add_parser("sample", help="generate text from a trained run")
    sample.add_argument("--workdir", required=True)
    sample.add_argument("--prompt", default="ROMEO:")
    sample.add_argument("--max-new-tokens", type=int, default=300)
    sample.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    sample.add_argument("--top-k", type=int, default=40, help="0 keeps every token")
    sample.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]; 1 keeps all")
    sample.add_argument("--no-cache", action="store_true",
                        help="recompute the whole window for every token instead of using the key/value cache")
    sample.add_argument("--stride", type=int, default=0,
                        help="with the cache: positions dropped when it is full (0: a quarter of the context)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--num-samples", type=int, default=1)
    sample.add_argument("--best", action="store_true", help="use the best checkpoint by validation loss")

    evaluate = sub.add_parser("eval", help="validation loss of a trained run")
    evaluate.add_argument("--workdir", required=True)
    evaluate.add_argument("--batches", type=int, default=0, help="validation batches (0: the config's eval_batches)")
    evaluate.add_argument("--best", action="store_true", help="use the best checkpoint by validation loss")

    playground = sub.add_parser("playground",
                                help="the interactive web app (needs the app extra: pip install -e '.[app]')")
    playground.add_argument("--port", type=int, default=8501)
    playground.add_argument("--host", default="127.0.0.1", help="address to serve on; anything but this machine warns")
    playground.add_argument("--runs", default="runs", help="folder of run folders the pages read")
    playground.add_argument("--make-runs", action="store_true",
                            help="first write every run folder the pages read into --runs: the quick budget of "
                                 "`p2t reproduce` (small runs), then serve")

    from p2t_jax.reproduce import command as reproduce_command

    reproduce = sub.add_parser("reproduce", help=reproduce_command.HELP, epilog=reproduce_command.EPILOG,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    reproduce_command.add_arguments(reproduce)
    return parser


def cmd_train(args, overrides) -> int:
    from p2t_jax import configuration, tasks

    config = configuration.load_config(args.config)
    configuration.apply_overrides(config, overrides)
    task_module = tasks.module(tasks.task_name(config))
    task_module.validate(config)
    if "parallel" in config:  # a multi-process run joins up before anything touches the devices
        from p2t_jax.parallel import distributed

        distributed.initialize(config.parallel)
    import jax

    from p2t_jax.training.loop import parameter_count, train_and_evaluate

    say = print if jax.process_index() == 0 else (lambda *_: None)  # only process 0 writes logs
    task, config = task_module.build(config)
    if hasattr(task_module, "describe"):
        say(f"data: {task_module.describe(task)}")
    state, summary = train_and_evaluate(task, config, args.workdir, progress=not args.no_progress,
                                        allow_change=args.allow_change)
    say(f"model: {tasks.task_name(config)} ({config.get('variant', 'default')}), "
        f"{parameter_count(state.params):,} parameters; steps {summary['start_step']} -> {summary['final_step']}")
    if summary.get("eval"):
        say(f"eval loss {summary['eval']['loss']:.4f}  train loss {summary['train'].get('loss', math.nan):.4f}")
    items = f"{task.items_name}_per_s"
    if summary.get("ms_per_step_median"):
        say(f"median {summary['ms_per_step_median']:.1f} ms/step, {summary[items]:,.0f} {task.items_name}/s, "
            f"first-step compile {summary['compile_s']:.2f} s")
    say(f"run folder: {args.workdir}")
    return 0


def cmd_sweep(args, overrides) -> int:
    from p2t_jax import configuration, tasks
    from p2t_jax.training.sweep import build_sweep, parse_axis

    config = configuration.load_config(args.config)
    configuration.apply_overrides(config, overrides)
    task_module = tasks.module(tasks.task_name(config))
    task_module.validate(config)
    axes = [parse_axis(spec, config) for spec in args.sweep]
    seen = [k for k, _ in axes]
    repeated = sorted({k for k in seen if seen.count(k) > 1})
    if repeated:
        raise UsageError(f"--sweep names '{repeated[0]}' twice; give all its values in one --sweep.")
    if args.chunk < 0:
        raise UsageError(f"--chunk must be >= 0 (0: all members at once), got {args.chunk}.")
    saved = _saved_config(args.workdir)
    if saved is not None and "sweep" not in saved:
        raise UsageError(f"workdir '{args.workdir}' holds a run of `p2t train`, not a sweep; choose a new --workdir.")
    task, config, members = build_sweep(task_module.build, task_module.validate, config, axes, chunk=args.chunk)
    if hasattr(task_module, "describe"):
        print(f"data: {task_module.describe(task)}")
    print(f"sweep: {members.count} members ({' x '.join(f'{len(v)} {k}' for k, v in axes)})")
    from p2t_jax.training import workdir_lock

    with workdir_lock.hold(args.workdir):  # the table and figure are written under the same lock as the training
        _run_sweep(task, config, members, args)
    print(f"sweep folder: {args.workdir}")
    return 0


def _run_sweep(task, config, members, args) -> None:
    """Trains the sweep (the one loop) and writes its table and figure."""
    import jax

    from p2t_jax import tasks
    from p2t_jax.training.loop import parameter_count, train_and_evaluate
    from p2t_jax.training.metrics import write_json
    from p2t_jax.viz.sweep_figures import sweep_figure, sweep_table

    state, summary = train_and_evaluate(task, config, args.workdir, progress=not args.no_progress, members=members)

    print(f"model: {tasks.task_name(config)} ({config.get('variant', 'default')}), "
          f"{parameter_count(jax.tree.map(lambda x: x[0], state.params)):,} parameters per member; "
          f"steps {summary['start_step']} -> {summary['final_step']}")
    workdir = pathlib.Path(args.workdir)
    evals, trains = summary.get("eval") or [], summary.get("train") or []
    if len(evals) == members.count and len(trains) == members.count:
        table = sweep_table(members.labels, evals, trains)
        (workdir / "sweep.md").write_text(table)
        figure = sweep_figure(members.labels, evals, workdir / "sweep.png")
        write_json(workdir / "sweep.json", [dict(member=i, **label, eval_loss=ev.get("loss"),
                                                 train_loss=tr.get("loss"))
                                            for i, (label, ev, tr) in enumerate(zip(members.labels, evals, trains))])
        print(table, end="")
        print(f"table: {workdir / 'sweep.md'}  figure: {figure}")
    if summary.get("ms_per_step_median"):
        print(f"median {summary['ms_per_step_median']:.1f} ms/step for all {members.count} members, "
              f"first-step compile {summary['compile_s']:.2f} s")


def _saved_config(workdir: str) -> dict | None:
    """The workdir's config.json as a dict; None when it is missing or does not read as one (the
    loop and ``load_run`` name what is wrong with it)."""
    try:
        saved = json.loads((pathlib.Path(workdir) / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def _refuse_sweep(args) -> None:
    """A sweep folder holds many stacked runs, which `p2t eval` and `p2t sample` do not read."""
    saved = _saved_config(args.workdir)
    if saved is not None and "sweep" in saved:
        raise UsageError(f"workdir '{args.workdir}' holds a sweep of `p2t sweep` (many runs stacked), not one run; "
                         f"`p2t {args.command}` reads a run of `p2t train`: train the chosen member's config alone "
                         f"(its values are in {pathlib.Path(args.workdir) / 'members.json'}).")


def _restore(args, overrides=()):
    """(config, Task, TrainState) of the run in ``args.workdir`` (newest readable or ``--best`` checkpoint).

    ``overrides`` may change only what does not change the trained model: ``train.*`` and ``data.*``.
    """
    _refuse_sweep(args)
    config = load_run(args.workdir)
    from p2t_jax import configuration, tasks
    from p2t_jax.training.loop import restore_state

    for item in overrides:
        group = item.split(".", 1)[0]
        if group not in ("train", "data"):
            raise UsageError(f"`p2t {args.command}` uses the run as it was trained; --config.{item.split('=')[0]} "
                             f"cannot change (only train.* and data.* fields may).")
    configuration.apply_overrides(config, overrides)
    task, config = tasks.build(config)
    state, _ = restore_state(task.init_variables, config, args.workdir, best=args.best)
    return config, task, state


def cmd_sample(args, overrides) -> int:
    if overrides:
        raise UsageError("`p2t sample` takes no --config overrides; the run's own config is used.")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    if args.temperature < 0 or not math.isfinite(args.temperature):
        raise UsageError(f"--temperature must be a finite number >= 0, got {args.temperature}.")
    if args.top_k < 0:
        raise UsageError(f"--top-k must be >= 0, got {args.top_k}.")
    if not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1], got {args.top_p}.")
    if args.stride < 0:
        raise UsageError(f"--stride must be >= 0, got {args.stride}.")
    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be at least 1, got {args.num_samples}.")
    if not args.prompt:
        raise UsageError("--prompt must hold at least one character.")
    from p2t_jax import tasks

    _refuse_sweep(args)
    name = tasks.task_name(load_run(args.workdir))
    if not tasks.can_sample(name):
        raise UsageError(f"the run in '{args.workdir}' is of the '{name}' task, which does not generate text; "
                         f"`p2t eval` evaluates it.")
    from p2t_jax.tasks import language_model

    task_module = tasks.module(name)
    if not callable(getattr(task_module, "decoder", None)):
        raise UsageError(f"the '{name}' task sets CAN_SAMPLE but defines no decoder(config) -> "
                         f"p2t_jax.models.decoder.Decoder, so `p2t sample` cannot run its model.")
    load_tokenizer = getattr(task_module, "load_tokenizer", language_model.load_tokenizer)
    tokenizer = load_tokenizer(pathlib.Path(args.workdir))
    bad = tokenizer.unknown_chars(args.prompt)
    if bad:
        raise UsageError(f"the prompt holds {''.join(bad)!r}, which is not in the model's "
                         f"{tokenizer.vocab_size}-character vocabulary.")
    config = load_run(args.workdir)
    decoder = task_module.decoder(config)
    cached = decoder.cached_model is not None and not args.no_cache
    if cached and args.stride >= decoder.context:
        raise UsageError(f"--stride must be below the model's context of {decoder.context}, got {args.stride}.")
    total = len(args.prompt) + args.max_new_tokens
    if total > 2**31 - 1:
        raise UsageError(f"--max-new-tokens must be below {2**31 - 1 - len(args.prompt):,}, got {args.max_new_tokens:,}.")
    from p2t_jax.resources import require_memory

    require_memory(args.num_samples * (8 * total + decoder.bytes_per_sample),
                   f"sampling {args.num_samples:,} x {args.max_new_tokens:,} tokens",
                   "lower --num-samples or --max-new-tokens")
    from p2t_jax.training.loop import restore_state

    state, _ = restore_state(decoder.init_variables, config, args.workdir, best=args.best)

    import jax
    import jax.numpy as jnp

    from p2t_jax.sampling import generate, generate_cached

    prompt = jnp.tile(jnp.asarray(tokenizer.encode(args.prompt))[None], (args.num_samples, 1))
    stream = args.num_samples == 1 and sys.stdout.isatty()
    if stream:  # one sample to a terminal: print each character as it is produced
        print(args.prompt, end="", flush=True)

    def stream_fn(i, tokens):
        print(tokenizer.decode(tokens[:1]), end="", flush=True)

    kw = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
              top_p=args.top_p, stream_fn=stream_fn if stream else None)
    rng = jax.random.PRNGKey(args.seed)
    if cached:
        out = generate_cached(decoder.cached_model, state.params, prompt, rng, stride=args.stride, **kw)
    else:  # no cache (asked for, or the model has none): the window recomputed for every token
        out = generate(decoder.logits_fn, state.params, prompt, rng, context=decoder.context, **kw)
    out = jax.device_get(out)
    if stream:
        jax.effects_barrier()
        print()
        return 0
    for i, row in enumerate(out):
        if args.num_samples > 1:
            print(f"--- sample {i} ---")
        print(tokenizer.decode(row))
    return 0


def cmd_eval(args, overrides) -> int:
    if args.batches < 0:
        raise UsageError(f"--batches must be >= 0, got {args.batches}.")
    config, task, state = _restore(args, overrides)
    import itertools

    import jax

    from p2t_jax.training.loop import evaluate
    from p2t_jax.training.steps import make_eval_step

    batches = task.eval_batches()
    if args.batches:
        batches = itertools.islice(batches, args.batches)
    metrics = evaluate(jax.jit(make_eval_step(task.loss_fn)), state, batches)
    print(json.dumps({"step": int(state.step), **{k: round(v, 5) for k, v in metrics.items()}}))
    return 0


def cmd_playground(args, overrides) -> int:
    if overrides:
        raise UsageError("`p2t playground` takes no --config overrides.")
    from p2t_jax.playground import launch

    return launch.serve(host=args.host, port=args.port, runs=args.runs, make=args.make_runs)


def cmd_reproduce(args, overrides) -> int:
    if overrides:
        raise UsageError("`p2t reproduce` takes no --config overrides; give a chapter's with --set N:KEY=VALUE.")
    from p2t_jax.reproduce import command

    return command.run(args)


def _deterministic() -> None:
    """``--deterministic``: XLA's deterministic GPU operations, set before JAX starts (p2t_jax.xla_flags)."""
    from p2t_jax import xla_flags

    try:
        xla_flags.deterministic()
    except ValueError as e:
        raise UsageError(f"--deterministic: {e}") from None


def main(argv: list[str] | None = None) -> int:
    """Runs the command; returns its exit status (0, or see p2t_jax.training.stopping)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before training started (while importing, loading data, compiling)
        from p2t_jax.training.stopping import abort_on_further_signals

        abort_on_further_signals(130)
        print("\ninterrupted before training started; nothing new was written.", file=sys.stderr)
        return 130


def _main(argv: list[str] | None) -> int:
    from p2t_jax.host_memory import keep_freed_host_memory

    keep_freed_host_memory()  # before JAX starts its threads (CPU backend only; see p2t_jax.host_memory)
    from p2t_jax.configuration import ConfigError, split_overrides
    from p2t_jax.data.cache import DataUnavailableError
    from p2t_jax.training.checkpoint import CheckpointError
    from p2t_jax.training.stopping import RunStopped

    argv = list(sys.argv[1:] if argv is None else argv)
    rest, overrides = split_overrides(argv)
    try:
        args = _build_parser().parse_args(rest)
        if getattr(args, "deterministic", False):
            _deterministic()
        handler = {"train": cmd_train, "sweep": cmd_sweep, "sample": cmd_sample, "eval": cmd_eval,
                   "playground": cmd_playground, "reproduce": cmd_reproduce}[args.command]
        return handler(args, overrides)
    except (UsageError, ConfigError, CheckpointError, DataUnavailableError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except RunStopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # out of memory inside a compiled computation: still one sentence
        if "RESOURCE_EXHAUSTED" not in str(e):
            raise
        print(f"error: out of memory ({str(e).splitlines()[0][:160]}); use a smaller batch, model or "
              f"--num-samples.", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
