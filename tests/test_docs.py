"""The README stays true: its test command is CI's, and it documents every config key."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from lstm_lightning.data import SequenceDataModule
from lstm_lightning.module import LanguageModel

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, flags=re.S)
    test_command = next(c for c in commands if "pytest" in c)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_command in ci


@pytest.mark.parametrize("section, cls", [("model", LanguageModel), ("data", SequenceDataModule)])
def test_readme_documents_every_key(section, cls):
    table = README.split(f"| `{section}.` key |", 1)[1].split("\n\n", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    assert documented == list(inspect.signature(cls).parameters)
