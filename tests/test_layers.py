"""The package's layers hold (.importlinter, checked by import-linter), and no module hides
an import of our own modules inside a function or behind importlib."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lstm_lightning"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--config", str(root / ".importlinter"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": ""},
        capture_output=True,
        text=True,
    )


def test_the_layer_contracts_are_kept():
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    # The same config on a copy of the package in which a low module imports the CLI.
    shutil.copytree(PACKAGE, tmp_path / "lstm_lightning")
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    errors = tmp_path / "lstm_lightning" / "errors.py"
    errors.write_text(errors.read_text() + "\n\ndef late():\n    from lstm_lightning import cli\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "lstm_lightning.errors -> lstm_lightning.cli" in done.stdout


def hidden_imports(source: str) -> list[str]:
    """Imports of lstm_lightning inside a function, and importlib/__import__ calls."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                names = []
                if isinstance(inner, ast.Import):
                    names = [alias.name for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom):
                    names = ["." * inner.level + (inner.module or "")]
                found += [
                    f"line {inner.lineno}: import {n} in {node.name}()"
                    for n in names
                    if n.startswith(("lstm_lightning", "."))
                ]
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            if name.endswith("import_module") or name == "__import__":
                found.append(f"line {node.lineno}: {name}()")
    return sorted(set(found))


@pytest.mark.parametrize("module", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_import_is_hidden_in_a_function(module):
    assert hidden_imports(module.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "def f():\n    from lstm_lightning import sweep\n",
        "def f():\n    import lstm_lightning.sweep\n",
        "def f():\n    from . import sweep\n",
        "import importlib\nmain = importlib.import_module('lstm_lightning.sweep').main\n",
    ],
)
def test_the_scan_finds_a_hidden_import(source):
    assert hidden_imports(source)
