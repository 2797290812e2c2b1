"""The attention kernels on a real GPU: cuDNN's against XLA's and the blocked one, values, gradients, code and time.

    python bench/gpu_check.py [--json FILE] [--contexts 256 1024 4096] [--rounds 20]

Needs a JAX with a CUDA backend. For the ``gpu`` recipe's attention shape (6 heads of width
64, bfloat16 inputs, causal) at each context T, with ``B = 16384 // T`` sequences so that
every row holds the same number of tokens:

* values and gradients (of ``sum(out * g)`` for a random ``g``, with respect to q, k, v) of
  ``implementation="cudnn"``, ``"xla"`` (XLA's in bfloat16) and ``"blocked"`` against the
  attention written out in float32 (:func:`p2t_jax.models.attention.attention_weights`):
  the largest absolute error of each. cuDNN's passes when its error is within 2x XLA's own
  bfloat16 error (plus 1e-3): the same arithmetic in the same precision;
* which kernel ``implementation="auto"`` compiled into the forward and the gradient
  programs (``__cudnn$fmha`` custom calls in the compiled HLO text);
* forward + backward time of each (median of ``--rounds`` timed calls after two warm-ups).

Prints a markdown table and, with ``--json``, writes the figures. Exits 1 if a check fails,
2 if JAX has no GPU here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from p2t_jax.models.attention import attend, attention_weights, causal_mask, dot_product_attention  # noqa: E402

HEADS, WIDTH, TOKENS = 6, 64, 16384


def reference(q, k, v):
    """``float32[B, T, H, K]``: causal attention written out in float32."""
    f32 = [x.astype(jnp.float32) for x in (q, k, v)]
    return attend(attention_weights(f32[0], f32[1], causal_mask(q.shape[1])), f32[2])


def kernel(impl: str):
    if impl == "reference":
        return reference
    return lambda q, k, v: dot_product_attention(q, k, v, is_causal=True, implementation=impl).astype(jnp.float32)


def value_and_grads(fn):
    """``(q, k, v, g) -> (out, (dq, dk, dv))`` of ``sum(fn(q, k, v) * g)``, jitted."""
    def loss(q, k, v, g):
        out = fn(q, k, v)
        return jnp.sum(out * g), out

    def run(q, k, v, g):
        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, g)
        return out, grads

    return jax.jit(run)


def median_ms(fn, args, rounds: int) -> float:
    for _ in range(2):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1000 * float(np.median(times))


def check(context: int, rounds: int) -> dict:
    batch = TOKENS // context
    keys = jax.random.split(jax.random.key(context), 4)
    shape = (batch, context, HEADS, WIDTH)
    q, k, v = (jax.random.normal(kk, shape, jnp.bfloat16) for kk in keys[:3])
    g = jax.random.normal(keys[3], shape, jnp.float32)
    args = (q, k, v, g)
    fns = {impl: value_and_grads(kernel(impl)) for impl in ("reference", "cudnn", "xla", "blocked", "auto")}
    ref_out, ref_grads = fns["reference"](*args)
    row = {"context": context, "batch": batch}
    for impl in ("cudnn", "xla", "blocked", "auto"):
        fn = fns[impl]
        out, grads = fn(*args)
        row[impl] = {
            "out_err": float(jnp.max(jnp.abs(out - ref_out))),
            "grad_err": max(float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
                            for a, b in zip(grads, ref_grads)),
            "ms": median_ms(fn, args, rounds),
        }
    forward = jax.jit(kernel("auto")).lower(q, k, v).compile().as_text()
    backward = fns["auto"].lower(*args).compile().as_text()  # the program timed above (jit's cache)
    row["auto_forward_cudnn"] = "__cudnn$fmha" in forward
    row["auto_backward_cudnn"] = "__cudnn$fmha" in backward and "Backward" in backward
    row["ref_ms"] = median_ms(fns["reference"], args, rounds)
    tol = lambda key: 2 * row["xla"][key] + 1e-3  # noqa: E731
    row["cudnn_ok"] = row["cudnn"]["out_err"] <= tol("out_err") and row["cudnn"]["grad_err"] <= tol("grad_err")
    row["blocked_ok"] = row["blocked"]["out_err"] <= tol("out_err") and row["blocked"]["grad_err"] <= tol("grad_err")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = jax.devices()[0]
    if device.platform != "gpu":
        print(f"error: JAX runs on {device.platform} here; this check needs a GPU.", file=sys.stderr)
        return 2
    print(f"device: {device.device_kind}; jax {jax.__version__}")
    rows = [check(t, args.rounds) for t in args.contexts]
    print(f"\ncausal attention, {HEADS} heads of width {WIDTH}, bfloat16 inputs, {TOKENS:,} tokens per call "
          f"(B = {TOKENS} / T); forward + backward, median of {args.rounds}; errors against float32 written out")
    print("| T | B | cuDNN ms | XLA ms | blocked ms | f32 written out ms | max err out cuDNN / XLA / blocked "
          "| max err grad cuDNN / XLA / blocked | `auto` compiled cuDNN fwd / bwd |")
    print("|---:|---:|---:|---:|---:|---:|---|---|---|")
    for r in rows:
        errs = lambda key, r=r: " / ".join(f"{r[i][key]:.2g}" for i in ("cudnn", "xla", "blocked"))  # noqa: E731
        print(f"| {r['context']} | {r['batch']} | {r['cudnn']['ms']:.2f} | {r['xla']['ms']:.2f} | "
              f"{r['blocked']['ms']:.2f} | {r['ref_ms']:.2f} | {errs('out_err')} | {errs('grad_err')} | "
              f"{r['auto_forward_cudnn']} / {r['auto_backward_cudnn']} |")
    ok = all(r["cudnn_ok"] and r["blocked_ok"] and r["auto_forward_cudnn"] and r["auto_backward_cudnn"] for r in rows)
    print("\nall checks pass" if ok else "\nFAILED: see the rows above")
    if args.json:
        args.json.write_text(json.dumps({"device": device.device_kind, "jax": jax.__version__, "rows": rows}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
