"""Write an English-prose character corpus that every machine has offline: Python's own docs.

    python scripts/prose_corpus.py                     # -> data/prose.txt, 1.25 MiB
    python scripts/prose_corpus.py --out X --bytes N

The second corpus of the μTransfer study (issue 14), of a different kind from
``scripts/stdlib_corpus.py``'s source code: the prose paragraphs of

1. the language reference's topics that the interpreter ships for ``help()``
   (``pydoc_data/topics.py``, sorted by topic), then
2. the docstrings of the stdlib (``Lib/**/*.py`` but the test folders, sorted by path),
   read with ``ast`` (nothing is imported).

A paragraph (text between blank lines, dedented) is kept when it reads as prose
(``is_prose``): no interpreter prompt, at least 6 words, at least 70 % of them plain
words, and under 2 % of its characters code punctuation; a paragraph seen before is
dropped. The kept paragraphs are joined by blank lines until at least ``--bytes`` bytes.
Nothing else is read: not Perl's documentation nor Debian's license texts, which the
study keeps aside as held-out data.

The text depends on the Python version (its docs and docstrings change between
releases): the first line of the output names the version, and the script prints the
size and a sha256, so a result can be traced to its corpus.
"""

from __future__ import annotations

import ast
import itertools
import platform
import re
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path
from pydoc_data.topics import topics

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from scripts.stdlib_corpus import write_main  # noqa: E402

DEFAULT_BYTES = 1280 * 1024  # 1.25 MiB: Pythons 3.10-3.13 give 1.44-1.55 MB
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
CODE_CHARS = set("[]{}=<>_#|\\@$%^&~`")
WORD = re.compile(r"[\"'(*“‘]*[A-Za-z][a-z]*(?:'[a-z]+)?[\"')*”’.,;:!?]*")
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def is_prose(paragraph: str) -> bool:
    """Whether a (dedented) paragraph reads as English prose rather than code or a table."""
    lines = paragraph.splitlines()
    if any(line.lstrip().startswith((">>>", "...", "$ ", "::=")) for line in lines):
        return False
    words = paragraph.split()
    if len(words) < 6:
        return False
    plain = sum(WORD.fullmatch(w) is not None for w in words)
    code = sum(c in CODE_CHARS for c in paragraph)
    return plain >= 0.7 * len(words) and code < 0.02 * len(paragraph)


def paragraphs(text: str) -> Iterator[str]:
    """The text's paragraphs (split at blank lines), each dedented and stripped."""
    for block in re.split(r"\n[ \t]*\n", text):
        block = textwrap.dedent(block).strip()
        if block:
            yield block


def topic_texts() -> Iterator[str]:
    """The language reference's topics, as ``help()`` shows them, sorted by topic."""
    for name in sorted(topics):
        yield topics[name]


def docstrings(lib: Path) -> Iterator[str]:
    """Every docstring of the stdlib but its tests, by path, each file's in ``ast.walk`` order."""
    for path in sorted(lib.rglob("*.py")):
        rel = path.relative_to(lib)
        if SKIP_DIRS & set(rel.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):  # e.g. lib2to3's Python 2 test data
            continue
        for node in ast.walk(tree):
            if isinstance(node, DOCUMENTED) and (doc := ast.get_docstring(node)):
                yield doc


def build(n_bytes: int) -> str:
    """The corpus text: a version header, then prose paragraphs until >= n_bytes."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    parts = [f"# Python {platform.python_version()} prose corpus\n"]
    size, seen = len(parts[0]), set()
    for text in itertools.chain(topic_texts(), docstrings(lib)):  # lazily: stop at n_bytes
        for paragraph in paragraphs(text):
            if paragraph in seen or not is_prose(paragraph):
                continue
            seen.add(paragraph)
            parts.append(paragraph + "\n\n")
            size += len(parts[-1].encode("utf-8"))
            if size >= n_bytes:
                return "".join(parts)
    raise SystemExit(
        f"error: Python {platform.python_version()}'s docs at {lib} give only {size} bytes "
        "of prose; lower --bytes"
    )


def main(argv: list[str] | None = None) -> int:
    version = f"Python {platform.python_version()}, "
    return write_main(argv, __doc__, "data/prose.txt", DEFAULT_BYTES, build, version)


if __name__ == "__main__":
    sys.exit(main())
