"""host_plugin runs inside hosts with Python 3.9-3.13: keep to 3.9 syntax and never import the engine."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted((ROOT / "host_plugin").rglob("*.py"))
FORBIDDEN = ("torch", "ttt_engine", "server")


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", FILES, ids=_ids)
def test_parses_as_python39(path: Path) -> None:
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))


@pytest.mark.parametrize("path", FILES, ids=_ids)
def test_no_engine_imports_and_future_annotations(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & set(FORBIDDEN), f"{path} imports {sorted(imported & set(FORBIDDEN))}"
    annotated = any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and (n.returns or n.args.args)
        for n in ast.walk(tree)
    )
    if annotated:  # annotations stay strings on 3.9, so List[int] | None style hints cannot break import
        assert "from __future__ import annotations" in path.read_text(encoding="utf-8"), path


def test_ruff_py39_is_clean() -> None:
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    if not os.path.exists(ruff):
        pytest.skip("ruff is not installed")
    res = subprocess.run(
        [ruff, "check", "--no-fix", "--target-version", "py39", "host_plugin"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_importing_host_plugin_pulls_in_no_engine() -> None:
    code = (
        "import sys, host_plugin.core, host_plugin.hosts, host_plugin.fill, host_plugin.core.exr_io;"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} or m == 'OpenEXR'];"
        "assert not bad, bad"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr  # OpenEXR too: it is imported lazily, only when EXRs are touched
