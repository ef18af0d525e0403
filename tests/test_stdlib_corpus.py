"""scripts/stdlib_corpus.py: the offline character corpus of the transfer study."""

from __future__ import annotations

import pytest

from scripts import stdlib_corpus


def test_same_python_same_corpus(tmp_path, capsys):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    assert stdlib_corpus.main(["--out", str(a), "--bytes", "100000"]) == 0
    assert stdlib_corpus.main(["--out", str(b), "--bytes", "100000"]) == 0
    text = a.read_text(encoding="utf-8")
    assert a.read_bytes() == b.read_bytes() and len(a.read_bytes()) >= 100000
    assert text.startswith("# Python ") and "def " in text
    assert "sha256" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("size", ["0", "-5", str(10**12)])
def test_impossible_sizes_are_one_line(tmp_path, size):
    with pytest.raises(SystemExit) as err:
        stdlib_corpus.main(["--out", str(tmp_path / "x.txt"), "--bytes", size])
    assert str(err.value).startswith("error: ") and "\n" not in str(err.value)
    assert not (tmp_path / "x.txt").exists()


@pytest.mark.parametrize(
    "out, message",
    [
        (lambda t: t, "is a directory; name the file to write"),
        (lambda t: t / "file" / "x.txt", "cannot write it"),  # a folder that is a file
    ],
)
def test_an_unwritable_out_is_one_line(tmp_path, out, message):
    (tmp_path / "file").write_text("")
    path = out(tmp_path)
    with pytest.raises(SystemExit) as err:
        stdlib_corpus.main(["--out", str(path), "--bytes", "1000"])
    assert str(err.value).startswith(f"error: --out {path}") and message in str(err.value)
