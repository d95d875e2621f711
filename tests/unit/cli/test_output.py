"""Tables: aligned with a header rule on a terminal, tab-separated when piped."""

from __future__ import annotations

import io

from airflow_butido.cli.output import print_table


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


ROWS = [("a", "1", None), ("longer-name", "19.0", "DEB")]


def test_a_terminal_gets_aligned_columns_under_a_header_rule() -> None:
    out = Terminal()
    print_table(("Package", "Version", "Type"), ROWS, out=out)
    assert out.getvalue().splitlines() == [
        "Package      Version  Type",
        "-----------  -------  ----",
        "a            1",
        "longer-name  19.0     DEB",
    ]


def test_a_pipe_gets_one_tab_separated_line_per_row_without_header() -> None:
    out = io.StringIO()
    print_table(("Package", "Version", "Type"), [*ROWS, ("tab\there", "x\ny", "")], out=out)
    assert out.getvalue() == "a\t1\t\nlonger-name\t19.0\tDEB\ntab here\tx y\t\n"
