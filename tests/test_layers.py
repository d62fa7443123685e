"""The one-way layers of ARCHITECTURE.md hold: the import-linter contract in pyproject.toml is kept.

The second test copies the packages into a temporary folder and adds one backward import, so a
contract that had stopped checking anything would fail there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
                           "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, timeout=120)


def test_the_project_keeps_its_layers() -> None:
    result = lint_imports(PROJECT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("beam_gbif/core/records.py", "import apache_beam  # noqa", "core is pure"),
    ("beam_gbif/core/quotas.py", "from beam_gbif.transforms import coders  # noqa", "Layers run one way"),
    ("beam_gbif/io/store.py", "from pipelines import options  # noqa", "Layers run one way"),
])
def test_a_backward_import_breaks_the_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    for name in ("beam_gbif", "pipelines"):
        shutil.copytree(PROJECT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    broken = [text for text in result.stdout.splitlines() if text.endswith("BROKEN")]
    assert any(text.startswith(contract) for text in broken), result.stdout
