"""The shape of the code that the redesign promised (issue 10): rooms small enough to read in
one sitting, and a README Layout table that names every module with its one concept."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lstm_lightning"
MODULES = sorted(PACKAGE.glob("*.py"))
MAX_MODULE_LINES = 420  # "about 400"
MAX_FUNCTION_LINES = 60


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_every_module_reads_in_one_sitting(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines; split it by concept"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_function_is_longer_than_a_screenful(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: {', '.join(long)}"


def test_readme_layout_names_every_module_with_its_concept():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `lstm_lightning/(\w+)\.py` \| (.+?) \|", layout, flags=re.M))
    modules = {p.stem for p in MODULES if p.stem != "__init__"}
    assert modules - set(rows) == set(), "modules missing from the README's Layout table"
    assert set(rows) - modules == set(), "the Layout table names modules that do not exist"
    assert all(len(concept.strip()) > 10 for concept in rows.values())
