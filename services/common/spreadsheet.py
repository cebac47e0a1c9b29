"""CSV files as German offices open them: semicolons, CRLF line ends, a byte-order mark so
that Excel reads UTF-8, and no cell that a spreadsheet would run as a formula.

Names and notes in these files were typed by people (a clerk names a Navigator, a coach
writes a note); a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
would be a formula in Excel or LibreOffice (CSV injection). Such a cell gets a leading
apostrophe, which both show as text and do not display."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def german_csv(header: list[str], rows: Iterable[Iterable]) -> str:
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    writer.writerow([cell(h) for h in header])
    for row in rows:
        writer.writerow([cell(v) for v in row])
    return out.getvalue()
