"""The loop's batch prefetch: batches keyed by step, read ahead, errors raised when their step is due."""

import pytest

from p2t_jax.training.prefetch import Prefetcher


def _reader(log, fail_at=None):
    def read(step):
        log.append(("read", step))
        if step == fail_at:
            raise ValueError(f"batch {step} is unreadable")
        return {"step": step}
    return read


def _place(log):
    def place(batch):
        log.append(("place", batch["step"]))
        return dict(batch, placed=True)
    return place


def test_batches_come_ahead_placed_and_in_step_order():
    log = []
    feed = Prefetcher(_reader(log), _place(log), depth=2, end=5)
    got = []
    for step in range(5):
        got.append(feed.get(step))
        feed.fill(step + 1)  # as the loop does once step's computation is dispatched
    assert [b["step"] for b in got] == [0, 1, 2, 3, 4] and all(b["placed"] for b in got)
    reads = [s for what, s in log if what == "read"]
    assert reads == [0, 1, 2, 3, 4]  # each batch read once; none past the end
    assert log[:6] == [("read", 0), ("place", 0), ("read", 1), ("place", 1), ("read", 2), ("place", 2)]


def test_without_prefetch_each_batch_is_read_when_its_step_asks_and_not_placed():
    log = []
    feed = Prefetcher(_reader(log), _place(log), depth=0, end=3)
    assert feed.get(0) == {"step": 0}
    feed.fill(1)
    assert log == [("read", 0)]


def test_an_unreadable_batch_raises_when_its_step_is_due():
    log = []
    feed = Prefetcher(_reader(log, fail_at=2), _place(log), depth=3, end=10)
    assert feed.get(0)["step"] == 0
    feed.fill(1)  # reads 1 and 2 (fails, kept), and stops reading past the failure
    assert [s for what, s in log if what == "read"] == [0, 1, 2]
    assert feed.get(1)["step"] == 1
    feed.fill(2)
    with pytest.raises(ValueError, match="batch 2 is unreadable"):
        feed.get(2)


def test_a_step_out_of_order_reads_its_own_batch():
    log = []
    feed = Prefetcher(_reader(log), _place(log), depth=2, end=10)
    feed.fill(0)
    assert feed.get(5)["step"] == 5  # what was read ahead for other steps is dropped
    assert feed.get(6)["step"] == 6
