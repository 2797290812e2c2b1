"""Chapter 10, scaled out: one Transformer, every sharding strategy, on the devices there are.

    python experiments/10_transformer_sharded.py [--workdir runs/10_sharded] [--config configs/transformer_sharded.py]

    # eight simulated devices on a CPU:
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/10_transformer_sharded.py

For each strategy of the config (a ``parallel.mesh_shape``), the Shakespeare Transformer is
created directly sharded and trained with the library's sharded step; the script prints the
mesh, the bytes of parameters and optimiser state each device holds and the time per step,
and checks the claims: every strategy follows the one-device run's losses, and FSDP cuts
each device's share of the state. Writes ``results.json``.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

import jax
import ml_collections
import numpy as np

from p2t_jax.configuration import ConfigError, apply_overrides, load_config, require, require_positive
from p2t_jax.experiment import Claims, main
from p2t_jax.optim.chains import make_optimizer
from p2t_jax.parallel import footprint
from p2t_jax.parallel.partitioning import make_partitioner
from p2t_jax.tasks import language_model
from p2t_jax.training.loop import create_state, evaluate
from p2t_jax.training.steps import make_eval_step, make_train_step


def validate(config: ml_collections.ConfigDict) -> None:
    require_positive(config, "num_steps", "eval_batches", "loss_tolerance")
    require(len(config.strategies) >= 1, "config key 'strategies' must name at least one (name, mesh_shape).")
    for entry in config.strategies:
        require(isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str),
                f"config key 'strategies' must hold (name, mesh_shape) pairs, got {entry!r}.")
    language_model.validate(model_config(config, (1, 1, 1)))


def model_config(config: ml_collections.ConfigDict, mesh_shape) -> ml_collections.ConfigDict:
    c = load_config(f"{config.shakespeare_config}:{config.variant}")
    return apply_overrides(c, [f"data.source={config.data_source}", f"train.num_steps={config.num_steps + 1}",
                               f"train.eval_batches={config.eval_batches}",
                               f"parallel.mesh_shape={tuple(mesh_shape)}"])


def measure(c: ml_collections.ConfigDict, num_steps: int) -> dict:
    """Creates the sharded state, compiles the step, times ``num_steps`` steps, evaluates."""
    task = language_model.make_task(c)
    partitioner = make_partitioner(c, task.init_variables)
    print(f"  mesh: {partitioner.describe()}", flush=True)
    state = partitioner.init_state(lambda: create_state(task.init_variables, c))
    held = footprint.measure(state.params, state.opt_state, partitioner.batch_axes)  # the loop's start-up line
    _, schedule = make_optimizer(c.optim, c.train.num_steps)
    train_step = partitioner.jit_train_step(make_train_step(task.loss_fn, schedule), state)
    train_batch, eval_batches = partitioner.batch_readers(task)
    t0 = time.perf_counter()
    state, metrics = train_step(state, train_batch(0))  # compiles
    losses = [float(metrics["loss"])]
    compile_s = time.perf_counter() - t0
    batches = [train_batch(step) for step in range(1, num_steps + 1)]  # data placed before the clock starts
    jax.block_until_ready(batches)
    history = []
    t0 = time.perf_counter()
    for batch in batches:
        state, metrics = train_step(state, batch)
        history.append(metrics["loss"])
    jax.block_until_ready(state)
    ms_per_step = 1000 * (time.perf_counter() - t0) / num_steps
    losses += [float(x) for x in history]
    eval_step = partitioner.jit_eval_step(make_eval_step(task.loss_fn), state)
    val_loss = evaluate(eval_step, state, eval_batches())["loss"]
    return {"mesh": partitioner.describe(), "mesh_shape": list(partitioner.mesh.devices.shape),
            "devices": int(partitioner.mesh.size), "param_bytes_per_device": held.param_bytes,
            "opt_state_bytes_per_device": held.opt_bytes, "state_bytes_per_device": held.state_bytes,
            "ms_per_step": ms_per_step, "compile_s": compile_s,
            "tokens_per_s": 1000 * task.items_per_batch / ms_per_step,
            "losses": losses, "final_train_loss": losses[-1], "val_loss": val_loss}


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path, claims: Claims) -> dict:
    results, skipped = {}, {}
    print(f"{jax.device_count()} {jax.devices()[0].platform} device(s); variant {config.variant}, "
          f"{config.num_steps} timed steps per strategy")
    for name, mesh_shape in config.strategies:
        print(f"{name} {tuple(mesh_shape)}", flush=True)
        try:
            results[name] = r = measure(model_config(config, mesh_shape), config.num_steps)
        except ConfigError as e:
            skipped[name] = str(e)
            print(f"  skipped: {e}")
            continue
        print(f"  params {r['param_bytes_per_device'] / 1024:,.1f} KiB + optimiser "
              f"{r['opt_state_bytes_per_device'] / 1024:,.1f} KiB per device; {r['ms_per_step']:.1f} ms/step "
              f"({r['tokens_per_s']:,.0f} tokens/s), compile {r['compile_s']:.1f} s; "
              f"train loss {r['final_train_loss']:.4f}, val loss {r['val_loss']:.4f}", flush=True)

    if not results:  # nothing measured, nothing to compare: bad input, not a failed claim
        name, reason = next(iter(skipped.items()))
        raise ConfigError(f"none of the {len(skipped)} strategies in config.strategies can run on "
                          f"{jax.device_count()} device(s) (the first, '{name}': {reason.rstrip('.')}); "
                          f"choose mesh shapes that fit the devices.")
    header = ("| strategy | mesh (data, fsdp, tensor) | devices | params KiB / device | optimiser KiB / device "
              "| ms / step | train loss |")
    rows = [header, "|---|---|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        rows.append(f"| {name} | {tuple(r['mesh_shape'])} | {r['devices']} | "
                    f"{r['param_bytes_per_device'] / 1024:,.1f} | {r['opt_state_bytes_per_device'] / 1024:,.1f} | "
                    f"{r['ms_per_step']:.1f} | {r['final_train_loss']:.4f} |")
    table = "\n".join(rows)
    print(table)

    base = results.get("one device")
    if base is not None:
        gaps = {n: float(np.max(np.abs(np.subtract(r["losses"], base["losses"])))) for n, r in results.items()}
        claims.check("strategies_follow_one_device", max(gaps.values()) <= config.loss_tolerance,
                     f"every strategy's per-step train loss stays within {config.loss_tolerance:g} of one device's",
                     gaps)
    if "fsdp" in results and "data" in results and results["fsdp"]["devices"] > 1:
        n = results["fsdp"]["devices"]
        ratio = results["fsdp"]["state_bytes_per_device"] / results["data"]["state_bytes_per_device"]
        claims.check("fsdp_shrinks_state_per_device", ratio <= 2 / n,
                     f"FSDP over {n} devices holds at most 2/{n} of data parallel's state bytes per device", ratio)
    return {"strategies": results, "skipped": skipped, "table": table, "device_count": jax.device_count(),
            "platform": jax.devices()[0].platform, "xla_flags": os.environ.get("XLA_FLAGS", "")}


def cli(argv=None) -> int:
    """The command line: ``--workdir``, ``--config``, ``--config.KEY=VALUE``; returns the exit status."""
    return main(run, script=__file__,
                description="Chapter 10, scaled out: sharding strategies", default_workdir="runs/10_sharded",
                default_config="configs/transformer_sharded.py", validate=validate, argv=argv)


if __name__ == "__main__":
    sys.exit(cli())
