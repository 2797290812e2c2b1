"""A real ``p2t`` process on the test passage (no download), for the fault tests.

Usage: ``python fault_worker.py ARGS...`` runs ``p2t ARGS...`` (e.g. ``train --config
shakespeare:smoke --workdir W``) with the Shakespeare corpus replaced by the test passage,
and exits with its status. With ``SLOW_SAVE_S`` in the environment every checkpoint save
first sleeps that long (a window in which to send a second signal); with ``HOLD_SAVE_UNTIL`` (a
path) every save after the first waits until that file exists (a run held open after its first
checkpoint, with its lock, for as long as a test needs); with ``SLOW_EXIT_S`` the
interpreter's exit handlers start with a sleep that long, announced by the line
``exit handlers running`` on stderr (a window after the command has returned). Signals reach the real
command: nothing here handles them, except a Ctrl-C while this script itself is still
importing (exit 130, as ``p2t`` does).
"""

import os
import pathlib
import sys
import time


def run(argv: list[str]) -> int:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    from conftest import PASSAGE

    from p2t_jax import cli
    from p2t_jax.data import shakespeare

    texts = {"train": PASSAGE * 40, "validation": PASSAGE * 4}
    shakespeare.load_texts = lambda source="auto", data_dir=None: (dict(texts), "test:passage")
    if os.environ.get("SLOW_SAVE_S"):
        from p2t_jax.training.checkpoint import Checkpoints

        save = Checkpoints.save

        def slow_save(self, *args, **kwargs):
            time.sleep(float(os.environ["SLOW_SAVE_S"]))
            return save(self, *args, **kwargs)

        Checkpoints.save = slow_save
    if os.environ.get("HOLD_SAVE_UNTIL"):
        from p2t_jax.training.checkpoint import Checkpoints

        release, save_now, saves = pathlib.Path(os.environ["HOLD_SAVE_UNTIL"]), Checkpoints.save, []

        def held_save(self, *args, **kwargs):
            deadline = time.monotonic() + 300
            while saves and not release.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            saves.append(1)
            return save_now(self, *args, **kwargs)

        Checkpoints.save = held_save
    if os.environ.get("SLOW_EXIT_S"):
        import atexit

        def slow_exit():
            os.write(2, b"exit handlers running\n")
            time.sleep(float(os.environ["SLOW_EXIT_S"]))

        atexit.register(slow_exit)  # registered first, so it runs after JAX's and Orbax's own handlers
    return cli.main(argv)


if __name__ == "__main__":
    try:
        sys.exit(run(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
