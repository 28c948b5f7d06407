"""The house of ../shared/DESIGN.md: no import cycles between modules, lower rooms never import higher ones,
the public names of ``theta_ai`` keep working, and ``theta-train --help`` stays light and fast.

Imports are read from the source (every ``import``/``from`` anywhere in a module, inside functions too;
only ``if TYPE_CHECKING:`` blocks are left out, since they never run).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

import theta_ai

PKG = Path(theta_ai.__file__).parent

# Rooms from the bottom up: a module may import its own room and the rooms below it.
ROOMS = ["errors", "config", "metrics", "model", "data", "augment", "planner", "monitoring", "eval", "training", "cli"]
# Rooms on the same floor: neither imports the other (data uses augment only for type hints; augment sees
# data's Example only through typing).
LEVEL = {"errors": 0, "config": 1, "metrics": 2, "model": 3, "data": 4, "augment": 4, "planner": 5,
         "monitoring": 5, "eval": 6, "training": 7, "cli": 8}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                if hasattr(child, "lineno"):
                    lines.add(child.lineno)
    return lines


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """theta_ai modules that ``path`` imports (a ``from pkg import name`` of a submodule counts as that module)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    found = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("theta_ai")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("theta_ai") and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return {m for m in found if m in modules} - {module_name(path)}


def graph() -> dict[str, set[str]]:
    files = [p for p in PKG.rglob("*.py") if "theta_qa" not in str(p) and "theta_rouge" not in str(p)
             and "theta_sacrebleu" not in str(p)]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


def test_no_relative_imports_hide_the_rooms():
    offenders = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                 if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(p.read_text())))]
    assert offenders == []


def test_no_import_cycles_between_modules():
    edges = graph()
    # a package's __init__ re-exporting its own modules is not a cycle with them
    for module in edges:
        edges[module] = {m for m in edges[module] if not (module.startswith(m + ".") and m != "theta_ai")}
    visiting, done, cycles = [], set(), []

    def visit(node):
        if node in done:
            return
        if node in visiting:
            cycles.append(visiting[visiting.index(node):] + [node])
            return
        visiting.append(node)
        for nxt in sorted(edges.get(node, ())):
            visit(nxt)
        visiting.pop()
        done.add(node)

    for module in sorted(edges):
        visit(module)
    assert cycles == []


def test_lower_rooms_never_import_higher_ones():
    wrong = []
    for module, imported in graph().items():
        here = room(module)
        if here is None or here not in LEVEL:
            continue
        for other in imported:
            there = room(other)
            if there is None or there == here:
                continue
            assert there in LEVEL, f"{other} lies in no room of DESIGN.md"
            if LEVEL[there] >= LEVEL[here]:
                wrong.append(f"{module} imports {other}")
    assert wrong == []


def test_errors_and_config_import_nothing_heavy():
    code = ("import sys, theta_ai.errors, theta_ai.config, theta_ai.cli.train\n"
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'peft', 'accelerate') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == "[]"


def test_a_data_mistake_is_reported_before_the_training_libraries_load(tmp_path):
    """theta-train reads and checks the data before importing torch/transformers (10-25 s on a small machine)."""
    (tmp_path / "bad.json").write_text('[{"question": "What is X?"}]')
    code = ("import sys\nfrom theta_ai.cli.train import main\n"
            "rc = main(['--data', 'bad.json', '--model-name', 'theta-tiny'])\n"
            "print(rc, sorted(m for m in ('torch', 'transformers', 'datasets', 'peft', 'accelerate') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.stdout.strip() == "1 []", proc.stderr
    assert proc.stderr.strip() == ('theta-train: error: bad.json, record index 0, field "answer": is missing or null. '
                                   "Fix: give the answer as a non-empty string.")


@pytest.mark.parametrize("prog, extra", [("eval", []), ("chat", ["--prompt", "hi"])])
def test_a_wrong_model_path_is_reported_before_the_libraries_load(tmp_path, prog, extra):
    code = (f"import sys\nfrom theta_ai.cli.{prog} import main\nrc = main(['--model-path', 'no/such/folder', *{extra!r}])\n"
            "print(rc, sorted(m for m in ('torch', 'transformers', 'datasets', 'peft', 'evaluate') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.stdout.strip() == "1 []", proc.stderr
    assert proc.stderr.strip() == f"theta-{prog}: error: --model-path no/such/folder does not exist; check the path"


def test_help_is_fast():
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "theta_ai.cli.train", "--help"], capture_output=True, check=True, timeout=60)
    assert time.perf_counter() - start < 3.0  # ~0.2 s here; generous for a loaded CI machine


def test_every_public_name_still_imports():
    for name in theta_ai.__all__:
        assert getattr(theta_ai, name) is not None, name
    from theta_ai import (ConfigError, DataError, DiskSpaceError, ModelLoadError, ThetaError, prepare_run,
                          resolve_config, train)

    assert all(issubclass(e, ThetaError) for e in (ConfigError, DataError, DiskSpaceError, ModelLoadError))
    assert issubclass(ConfigError, ValueError) and issubclass(DiskSpaceError, RuntimeError)  # old bases kept
    assert callable(prepare_run) and callable(resolve_config) and callable(train)
