"""The package keeps its promised shape: pure domain in coral/, Ray only in actors/ and cluster/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _module_level_imports(path: Path) -> set[str]:
    """Top-level package names imported outside function bodies (lazy imports are allowed)."""
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    for node in tree.body:
        stack = [node]
        while stack:
            n = stack.pop()
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(n, ast.Import):
                top.update(a.name.split(".")[0] for a in n.names)
            elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
                top.add(n.module.split(".")[0])
            stack.extend(ast.iter_child_nodes(n))
    return top


def test_coral_has_no_module_level_ray_imports():
    offenders = [str(p.relative_to(REPO)) for p in sorted((REPO / "coral").rglob("*.py"))
                 if {"ray", "actors", "cluster"} & _module_level_imports(p)]
    assert offenders == []


def test_importing_every_coral_module_does_not_load_ray():
    modules = sorted(".".join(p.relative_to(REPO).with_suffix("").parts)
                     for p in (REPO / "coral").rglob("*.py") if p.name != "__main__.py")
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n    importlib.import_module(m)\n"
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_coral_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "coral", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ("config", "judge", "model", "run", "status", "report"):
        assert command in out.stdout
