"""Are two runs of the same training bit-for-bit equal on this backend? (A GPU's are not by default.)

    python bench/determinism.py [KEY=VALUE ...]
    XLA_FLAGS=--xla_gpu_deterministic_ops=true python bench/determinism.py

Trains the ``smoke`` Shakespeare recipe (40 steps; no checkpoints or evaluations on the way)
twice in this process, through the library's loop and the same compiled step, and prints how
many parameter arrays differ between the two runs and by how much at most. On a CPU: none.
On an NVIDIA H200 (jax 0.11.2) without XLA's deterministic operations all 30 differed (largest
difference 0.063); with them none (README, "What ran on real hardware"). ``KEY=VALUE``
overrides the config (e.g. ``train.num_steps=100``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from p2t_jax.host_memory import keep_freed_host_memory  # noqa: E402

keep_freed_host_memory()  # before JAX starts, as the p2t command does

import jax  # noqa: E402
import numpy as np  # noqa: E402

from p2t_jax.configuration import apply_overrides, load_config  # noqa: E402
from p2t_jax.tasks import language_model  # noqa: E402
from p2t_jax.training.loop import train_and_evaluate  # noqa: E402


def main(overrides: list[str]) -> None:
    config = apply_overrides(load_config(str(Path(__file__).resolve().parent.parent / "configs" / "shakespeare.py")
                                         + ":smoke"),
                             ["train.checkpoint_every=1000", "train.eval_every=1000", *overrides])
    params = []
    for _ in range(2):
        with tempfile.TemporaryDirectory() as workdir:
            state, _ = train_and_evaluate(language_model.make_task(config), config, workdir, progress=False)
            params.append(jax.tree.map(np.asarray, state.params))
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), *params))
    print(f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}); two runs of {config.train.num_steps} "
          f"steps: {sum(d > 0 for d in diffs)} of {len(diffs)} parameter arrays differ, largest difference "
          f"{max(diffs):.3g}")


if __name__ == "__main__":
    main(sys.argv[1:])
