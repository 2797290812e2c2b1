"""Chapter 6's CNN and its training step in PyTorch, as a reference to time against.

Same network as ``configs/mnist_cnn.py`` (``model.name = cnn``): a 3x3 conv to 32 channels
(padding 1), ReLU, 2x2 max-pool; a 3x3 conv to 64, ReLU, 2x2 max-pool; flatten; a Linear
layer to 10 classes (50,186 parameters); cross-entropy; Adam. PyTorch's usual layout
(NCHW) and defaults, as a user would write it. Needs the ``bench`` extra (CPU torch).

Run alone: ``python bench/torch_cnn_reference.py`` prints its median ms/step.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class CNN(nn.Module):
    def __init__(self, channels: int = 1, features: Sequence[int] = (32, 64), num_classes: int = 10,
                 kernel_size: int = 3, side: int = 28):
        super().__init__()
        widths = (channels,) + tuple(features)
        self.convs = nn.ModuleList([nn.Conv2d(a, b, kernel_size, padding=kernel_size // 2)
                                    for a, b in zip(widths[:-1], widths[1:])])
        for _ in features:
            side //= 2
        self.head = nn.Linear(widths[-1] * side * side, num_classes)

    def forward(self, x):
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return self.head(x.flatten(1))


def make_step(model: nn.Module, lr: float = 1e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    def step(x, y):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    return step


def random_batches(n: int, batch_size: int = 32, channels: int = 1, side: int = 28, num_classes: int = 10,
                   seed: int = 0) -> list:
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch_size, channels, side, side, generator=g),
             torch.randint(0, num_classes, (batch_size,), generator=g)) for _ in range(n)]


def time_steps(step, batches, warmup: int = 10) -> list[float]:
    """ms per step over ``batches`` (after ``warmup`` untimed steps on the first one)."""
    for _ in range(warmup):
        step(*batches[0])
    times = []
    for x, y in batches:
        t = time.perf_counter()
        step(x, y).item()
        times.append(1000 * (time.perf_counter() - t))
    return times


if __name__ == "__main__":
    torch.manual_seed(0)
    model = CNN()
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {torch.get_num_threads()} threads")
    print(f"median {statistics.median(time_steps(make_step(model), random_batches(50))):.2f} ms/step")
