"""Write a character-level corpus that every machine has offline: Python's own stdlib.

    python scripts/stdlib_corpus.py                    # -> data/stdlib.txt, 2 MiB
    python scripts/stdlib_corpus.py --out X --bytes N

The corpus is the top-level ``Lib/*.py`` files of the running interpreter, sorted by
name and concatenated whole until at least ``--bytes`` bytes; the same Python version
gives the same file (the first line of the output names the version, so a result can be
traced to its corpus). The stdlib's non-ASCII characters are kept: ``source: text``
maps characters the train split never shows to its unknown symbol.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lstm_lightning.files import write_atomic  # noqa: E402

DEFAULT_BYTES = 2 * 1024 * 1024


def build(n_bytes: int) -> str:
    """The corpus text: a version header, then whole stdlib files until >= n_bytes."""
    lib = Path(sysconfig.get_paths()["stdlib"])
    parts = [f"# Python {platform.python_version()} stdlib corpus\n"]
    size = len(parts[0])
    for path in sorted(lib.glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text.encode("utf-8"))
        if size >= n_bytes:
            break
    if size < n_bytes:
        raise SystemExit(f"error: the stdlib at {lib} has only {size} bytes; lower --bytes")
    return "".join(parts)


def main(argv: list[str] | None = None) -> int:
    return write_main(argv, __doc__, "data/stdlib.txt", DEFAULT_BYTES, build)


def write_main(argv, doc: str, default_out: str, default_bytes: int, build, say="") -> int:
    """The corpus scripts' command line: ``--out``, ``--bytes``; ``build(n_bytes)`` gives
    the text, written atomically; prints its size, characters, ``say`` and its sha256."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--out", default=default_out, help="output file (default: %(default)s)")
    ap.add_argument("--bytes", type=int, default=default_bytes, help="minimum size in bytes")
    args = ap.parse_args(argv)
    if args.bytes < 1:
        raise SystemExit(f"error: --bytes must be at least 1, got {args.bytes}")
    if Path(args.out).is_dir():
        raise SystemExit(f"error: --out {args.out} is a directory; name the file to write")
    data = build(args.bytes).encode("utf-8")
    try:
        write_atomic(Path(args.out), data)  # makes the missing folders
    except OSError as err:
        raise SystemExit(f"error: --out {args.out}: cannot write it ({err.strerror})") from None
    digest = hashlib.sha256(data).hexdigest()[:16]
    print(
        f"wrote {args.out}: {len(data)} bytes, {len(set(data.decode()))} characters, "
        f"{say}sha256 {digest}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
