"""Static checks that keep the tree healthy: ruff over everything, Python 3.9 syntax for host_plugin."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = shutil.which("ruff")
    if exe:
        return [exe]
    return [sys.executable, "-m", "ruff"]


def test_ruff_is_clean() -> None:
    res = subprocess.run([*_ruff(), "check", "--no-fix", "."], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_host_plugin_is_python39_ruff_clean() -> None:
    res = subprocess.run(
        [
            *_ruff(),
            "check",
            "--no-fix",
            "--target-version",
            "py39",
            "--select",
            "E9,F63,F7,F82,UP",
            "host_plugin",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    "path", sorted((ROOT / "host_plugin").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_host_plugin_parses_as_python39(path: Path) -> None:
    ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))
