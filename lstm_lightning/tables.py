"""Text cells and Markdown tables that also read as plain text, for the reports."""

from __future__ import annotations


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def fmt(value: object, spec: str) -> str:
    """``value`` formatted by ``spec``, an em dash for null, as-is if not a number."""
    if value is None:
        return "—"
    return format(value, spec) if is_number(value) else str(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table padded to aligned columns, so it also reads as plain text."""
    cells = [[_escape(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _escape(cell: str) -> str:
    # A "|" or a newline inside a cell would break the table's row.
    return str(cell).replace("|", "\\|").replace("\n", " ")
