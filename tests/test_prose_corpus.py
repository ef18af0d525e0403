"""scripts/prose_corpus.py: the offline English-prose corpus of the μTransfer study."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts import prose_corpus

# Held out for checking the study's result independently (issue 14): never in the corpus.
HELD_OUT = [Path("/usr/share/common-licenses"), Path("/usr/share/perl")]  # licenses, pod


def test_same_python_same_corpus(tmp_path, capsys):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    assert prose_corpus.main(["--out", str(a), "--bytes", "100000"]) == 0
    assert prose_corpus.main(["--out", str(b), "--bytes", "100000"]) == 0
    text = a.read_text(encoding="utf-8")
    assert a.read_bytes() == b.read_bytes() and len(a.read_bytes()) >= 100000
    assert text.startswith("# Python ") and "prose corpus" in text.splitlines()[0]
    out = capsys.readouterr().out
    assert "sha256" in out and "Python " in out
    assert not list(tmp_path.glob("*.tmp"))


def test_only_prose_paragraphs_and_each_once(tmp_path):
    out = tmp_path / "p.txt"
    prose_corpus.main(["--out", str(out), "--bytes", "200000"])
    paragraphs = out.read_text(encoding="utf-8").split("\n\n")[1:-1]  # after the header
    assert len(paragraphs) == len(set(paragraphs))
    assert not any(line.lstrip().startswith(">>>") for p in paragraphs for line in p.split("\n"))
    assert all(len(p.split()) >= 6 for p in paragraphs)


@pytest.mark.parametrize(
    "paragraph, prose",
    [
        ("Assert statements are a convenient way to insert debugging assertions.", True),
        ('The "async for" statement allows convenient iteration over iterables.', True),
        ("Return a list of the words in the string, using sep as the separator.", True),
        (">>> f(1, *(2,))\n1 2 and then some more words here", False),
        ("assert_stmt ::= 'assert' expression [',' expression]", False),
        ("x = {a: b[i] for i in range(n)}  # a dict of the pairs, six words", False),
        ("Too short to be prose.", False),
        ("0x10 0x1000 0x2000 0x4000 0x8000 0x10000 0x20000", False),
    ],
)
def test_what_counts_as_prose(paragraph, prose):
    assert prose_corpus.is_prose(paragraph) is prose


def test_docstrings_skip_test_folders_and_bad_files(tmp_path):
    (tmp_path / "pkg" / "tests").mkdir(parents=True)
    (tmp_path / "top.py").write_text('"""Top module docstring."""\n')
    (tmp_path / "pkg" / "mod.py").write_text('def f():\n    """Function docstring."""\n')
    (tmp_path / "pkg" / "tests" / "t.py").write_text('"""A test docstring."""\n')
    (tmp_path / "pkg" / "py2.py").write_text('print "python 2"\n')  # not Python 3: skipped
    found = list(prose_corpus.docstrings(tmp_path))
    assert found == ["Function docstring.", "Top module docstring."]  # sorted by path


@pytest.mark.parametrize("size", ["0", "-5", str(10**12)])
def test_impossible_sizes_are_one_line(tmp_path, size, monkeypatch):
    monkeypatch.setattr(prose_corpus, "docstrings", lambda lib: iter([]))  # topics only: fast
    with pytest.raises(SystemExit) as err:
        prose_corpus.main(["--out", str(tmp_path / "x.txt"), "--bytes", size])
    assert str(err.value).startswith("error: ") and "\n" not in str(err.value)
    assert not (tmp_path / "x.txt").exists()


def test_an_unwritable_out_is_one_line(tmp_path):
    with pytest.raises(SystemExit) as err:
        prose_corpus.main(["--out", str(tmp_path), "--bytes", "1000"])
    assert str(err.value) == f"error: --out {tmp_path} is a directory; name the file to write"


@pytest.mark.slow
def test_the_default_corpus_leaves_the_held_out_texts_out(tmp_path):
    """The whole default corpus (~7 s): 1.25 MiB, and no paragraph of a held-out text."""
    out = tmp_path / "prose.txt"
    assert prose_corpus.main(["--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert len(text.encode("utf-8")) >= prose_corpus.DEFAULT_BYTES
    held = [p for root in HELD_OUT if root.is_dir() for p in root.rglob("*") if p.is_file()]
    held = [p for p in held if p.suffix in ("", ".pod", ".txt")]
    if not held:
        pytest.skip("no held-out texts on this machine to compare with")
    words = text.split()
    corpus = {" ".join(words[i : i + 24]) for i in range(len(words) - 23)}  # every 24-word run
    for path in held:
        held_words = path.read_text(encoding="utf-8", errors="replace").split()
        # A held-out text's 24-word runs (a sentence or two), every 24 words: none in the corpus.
        runs = {" ".join(held_words[i : i + 24]) for i in range(0, len(held_words) - 23, 24)}
        assert not runs & corpus, path
