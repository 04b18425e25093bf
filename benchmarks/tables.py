"""Markdown tables for the benchmark scripts: columns are ``(key, header, format)`` triples."""

from __future__ import annotations

from typing import Any, Iterable, Sequence

Column = tuple[str, str, str]


def cell(row: dict[str, Any], key: str, fmt: str) -> str:
    """``row[key]`` formatted, or ``n/a`` when it is missing or ``None``."""
    value = row.get(key)
    return "n/a" if value is None else fmt.format(value)


def markdown_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> str:
    """The first column left-aligned (a label), the others right-aligned (figures)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"]
    lines += ["| " + " | ".join(cell(r, k, f) for k, _, f in columns) + " |" for r in rows]
    return "\n".join(lines)


def cells_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str) -> str:
    """A table of cells already formatted; ``align`` has one letter per column, ``l`` or ``r``."""
    if len(align) != len(headers):
        raise ValueError(f"cells_table: {len(headers)} headers but {len(align)} alignments")
    lines = ["| " + " | ".join(headers) + " |", "|" + "".join("---|" if a == "l" else "---:|" for a in align)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_rich(columns: Sequence[Column], rows: Sequence[dict[str, Any]], title: str, width: int = 160) -> None:
    """The same table in the terminal (rich), the first column left-aligned."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for key, header, _ in columns:
        table.add_column(header, justify="left" if key == columns[0][0] else "right")
    for r in rows:
        table.add_row(*(cell(r, k, f) for k, _, f in columns))
    Console(width=width).print(table)
