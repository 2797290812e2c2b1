"""The library's Transformer and training step in PyTorch, as a reference to time against.

The architecture of ``configs/shakespeare.py:nanogpt_cpu`` and ``:gpu`` (nanoGPT's shape) at
any size: pre-LayerNorm blocks, no biases, tied embeddings, exact GELU,
``scaled_dot_product_attention`` with a causal mask, dropout on the attention weights, on
each residual branch and on the embeddings; AdamW (decay on matrices and embeddings only)
after gradient clipping at 1.0, optionally under ``torch.autocast`` in bfloat16. Plus a
key/value-cache sampler that does what :func:`p2t_jax.sampling.generate_cached` does, and
:func:`load_jax_params` to give this model the JAX model's parameters (the tests check both
compute the same losses and logits). Needs the ``bench`` extra (CPU torch).

Run alone: ``python bench/torch_reference.py`` prints its median ms/step.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1 = nn.LayerNorm(d, bias=False)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d, bias=False)
        self.fc = nn.Linear(d, 4 * d, bias=False)
        self.proj = nn.Linear(4 * d, d, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, cache=None, pos: int = 0):
        """``x [B, T, D]``. With ``cache`` (this block's ``(k, v)``, each ``[B, H, L, K]``) the T new
        positions are written at ``pos .. pos + T - 1`` and attend to every cached position up to
        their own (``pos == 0``: a prefill, causal; else T must be 1)."""
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            cache[0][:, :, pos:pos + T], cache[1][:, :, pos:pos + T] = k, v
            k, v = cache[0][:, :, :pos + T], cache[1][:, :, :pos + T]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=pos == 0,
                                           dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.out(y.transpose(1, 2).contiguous().view(B, T, D)))
        return x + self.drop(self.proj(F.gelu(self.fc(self.ln2(x)))))


class GPT(nn.Module):
    def __init__(self, vocab: int = 65, context: int = 64, d: int = 128, layers: int = 4, heads: int = 4,
                 dropout: float = 0.0):
        super().__init__()
        self.context, self.heads = context, heads
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList([Block(d, heads, dropout) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(d, bias=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("out.weight", "proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def logits(self, idx, caches=None, pos: int = 0):
        """``idx int64[B, T]`` -> ``float[B, T, V]``; ``caches``: one ``(k, v)`` per block (see Block)."""
        T = idx.shape[1]
        x = self.drop(self.tok(idx) + self.pos(torch.arange(pos, pos + T, device=idx.device)))
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i], pos)
        return self.ln_f(x) @ self.tok.weight.T

    def forward(self, idx, targets):
        logits = self.logits(idx)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))


def config_model(m, device: str = "cpu") -> GPT:
    """The GPT of a ``config.model`` (the library's fields); only nanoGPT's shape is built here."""
    if m.use_bias or not m.tie_embeddings or m.mlp_dim != 4 * m.emb_dim or m.gelu_approximate:
        raise ValueError("the PyTorch reference is nanoGPT's shape: model.use_bias=False, model.tie_embeddings=True, "
                         "model.mlp_dim = 4 * model.emb_dim, exact GELU.")
    return GPT(m.vocab_size, m.max_len, m.emb_dim, m.num_layers, m.num_heads, m.dropout_rate).to(device)


def make_step(model: GPT, lr: float = 1e-3, dtype: str = "float32"):
    """The training step ``(x, y) -> loss``: forward (under bfloat16 autocast if ``dtype`` says so),
    backward, clip to global norm 1.0, AdamW (betas 0.9/0.99, decay 0.1 on matrices and embeddings)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.99))
    device = next(model.parameters()).device.type
    autocast = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if dtype == "bfloat16" else contextlib.nullcontext
    model.train()

    def step(x, y):
        with autocast():
            loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    return step


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(step, batches, warmup: int = 10) -> list[float]:
    """ms per step for each of ``batches`` after ``warmup`` untimed steps."""
    device = batches[0][0].device.type
    for x, y in batches[:warmup]:
        step(x, y)
    synchronize(device)
    times = []
    for x, y in batches[warmup:]:
        t0 = time.perf_counter()
        step(x, y)
        synchronize(device)
        times.append(1000 * (time.perf_counter() - t0))
    return times


def random_batches(n: int, batch: int = 12, context: int = 64, vocab: int = 65, seed: int = 0, device: str = "cpu"):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(0, vocab, (n, batch, context + 1), generator=g).to(device)
    return [(d[:, :-1].contiguous(), d[:, 1:].contiguous()) for d in data]


def step_peak_bytes(step, batch) -> int:
    """Peak bytes that one call of ``step`` allocates on top of what was allocated before it
    (PyTorch's CPU allocator, read from the profiler's memory events)."""
    import os

    from torch.profiler import ProfilerActivity, profile

    saved = os.dup(2)  # the profiler warns on stderr about blocks allocated before it started: expected
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step(*batch)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    total, peak = 0, 0
    for event in sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns()):
        if event.name() == "[memory]":
            total += event.nbytes()  # negative for a free
            peak = max(peak, total)
    return peak


# --- sampling with a key/value cache -----------------------------------------------------------


def new_caches(model: GPT, batch: int) -> list:
    """One zeroed ``(k, v)`` pair ``[B, H, L, K]`` per block."""
    p = model.tok.weight
    d = p.shape[1]
    shape = (batch, model.heads, model.context, d // model.heads)
    return [(torch.zeros(shape, dtype=p.dtype, device=p.device), torch.zeros(shape, dtype=p.dtype, device=p.device))
            for _ in model.blocks]


def sample_token(logits_BV, generator, temperature: float, top_k: int):
    """``int64[B]`` drawn from the ``top_k`` filtered softmax at ``temperature`` (0: argmax)."""
    if temperature == 0:
        return logits_BV.argmax(-1)
    logits_BV = logits_BV.float() / temperature
    if top_k and top_k < logits_BV.shape[-1]:
        kth = torch.topk(logits_BV, top_k).values[:, -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth, -math.inf)
    return torch.multinomial(F.softmax(logits_BV, dim=-1), 1, generator=generator)[:, 0]


@torch.no_grad()
def generate_cached(model: GPT, prompt_BP, max_new_tokens: int, *, temperature: float = 1.0, top_k: int = 0,
                    stride: int = 0, seed: int = 0):
    """``int64[B, P + N]``: the prompts continued by N tokens with a key/value cache, the way
    :func:`p2t_jax.sampling.generate_cached` does it: one position per token; when the cache
    is full, it is rebuilt from the last ``context - stride`` tokens (``stride`` 0: context // 4)."""
    model.eval()
    B, P = prompt_BP.shape
    L = model.context
    stride = stride or max(1, L // 4)
    keep = L - stride
    generator = torch.Generator(device=prompt_BP.device).manual_seed(seed)
    tokens = prompt_BP
    first = prompt_BP[:, -min(P, keep if P > L else L):]
    caches = new_caches(model, B)
    last_BV, pos = model.logits(first, caches, 0)[:, -1], first.shape[1]
    for _ in range(max_new_tokens):
        token_B = sample_token(last_BV, generator, temperature, top_k)
        tokens = torch.cat([tokens, token_B[:, None]], dim=1)
        if pos >= L:  # full: rebuild from the last ``keep`` tokens
            caches = new_caches(model, B)
            last_BV, pos = model.logits(tokens[:, -keep:], caches, 0)[:, -1], keep
        else:
            last_BV, pos = model.logits(token_B[:, None], caches, pos)[:, -1], pos + 1
    return tokens


# --- the JAX model's parameters --------------------------------------------------------------


@torch.no_grad()
def load_jax_params(model: GPT, params: dict) -> GPT:
    """Copies the parameters of the library's Transformer (``params``, nanoGPT's shape: no
    biases, tied embeddings, unscanned blocks) into ``model``; returns it."""
    import numpy as np

    def put(tensor, array):
        tensor.copy_(torch.from_numpy(np.array(array, dtype=np.float32)))

    put(model.tok.weight, params["token_embed"]["embedding"])
    put(model.pos.weight, params["pos_embed"])
    put(model.ln_f.weight, params["ln_f"]["scale"])
    for i, block in enumerate(model.blocks):
        p = params[f"block_{i}"]
        d = block.qkv.in_features
        put(block.ln1.weight, p["ln1"]["scale"])
        put(block.ln2.weight, p["ln2"]["scale"])
        put(block.qkv.weight, np.asarray(p["attn"]["qkv"]["kernel"]).reshape(d, 3 * d).T)  # [D, 3, H, K]
        put(block.out.weight, np.asarray(p["attn"]["out"]["kernel"]).reshape(d, d).T)  # [H, K, D]
        put(block.fc.weight, np.asarray(p["mlp"]["fc"]["kernel"]).T)
        put(block.proj.weight, np.asarray(p["mlp"]["proj"]["kernel"]).T)
    return model


if __name__ == "__main__":
    torch.manual_seed(0)
    step = make_step(GPT())
    times = time_steps(step, random_batches(110))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads: median {statistics.median(times):.1f} ms/step")
