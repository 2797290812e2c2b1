"""The nanoGPT CPU recipe's model and training step in PyTorch, as a reference to time against.

Same architecture as ``configs/shakespeare.py:nanogpt_cpu``: 4 layers, 4 heads, width 128,
context 64, vocabulary 65, no biases, tied embeddings, pre-LayerNorm, exact GELU,
``scaled_dot_product_attention`` with a causal mask; AdamW (decay on matrices and
embeddings only) after gradient clipping at 1.0. Needs the ``bench`` extra (CPU torch).

Run alone: ``python bench/torch_reference.py`` prints its median ms/step.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d, bias=False)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d, bias=False)
        self.fc = nn.Linear(d, 4 * d, bias=False)
        self.proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).contiguous().view(B, T, D))
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int = 65, context: int = 64, d: int = 128, layers: int = 4, heads: int = 4):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d, bias=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("out.weight", "proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(T))
        for block in self.blocks:
            x = block(x)
        logits = self.ln_f(x) @ self.tok.weight.T
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def make_step(model: GPT, lr: float = 1e-3):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.99))

    def step(x, y):
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    return step


def time_steps(step, batches, warmup: int = 10) -> list[float]:
    """ms per step for each of ``batches`` after ``warmup`` untimed steps."""
    for x, y in batches[:warmup]:
        step(x, y)
    times = []
    for x, y in batches[warmup:]:
        t0 = time.perf_counter()
        step(x, y)
        times.append(1000 * (time.perf_counter() - t0))
    return times


def random_batches(n: int, batch: int = 12, context: int = 64, vocab: int = 65, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, vocab, (n, batch, context + 1), generator=g)
    return [(d[:, :-1].contiguous(), d[:, 1:].contiguous()) for d in data]


if __name__ == "__main__":
    torch.manual_seed(0)
    step = make_step(GPT())
    times = time_steps(step, random_batches(110))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: median {statistics.median(times):.1f} ms/step")
