"""One process of a multi-process run on loopback, started by test_multihost.py.

Usage: ``python multihost_worker.py WORKDIR RECORD_JSON [--config.key=value ...]``, with
``P2T_COORDINATOR_ADDRESS``, ``P2T_NUM_PROCESSES``, ``P2T_PROCESS_ID``, ``JAX_PLATFORMS=cpu`` and
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` in the environment. Runs ``p2t train``
on the test passage (no download) and records which batch rows this process read.
"""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from conftest import PASSAGE  # noqa: E402

from p2t_jax import cli  # noqa: E402
from p2t_jax.data import shakespeare  # noqa: E402
from p2t_jax.data.lm import LMBatches  # noqa: E402


def main(workdir: str, record: str, overrides: list[str]) -> int:
    texts = {"train": PASSAGE * 40, "validation": PASSAGE * 4}
    shakespeare.load_texts = lambda source="auto", data_dir=None: (dict(texts), "test:passage")
    rows_read = []
    original = LMBatches.train_batch

    def recording(self, step, rows=None):
        rows_read.append(None if rows is None else [rows.start, rows.stop])
        return original(self, step, rows=rows)

    LMBatches.train_batch = recording
    code = cli.main(["train", "--config", "shakespeare:smoke", "--workdir", workdir, "--no-progress", *overrides])
    import jax

    pathlib.Path(record).write_text(json.dumps({"code": code, "process_index": jax.process_index(),
                                                "process_count": jax.process_count(),
                                                "device_count": jax.device_count(), "rows": rows_read}))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
