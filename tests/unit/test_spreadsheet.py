"""The German CSV files: what a spreadsheet would run as a formula stays text."""
import csv
import io

import pytest

from services.common.spreadsheet import cell, german_csv


@pytest.mark.parametrize("typed", ["=1+1", "+49 30 1234", "-2+3", "@SUM(A1)", "\tTab",
                                   "\rZeile"])
def test_a_cell_a_spreadsheet_would_calculate_becomes_text(typed):
    assert cell(typed) == "'" + typed


def test_other_cells_stay_as_typed():
    assert [cell(v) for v in ("Müller-Lüdenscheidt", "14612000", "", None, 3, "a=b")] == [
        "Müller-Lüdenscheidt", "14612000", "", "", "3", "a=b"]


def test_the_file_opens_in_excel_as_utf8_with_semicolons():
    text = german_csv(["Name", "Ort"], [["Jörg; der Zweite", "=Bonn"]])
    assert text.startswith("\ufeff") and text.endswith("\r\n")
    assert list(csv.reader(io.StringIO(text[1:]), delimiter=";")) == [
        ["Name", "Ort"], ["Jörg; der Zweite", "'=Bonn"]]
