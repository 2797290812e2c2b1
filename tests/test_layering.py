"""Imports point one way: each part of the package imports only from the parts below it.

The order (bottom to top) is the map in ``p2t_jax/__init__.py`` and the README's Layout.
Two checks: every ``import`` statement in the package's source (those inside functions too),
and what importing each part really loads, in a fresh interpreter.
"""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "p2t_jax"

# Bottom to top. A part may import from the rows below its own, never from its own row or above.
LAYERS = [
    ["configuration", "xla_flags"],
    ["resources", "host_memory", "parent_watch", "compile_cache"],
    ["models", "data"],
    ["optim", "parallel"],
    ["training"],
    ["tasks"],
    ["sampling", "runs"],
    ["chapters", "viz", "experiment"],
    ["reproduce"],
    ["playground"],
    ["cli"],
]
LEVEL = {part: i for i, row in enumerate(LAYERS) for part in row}
NOT_IMPORTABLE = {"p2t_jax.playground.app"}  # the Streamlit script: it draws the app when imported


def allowed(part: str) -> set[str]:
    return {p for p, level in LEVEL.items() if level < LEVEL[part]} | {part}


def part_of(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imported_parts(tree: ast.AST) -> set[str]:
    """The parts of ``p2t_jax`` named by the import statements anywhere in ``tree``."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "p2t_jax":
                names = [f"p2t_jax.{a.name}" for a in node.names]
            else:
                names = [node.module]
        else:
            continue
        found |= {n.split(".")[1] for n in names if n.startswith("p2t_jax.")}
    return found


def source_files() -> list[pathlib.Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "__init__.py")


def test_every_part_of_the_package_is_in_the_layering():
    parts = {part_of(p) for p in source_files()}
    assert parts == set(LEVEL), f"parts missing from LAYERS: {parts - set(LEVEL)}; gone: {set(LEVEL) - parts}"


def test_every_import_statement_points_down():
    wrong = []
    for path in source_files():
        part = part_of(path)
        for other in sorted(imported_parts(ast.parse(path.read_text(), str(path))) - allowed(part)):
            wrong.append(f"{path.relative_to(PACKAGE.parent)} ({part}) imports p2t_jax.{other}")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


def test_the_checker_sees_imports_inside_functions():
    tree = ast.parse("def f():\n    from p2t_jax import cli, tasks\n    import p2t_jax.chapters.pointer\n"
                     "from p2t_jax.training.loop import Task\nimport jax\n")
    assert imported_parts(tree) == {"cli", "tasks", "chapters", "training"}
    assert "chapters" not in allowed("tasks") and "training" in allowed("tasks")


_PROBE = """
import importlib, json, pkgutil, sys
import p2t_jax
parts = json.loads(sys.argv[1])
skip = set(json.loads(sys.argv[2]))
modules = [m.name for m in pkgutil.walk_packages(p2t_jax.__path__, "p2t_jax.")]
out = {}
for part in parts:
    for name in [m for m in sys.modules if m.startswith("p2t_jax.")]:
        del sys.modules[name]
    for name in [f"p2t_jax.{part}"] + [m for m in modules if m.startswith(f"p2t_jax.{part}.")]:
        if name not in skip:
            importlib.import_module(name)
    out[part] = sorted({m.split(".")[1] for m in sys.modules if m.startswith("p2t_jax.")})
print(json.dumps(out))
"""


def test_importing_each_part_loads_only_the_parts_below_it():
    """Each part, with every module in it, imported into a module table holding no other part of the package."""
    parts = sorted(LEVEL)
    result = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(parts), json.dumps(sorted(NOT_IMPORTABLE))],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    wrong = {part: sorted(set(got) - allowed(part)) for part, got in loaded.items() if set(got) - allowed(part)}
    assert not wrong, f"importing these parts loads parts at or above their own level: {wrong}"
    assert set(loaded) == set(parts)
    # The named cycles of the past stay broken.
    assert "training" not in loaded["parallel"] and "chapters" not in loaded["tasks"]
    assert "cli" not in loaded["playground"] and "chapters" not in loaded["experiment"]

