"""The benches' shared parts: where they ran (the machine line), the worker protocol, the MFU arithmetic,
the scaling grid's points; and bench/accelerator.sh end to end in its smoke mode (slow)."""

import os
import pathlib
import subprocess
import sys

import pytest
from conftest import load_bench

from p2t_jax.configuration import load_config


def test_machine_line_says_where(repo_root):
    harness = load_bench("harness")
    facts = harness.cpu_facts()
    assert facts["cores"] >= 1
    line = harness.machine_line()
    assert line.startswith("machine: ") and f"{facts['cores']} cores" in line
    assert "jax 0." in line and "jaxlib" in line and "XLA_FLAGS=" in line
    if "model_name" in facts:  # Linux
        assert f"family {facts['family']}, model {facts['model']}" in line


def test_worker_protocol(repo_root):
    harness = load_bench("harness")
    code = ("import sys; sys.path.insert(0, 'bench'); import harness; "
            "harness.serve(lambda r: {'echo': r, 'n': len(r)}, {'hello': 1})")
    w = harness.Worker("echo", [sys.executable, "-c", code], cwd=repo_root)
    assert w.facts == {"hello": 1}
    assert w.ask("run 3") == {"echo": "run 3", "n": 5}
    w.close()
    assert w.proc.returncode == 0
    dead = [sys.executable, "-c", "raise SystemExit(3)"]
    with pytest.raises(SystemExit, match="the broken worker failed to start"):
        harness.Worker("broken", dead, cwd=repo_root)


def test_mfu_arithmetic(repo_root):
    step = load_bench("step")
    c = load_config(f"{repo_root}/configs/shakespeare.py:gpu")
    n = 6 * 12 * 384**2 + 65 * 384 + 13 * 384  # nanoGPT's get_num_params(): no position table
    assert step.model_flops_per_token(c, n) == 6 * n + 12 * 6 * 384 * 256
    assert step.device_peak_tflops("NVIDIA A100-SXM4-80GB", "bfloat16") == 312.0
    assert step.device_peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
    assert step.device_peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
    assert step.device_peak_tflops("NVIDIA A100-SXM4-80GB", "float32") is None
    assert step.device_peak_tflops("cpu", "bfloat16") is None


def test_scaling_points_keep_tokens_and_head_width(repo_root):
    scaling = load_bench("scaling")
    from p2t_jax.configuration import apply_overrides

    for width, context in ((128, 64), (512, 512)):
        overrides = [o.removeprefix("--config.") for o in scaling.point_overrides(width, context, 8, 1024)]
        c = apply_overrides(load_config(f"{repo_root}/configs/shakespeare.py:nanogpt_cpu"), overrides)
        assert c.train.batch_size * c.model.max_len == 1024
        assert c.model.emb_dim // c.model.num_heads == 32 and c.model.mlp_dim == 4 * width
        assert c.model.num_layers == 8


@pytest.mark.slow
def test_accelerator_script_smoke(repo_root, tmp_path):
    """bench/accelerator.sh with P2T_ACCEL_SMOKE=1 (a batch of 2, a few steps; minutes on a CPU): its table."""
    env = dict(os.environ, P2T_ACCEL_SMOKE="1", OUT=str(tmp_path / "acc"), PYTHON=sys.executable,
               PYTHONPATH=str(repo_root), XLA_FLAGS="", JAX_PLATFORMS="cpu")
    result = subprocess.run(["bash", str(repo_root / "bench" / "accelerator.sh")], env=env, capture_output=True,
                            text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert out.count("machine: ") >= 2 and "| validation loss at step 6 |" in out and "| tokens/s |" in out
    assert "| FLOPs per step (XLA's cost analysis, lowered step) |" in out and "| predicted on cpu |" in out
    assert "| H100 | 989 |" in out and "| A100 | 312 |" in out and "| v5e | 197 |" in out
    again = subprocess.run(["bash", str(repo_root / "bench" / "accelerator.sh")], env=env, capture_output=True,
                           text=True)
    assert again.returncode == 2 and "already exists" in again.stderr  # an earlier run is never overwritten


def test_step_flops_match_the_analytic_count(repo_root):
    """XLA's cost analysis of the lowered train step against 6N + 12·L·D·T FLOPs per token (matmuls of forward
    and backward; tied embeddings and no biases, so N counts only matmul weights): XLA counts those and a
    little more (layer norms, GELU, softmax, Adam), within 5% at width 128 and context 128."""
    from p2t_jax.configuration import apply_overrides

    step = load_bench("step")
    c = apply_overrides(load_config(f"{repo_root}/configs/shakespeare.py:smoke"),
                        ["model.tie_embeddings=True", "model.use_bias=False", "model.emb_dim=128", "model.max_len=128",
                         "model.num_heads=4", "model.mlp_dim=512", "train.batch_size=4"])
    f = step.step_flops(c)
    L, D, T, V = 2, 128, 128, 65
    n = L * 12 * D * D + V * D + (2 * L + 1) * D  # per block 4D^2 attention + 8D^2 MLP; tied embedding; LN scales
    assert f["parameters"] == n and f["tokens"] == 4 * 128
    assert f["model_flops"] == (6 * n + 12 * L * D * T) * 4 * 128
    assert 1.0 <= f["flops"] / f["model_flops"] <= 1.05, f


def test_prediction_arithmetic_and_refusals(repo_root):
    step = load_bench("step")
    row = step.predict(1e12, 16384, step.PREDICT_DEVICES["A100"], 0.5)  # 1 TFLOP at half of 312 TFLOP/s
    assert row["peak_tflops"] == 312.0 and abs(row["ms_per_step"] - 1000 / 156) < 1e-9
    assert abs(row["tokens_per_s"] - 16384 * 156) < 1e-6
    assert step.predict(1e12, 1, step.PREDICT_DEVICES["H100"], 1.0)["peak_tflops"] == 989.0
    assert step.predict(1e12, 1, step.PREDICT_DEVICES["v5e"], 1.0)["peak_tflops"] == 197.0
    assert step.predict(1e12, 1, "cpu", 0.5) is None
    for args, message in ((["--predict", "H200"], "--predict takes devices from H100, A100, v5e"),
                          (["--predict", "A100", "--mfu", "1.5"], "--mfu must be in (0, 1], got 1.5")):
        result = subprocess.run([sys.executable, str(repo_root / "bench" / "step.py"), *args], capture_output=True,
                                text=True, env=dict(os.environ, PYTHONPATH=str(repo_root)))
        assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1


def test_peer_nanogpt_refuses_what_is_not_a_clone_and_reads_its_iteration_lines(tmp_path, capsys):
    peer = load_bench("peer_nanogpt")
    assert peer.main(["--nanogpt", str(tmp_path), "--torch-python", "python"]) == 2
    assert f"--nanogpt '{tmp_path}' is not a nanoGPT clone" in capsys.readouterr().err
    clone = tmp_path / "nanogpt"
    (clone / "config").mkdir(parents=True)
    (clone / "train.py").write_text("")
    (clone / "config" / "train_shakespeare_char.py").write_text("")
    assert peer.main(["--nanogpt", str(clone), "--torch-python", "no/such/python"]) == 2  # one sentence, no traceback
    assert capsys.readouterr().err == (f"error: --torch-python '{pathlib.Path('no/such/python').absolute()}' cannot "
                                       f"be run (No such file or directory).\n")
    m = peer.ITER_LINE.match("iter 12: loss 2.5012, time 31.25ms, mfu 1.20%")
    assert m and (int(m.group(1)), float(m.group(2))) == (12, 31.25)
    assert peer.ITER_LINE.match("step 250: train loss 2.1, val loss 2.2") is None
