"""Training batches read and placed on the devices ahead of the step that uses them.

The loop dispatches a step asynchronously and, while the devices run it, reads the next
``depth`` batches and starts their transfers (``jax.device_put`` with the step's input
sharding), so the step after finds its batch already on the devices. Batches are keyed by
step (the data position), so prefetching never changes which batch a step gets, and resume
stays exact. A batch that cannot be read raises when its step is due, not earlier: a run
stops at the same step with or without prefetching.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any


class Prefetcher:
    """``get(step)``: the batch of ``step``; ``fill(step)``: read and place the batches of
    ``step, step + 1, ...`` (at most ``depth`` ahead, none at or past ``end``).

    Args:
      read: ``step -> batch`` (host arrays, or arrays already placed).
      place: ``batch -> batch`` on the devices (``jax.device_put`` with the step's shardings);
        it should return at once and let the transfer run.
      depth: how many batches to hold ahead; 0 reads each batch when its step asks for it.
      end: the first step not to read (the run's last step + 1).
    """

    def __init__(self, read: Callable[[int], Any], place: Callable[[Any], Any], depth: int, end: int):
        self.read, self.place, self.depth, self.end = read, place, depth, end
        self.ahead: collections.deque = collections.deque()  # (step, batch, exception or None)

    def get(self, step: int) -> Any:
        while self.ahead and self.ahead[0][0] < step:
            self.ahead.popleft()
        if not self.ahead or self.ahead[0][0] != step:
            self.ahead.clear()
            return self.read(step) if self.depth == 0 else self.place(self.read(step))
        _, batch, error = self.ahead.popleft()
        if error is not None:
            raise error
        return batch

    def fill(self, step: int) -> None:
        nxt = self.ahead[-1][0] + 1 if self.ahead else step
        while len(self.ahead) < self.depth and nxt < self.end and not (self.ahead and self.ahead[-1][2] is not None):
            try:
                self.ahead.append((nxt, self.place(self.read(nxt)), None))
            except (Exception, KeyboardInterrupt) as e:  # raised when step `nxt` is due
                self.ahead.append((nxt, None, e))
            nxt += 1
