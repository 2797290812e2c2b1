"""Orbax's event loops end cleanly: a save, and restores that fail half-way (a shape the save
does not have, a truncated file), leave nothing for the garbage collector to report later
(``RuntimeError: Event loop is closed``, coroutines that ignore their close)."""

import gc
import sys
import time

import jax
import numpy as np
import pytest

from p2t_jax.training import checkpoint as ckpt


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_save_and_failed_restores_leave_no_unraisable_exception(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(f"{u.err_msg or 'ignored'}: {u.exc_value!r:.120}"))
    items = {f"w{i}": np.arange(200_000, dtype=np.float32) + i for i in range(12)}
    saving = ckpt.Checkpoints(tmp_path, keep=2)
    saving.save(1, items, {})
    saving.close()

    reader = ckpt.Checkpoints(tmp_path, write=False)
    for i in (0, 5, 11):  # one array of another shape: its read fails while the others are in flight
        other = dict(items, **{f"w{i}": np.zeros(100_000, np.float32)})
        with pytest.raises(ckpt.ConfigMismatch, match=f"'w{i}' is saved with shape"):
            reader.restore(jax.eval_shape(lambda: other), step=1)  # noqa: B023
    files = sorted((p for p in (tmp_path / "checkpoints" / "1" / "state").rglob("*") if p.is_file()),
                   key=lambda p: p.stat().st_size)
    files[-1].write_bytes(files[-1].read_bytes()[: files[-1].stat().st_size // 3])
    with pytest.raises(ckpt.CheckpointError, match="cannot be read"):
        reader.restore(jax.eval_shape(lambda: items), step=1)
    reader.close()
    time.sleep(0.5)  # reads still in flight would report from their own threads by now
    gc.collect()
    assert seen == []
