"""A/B of the Transformer's training step: today's model code against the model code of a git revision,
or against today's code under other config values.

    python bench/ab_step.py --against REV [--file p2t_jax/models/FILE.py] [--rounds 8] [--steps 30] [--config ...]
                            [--config.model.x=y ...]
    python bench/ab_step.py --against-config model.attention_impl=xla [--against-config KEY=VALUE ...] [...]

Loads ``p2t_jax/models/transformer.py`` (or ``--file``, another module of ``p2t_jax/models``) as it
was at ``REV`` (``git show``) beside today's, builds both models from the same config, checks
that their first losses agree, then times their jitted train steps (the library's
``make_train_step``, same optimiser) in alternating rounds in one process, so both see the
same machine. Prints each median ms/step and the ratio new / old. Only that file is swapped:
the rest of the library is today's. For a ``--file`` other than the Transformer's, the old
step is traced with the names that file defines replaced, wherever the package imported them,
by the revision's (e.g. ``blocked_attention`` in ``p2t_jax/models/attention.py``).
With ``--against-config KEY=VALUE`` (repeatable) instead, the baseline is today's code with
those config values on top of the command line's (e.g. one attention kernel against another).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODEL_FILE = "p2t_jax/models/transformer.py"


def load_model_module(rev: str, file: str = MODEL_FILE):
    """The module ``file`` as it was at git revision ``rev``."""
    try:
        source = subprocess.run(["git", "show", f"{rev}:{file}"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout
    except subprocess.CalledProcessError as e:
        sys.exit(f"error: cannot read {file} at revision '{rev}' ({e.stderr.strip().splitlines()[-1]}).")
    name = f"{Path(file).stem}_at_rev"
    path = Path(tempfile.mkdtemp(prefix="p2t_ab_")) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def swapped(file: str, old_module):
    """Within the block, every name that ``file``'s module (today's) defines and that a module of the
    package imported from it is bound to ``old_module``'s object of that name instead."""
    import importlib

    today = importlib.import_module(file.removesuffix(".py").replace("/", "."))
    patches = []
    for module in [m for n, m in sys.modules.items() if n.startswith("p2t_jax.") and m is not None]:
        for name, value in vars(today).items():
            if callable(value) and getattr(value, "__module__", None) == today.__name__ and hasattr(old_module, name):
                for attr, bound in list(vars(module).items()):
                    if bound is value:
                        patches.append((module, attr, value))
                        setattr(module, attr, getattr(old_module, name))
    try:
        yield len(patches)
    finally:
        for module, attr, value in patches:
            setattr(module, attr, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", help="git revision whose model file is the baseline")
    parser.add_argument("--file", default=MODEL_FILE,
                        help=f"with --against: the model file swapped (default {MODEL_FILE})")
    parser.add_argument("--against-config", action="append", default=[], metavar="KEY=VALUE",
                        help="instead of --against: the baseline is today's code with this config value (repeatable)")
    parser.add_argument("--config", default="configs/shakespeare.py:nanogpt_cpu")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    args, rest = parser.parse_known_args()
    if bool(args.against) == bool(args.against_config):
        sys.exit("error: give either --against REV or --against-config KEY=VALUE (one or more), not both or neither.")

    from p2t_jax.host_memory import keep_freed_host_memory

    keep_freed_host_memory()
    import harness
    import jax
    import numpy as np

    from p2t_jax.tasks import language_model

    print(harness.machine_line())
    load_start = os.getloadavg()
    config = harness.load(args.config, harness.config_overrides(rest))
    new_model = language_model.make_model(config)
    swap = contextlib.nullcontext
    if args.against and args.file != MODEL_FILE:
        old_module = load_model_module(args.against, args.file)
        swap = lambda: swapped(args.file, old_module)  # noqa: E731
        old_model = language_model.make_model(config)
        old_name = f"{Path(args.file).name} at {args.against}"
    elif args.against:
        old = load_model_module(args.against)
        known = {f.name for f in dataclasses.fields(old.TransformerConfig)}  # fields added since REV are left out
        old_model = old.Transformer(old.TransformerConfig(**{k: v for k, v in dataclasses.asdict(new_model.cfg).items()
                                                             if k in known}))
        old_name = f"at {args.against}"
    else:
        old_model = language_model.make_model(harness.load(args.config, [*harness.config_overrides(rest),
                                                                         *args.against_config]))
        old_name = "with " + " ".join(args.against_config)
    batch = harness.random_lm_batch(config, np.random.default_rng(0))

    contenders = {}
    for name, model in ((old_name, old_model), ("today", new_model)):
        step, state = harness.lm_train_step(config, model)
        with swap() if name == old_name else contextlib.nullcontext():
            compiled = step.lower(state, batch).compile()
        losses = []
        for _ in range(5):
            state, metrics = compiled(state, batch)
            losses.append(float(metrics["loss"]))
        print(f"{name}: losses of the first steps {', '.join(f'{x:.6f}' for x in losses)}")
        contenders[name] = {"step": compiled, "state": state, "ms": []}
    for _ in range(args.rounds):
        for c in contenders.values():
            time.sleep(0.2)
            for _ in range(args.steps):
                t0 = time.perf_counter()
                c["state"], metrics = c["step"](c["state"], batch)
                jax.block_until_ready(metrics)
                c["ms"].append(1000 * (time.perf_counter() - t0))
    (old_name, old_c), (new_name, new_c) = contenders.items()
    old_ms, new_ms = statistics.median(old_c["ms"]), statistics.median(new_c["ms"])
    print(f"{old_name}: {old_ms:.2f} ms/step; {new_name}: {new_ms:.2f} ms/step; ratio today / old: {new_ms / old_ms:.3f}")
    print(f"load average (1 min) {load_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end, "
          f"on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
