"""Reading the CSV files German offices export (Excel's "CSV (Trennzeichen-getrennt)" among
them): semicolon or comma (or tab), UTF-8 with or without BOM or Windows-1252, a header row
naming the columns, optionally Excel's ``sep=;`` line first. Only the file's shape is checked
here; whether a row can be enrolled is the enrolment service's to say (a dry run)."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

MAX_ROWS = 500  # the batch limit of the enrolment service
# Header names as clerks write them (lower case, without spaces, hyphens and underscores).
COLUMNS = {
    "given_name": ("vorname", "vornamen", "givenname", "firstname"),
    "family_name": ("nachname", "familienname", "zuname", "familyname", "lastname", "surname"),
    "email": ("email", "emailadresse", "mail", "mailadresse", "dienstlicheemail"),
    "department": ("abteilung", "amt", "fachbereich", "organisationseinheit", "department"),
}
REQUIRED = ("given_name", "family_name", "email")
COLUMN_TITLES = {"given_name": "Vorname", "family_name": "Nachname", "email": "E-Mail",
                 "department": "Abteilung"}


@dataclass(frozen=True)
class Layout:
    """What a kind of file must hold: its columns (with the names clerks give them), which are
    required, how the header reads in German, and how many rows one upload may have."""
    columns: dict
    required: tuple
    titles: dict
    example_header: str
    max_rows: int
    rows_are: str  # "Personen", "Kontakte": for the message about a file without rows


ENROLMENTS = Layout(COLUMNS, REQUIRED, COLUMN_TITLES,
                    "Vorname;Nachname;E-Mail;Abteilung (Abteilung ist freiwillig)", MAX_ROWS,
                    "Personen")
# The programme office's onboarding file: one municipality contact per row.
CONTACTS = Layout(
    {"ags": ("ags", "gemeindeschluessel", "gemeindeschlüssel", "amtlichergemeindeschluessel",
             "amtlichergemeindeschlüssel", "schluessel", "schlüssel"),
     "contact_name": ("kontakt", "kontaktname", "kontaktperson", "name", "ansprechperson",
                      "ansprechpartner", "ansprechpartnerin"),
     "contact_email": ("email", "emailadresse", "mail", "kontaktemail", "dienstlicheemail")},
    ("ags", "contact_name", "contact_email"),
    {"ags": "AGS", "contact_name": "Kontaktperson", "contact_email": "E-Mail"},
    "AGS;Kontaktperson;E-Mail", 5000, "Kontakte")


class UploadProblem(Exception):
    """The file as a whole cannot be read; the message is German, for the clerk."""


@dataclass
class Row:
    line: int  # line in the file, as an editor shows it
    values: dict
    problems: dict = field(default_factory=dict)  # field -> German message


def decode(raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:
        raise UploadProblem("Die Datei ist weder UTF-8 noch Windows-1252 (ANSI). Bitte "
                            "speichern Sie sie als „CSV UTF-8“ oder „CSV (Trennzeichen-"
                            "getrennt)“.") from None


def _key(name: str) -> str:
    return "".join(c for c in name.strip().strip('"').lower() if c not in " -_.")


def parse(raw: bytes, layout: Layout = ENROLMENTS) -> list[Row]:
    text = decode(raw)
    if "\x00" in text:
        raise UploadProblem("Die Datei enthält Binärdaten. Bitte laden Sie eine CSV-Datei hoch "
                            "(keine .xlsx-Datei: in Excel „Speichern unter“ → „CSV“).")
    lines = text.splitlines()
    first = 0
    while first < len(lines) and not lines[first].strip():
        first += 1
    if first == len(lines):
        raise UploadProblem("Die Datei ist leer.")
    delimiter = None
    if lines[first].lower().startswith("sep=") and len(lines[first]) >= 5:
        delimiter = lines[first][4]
        first += 1
        if first == len(lines):
            raise UploadProblem("Die Datei enthält keine Kopfzeile.")
    header_line = lines[first]
    if delimiter is None:
        counts = {d: header_line.count(d) for d in (";", ",", "\t")}
        delimiter = max(counts, key=counts.get)
        if counts[delimiter] == 0:
            raise UploadProblem("In der ersten Zeile sind keine Spalten zu erkennen. Die erste "
                                "Zeile nennt die Spalten, getrennt durch Semikolon oder Komma: "
                                + layout.example_header.split(" ")[0])
    reader = csv.reader(io.StringIO("\n".join(lines[first:])), delimiter=delimiter)
    header = next(reader)
    positions = {}
    for index, name in enumerate(header):
        for column, aliases in layout.columns.items():
            if _key(name) in aliases and column not in positions:
                positions[column] = index
    missing = [layout.titles[c] for c in layout.required if c not in positions]
    if missing:
        raise UploadProblem("Die Kopfzeile nennt nicht alle Spalten; es fehlt: "
                            + ", ".join(missing) + f". Erwartet: {layout.example_header}.")
    rows = []
    for cells in reader:
        line = reader.line_num + first
        if not any(cell.strip() for cell in cells):
            continue
        values = {column: (cells[index].strip() if index < len(cells) else "")
                  for column, index in positions.items()}
        row = Row(line=line, values=values)
        if len(cells) > len(header) and any(c.strip() for c in cells[len(header):]):
            row.problems["_row"] = ("Die Zeile hat mehr Spalten als die Kopfzeile (ein "
                                    "Trennzeichen zu viel?).")
        rows.append(row)
        if len(rows) > layout.max_rows:
            raise UploadProblem(f"Die Datei hat mehr als {layout.max_rows} Zeilen. Bitte teilen "
                                "Sie sie auf.")
    if not rows:
        raise UploadProblem(f"Die Datei enthält nur die Kopfzeile, aber keine {layout.rows_are}.")
    return rows


def enrolment_row(row: Row, course_id: str, idempotency_key: str) -> dict:
    """The enrolment request for a row (empty department: none)."""
    participant = {k: row.values.get(k, "") for k in REQUIRED}
    participant["department"] = row.values.get("department") or None
    return {"course_id": course_id, "participant": participant,
            "idempotency_key": idempotency_key}
