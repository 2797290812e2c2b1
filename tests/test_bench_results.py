"""bench/results.py and bench/render_table.py: a run's record carries its machine, versions, load and figures;
the README's speed table is rendered from the store, one row per machine class, every row naming its machine;
a corrupt store or a file without markers is refused with one sentence and nothing written."""

import json

import pytest
from conftest import load_bench


def _step_figures(jax_ms, torch_ms, config="configs/shakespeare.py:nanogpt_cpu"):
    return {"config": config, "jax": {"ms_per_step": jax_ms},
            "torch": {"ms_per_step": torch_ms, "ratio": jax_ms / torch_ms}}


def test_record_carries_machine_versions_load_and_figures(repo_root, tmp_path):
    store = load_bench("results")
    rec = store.record("step", _step_figures(20.0, 25.0), machine_line="machine: here", load_start=[9.0, 8.0, 7.0])
    assert rec["machine"]["cores"] >= 1 and rec["versions"]["jax"].startswith("0.")
    assert rec["load"]["start"] == [9.0, 8.0, 7.0] and len(rec["load"]["end"]) == 3
    assert rec["source"] == "measured" and rec["date"].endswith("Z")
    path = store.append(rec, tmp_path)
    store.append(dict(rec, figures=_step_figures(30.0, 25.0)), tmp_path)
    assert path == tmp_path / "step.jsonl" and [r["figures"]["jax"]["ms_per_step"]
                                                for r in store.read("step", tmp_path)] == [20.0, 30.0]


def test_table_has_one_row_per_machine_with_its_median(repo_root, tmp_path):
    store, render = load_bench("results"), load_bench("render_table")
    zen = {"model_name": "AMD EPYC", "family": "25", "model": "17", "isa": ["AVX2", "AVX-512F"], "cores": 2}
    for jax_ms, load in ((20.0, [1.0, 1, 1]), (24.0, [6.5, 5, 4]), (22.0, [1.5, 1, 1])):
        store.append({"bench": "step", "date": "2026-12-03T17:00:00Z", "machine": zen, "source": "measured",
                      "load": {"start": load, "end": [1.0, 1, 1], "cpus": 2}, "figures": _step_figures(jax_ms, 25.0)},
                     tmp_path)
    store.append({"bench": "step", "date": "unknown", "machine": {"label": "Intel Xeon, family 6 model 167"},
                  "load": None, "source": "imported from earlier notes", "figures": _step_figures(43.5, 30.0)},
                 tmp_path)
    store.append({"bench": "step", "date": "2026-12-03", "machine": zen, "load": None,  # another config: not a row
                  "figures": _step_figures(99.0, 25.0, "configs/shakespeare.py:small")}, tmp_path)
    text = render.render(tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 3  # idle runs and runs under load are separate rows
    assert rows[0].startswith("| AMD EPYC (family 25, model 17; AVX2, AVX-512F), 2 cores | **0.84** | 0.80–0.88 | 21.0 |")
    assert "| 2 | up to 1.5 |" in rows[0]
    assert rows[1].startswith("| AMD EPYC (family 25, model 17; AVX2, AVX-512F), 2 cores | **0.96** | 0.96–0.96 | 24.0 |")
    assert "| 1 | up to 6.5 (under load) |" in rows[1]
    assert rows[2].startswith("| Intel Xeon, family 6 model 167 | **1.45** |") and "imported from earlier notes" in rows[2]


def test_write_between_markers_and_refusals(repo_root, tmp_path, capsys):
    render = load_bench("render_table")
    (tmp_path / "step.jsonl").write_text(json.dumps({"bench": "step", "date": "d", "machine": {"label": "m"},
                                                     "figures": _step_figures(1.0, 2.0)}) + "\n")
    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n{render.START}\nold\n{render.END}\ntail\n")
    assert render.main(["--results", str(tmp_path), "--write", str(readme)]) == 0
    content = readme.read_text()
    assert "old" not in content and "| m | **0.50** |" in content and content.endswith(f"{render.END}\ntail\n")

    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert render.main(["--results", str(tmp_path), "--write", str(plain)]) == 2
    assert plain.read_text() == "no markers\n" and "has no '<!-- speed-table:start -->'" in capsys.readouterr().err

    (tmp_path / "step.jsonl").write_text("{not json\n")
    assert render.main(["--results", str(tmp_path)]) == 2
    assert "step.jsonl:1 is not a JSON record" in capsys.readouterr().err
    with pytest.raises(ValueError, match="not a results record"):
        (tmp_path / "step.jsonl").write_text("[1, 2]\n")
        load_bench("results").read("step", tmp_path)


def test_scaling_table_has_both_kernels_and_pytorch(repo_root):
    scaling = load_bench("scaling")
    row = {"width": 128, "context": 512, "layers": 4, "batch": 2, "steps": 6, "gflop": 4.0,
           "ms": {"xla": 90.0, "blocked": 40.0, "torch": 50.0}, "mib": {"xla": 60.0, "blocked": 20.0, "torch": 16.0},
           "ratio": {"xla": 1.8, "blocked": 0.8}}
    lines = scaling.table([row]).splitlines()
    assert lines[0] == ("| width | context | layers | batch | GFLOP/step | JAX xla ms | JAX blocked ms | PyTorch ms | "
                        "xla / PyTorch | blocked / PyTorch | JAX xla MiB | JAX blocked MiB | PyTorch MiB | steps timed |")
    assert lines[2] == "| 128 | 512 | 4 | 2 | 4.0 | 90.0 | 40.0 | 50.0 | **1.80** | **0.80** | 60 | 20 | 16 | 6 |"
    jax_only = dict(row, ms={"blocked": 40.0}, mib={"blocked": 20.0})
    assert scaling.table([jax_only]).splitlines()[2] == "| 128 | 512 | 4 | 2 | 4.0 | 40.0 | 20 | 6 |"
