"""Tabular output: an aligned table on a terminal, tab-separated when piped,
CSV with ``--csv`` and JSON with ``--json``."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, TextIO


def add_format_flags(parser: Any) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--csv", action="store_true", help="print CSV")
    group.add_argument("--json", action="store_true", help="print JSON")


def print_table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    as_csv: bool = False,
    as_json: bool = False,
    out: TextIO | None = None,
) -> None:
    out = out or sys.stdout
    cells = [["" if c is None else str(c) for c in row] for row in rows]
    if as_json:
        json.dump([dict(zip(headers, row, strict=True)) for row in cells], out, indent=2)
        out.write("\n")
        return
    if as_csv:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows(cells)
        return
    if not out.isatty():
        for row in cells:
            out.write("\t".join(c.replace("\t", " ").replace("\n", " ") for c in row) + "\n")
        return
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out.write(line.rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
