"""CPU seconds of one chapter-7 net trained through ``ic.train_or_reuse`` (its per-net fixed cost).

    python bench/one_deep_net.py [DEPTH] [WORKDIR]

The ``configs/deep_nets.py`` net (residual, batch norm) at DEPTH (30) for 2 epochs (124 steps),
in WORKDIR (replaced); prints the process's CPU seconds (user + sys, every thread) for the call,
its wall seconds, and the numbers that must not change (losses, accuracy).
"""

import json
import pathlib
import resource
import shutil
import sys
import time

from p2t_jax.configuration import load_config
from p2t_jax.data import image_datasets
from p2t_jax.tasks import image_classification as ic


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    config = load_config("configs/deep_nets.py")
    config.train.num_epochs = 2
    config.model.depth = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    workdir = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "/tmp/one_deep_net")
    shutil.rmtree(workdir, ignore_errors=True)
    d = config.data
    splits, source = image_datasets.load_splits(d.source, d.name, d.tfds_data_dir or None)
    cpu0, wall0 = cpu_s(), time.time()
    r = ic.train_or_reuse(ic.run_config(config), workdir, splits, source)
    print(json.dumps({"cpu_s": round(cpu_s() - cpu0, 2), "wall_s": round(time.time() - wall0, 2),
                      "train_loss": r["splits"]["train"]["loss"], "test_accuracy": r["test_accuracy"],
                      "first_step_loss": r["first_step"]["loss"]}))


if __name__ == "__main__":
    main()
