"""The certificate as a person frames it: German, A4, fonts embedded, QR code to verification."""
from __future__ import annotations

import io
import os
from datetime import date, datetime

import font_source_serif_pro
import segno
from fpdf import FPDF

from services.common.clock import calendar_day

FONT_DIR = os.path.join(os.path.dirname(font_source_serif_pro.__file__), "files")
MONTHS = ["Januar", "Februar", "März", "April", "Mai", "Juni", "Juli", "August", "September",
          "Oktober", "November", "Dezember"]


def german_date(value: date | datetime | str) -> str:
    """A day written out in German; a moment (an issue or revocation time) on its day in Germany."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value) if "T" in value else date.fromisoformat(value)
    if isinstance(value, datetime):
        value = calendar_day(value)
    return f"{value.day}. {MONTHS[value.month - 1]} {value.year}"


def render(data: dict, number: str, verification_url: str, code: str, issuer_name: str,
           issued_on: date) -> bytes:
    pdf = FPDF(orientation="portrait", unit="mm", format="A4")
    pdf.set_title(f"Zertifikat {number}")
    pdf.set_author(issuer_name)
    pdf.set_auto_page_break(auto=False)
    pdf.add_font("Serif", "", os.path.join(FONT_DIR, "SourceSerifPro-Regular.ttf"))
    pdf.add_font("Serif", "B", os.path.join(FONT_DIR, "SourceSerifPro-Bold.ttf"))
    pdf.add_font("Serif", "I", os.path.join(FONT_DIR, "SourceSerifPro-It.ttf"))
    pdf.add_page()
    width = pdf.w - 40

    pdf.set_draw_color(30, 70, 120)
    pdf.set_line_width(0.8)
    pdf.rect(12, 12, pdf.w - 24, pdf.h - 24)

    pdf.set_xy(20, 32)
    pdf.set_font("Serif", "B", 30)
    pdf.set_text_color(30, 70, 120)
    pdf.cell(width, 14, "Zertifikat", align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(0, 0, 0)
    pdf.set_font("Serif", "", 13)
    pdf.set_x(20)
    pdf.cell(width, 8, data["programme_name"], align="C", new_x="LMARGIN", new_y="NEXT")

    pdf.ln(14)
    pdf.set_x(20)
    pdf.set_font("Serif", "", 12)
    pdf.cell(width, 7, "Hiermit wird bestätigt, dass", align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_x(20)
    pdf.set_font("Serif", "B", 22)
    pdf.cell(width, 12, f"{data['given_name']} {data['family_name']}", align="C",
             new_x="LMARGIN", new_y="NEXT")
    pdf.set_x(20)
    pdf.set_font("Serif", "", 12)
    pdf.cell(width, 7, data["municipality_name"], align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.set_x(20)
    pdf.multi_cell(width, 7, (
        f"die Qualifizierung „{data['course_title']}“ bei {data['provider_name']} in "
        f"{data['location']} mit allen Modulen erfolgreich abgeschlossen hat und damit als "
        f"{data['role_name']} qualifiziert ist."), align="C", new_x="LMARGIN", new_y="NEXT")

    pdf.ln(8)
    pdf.set_x(35)
    pdf.set_font("Serif", "B", 12)
    pdf.cell(width - 30, 8, "Module", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Serif", "", 11)
    for module in data["modules"]:
        pdf.set_x(35)
        pdf.cell(12, 7, f"{module['number']}.")
        pdf.cell(width - 80, 7, module["title"])
        pdf.cell(38, 7, german_date(module["date"]), align="R", new_x="LMARGIN", new_y="NEXT")
    if data.get("milestones"):
        pdf.ln(3)
        pdf.set_x(35)
        pdf.set_font("Serif", "B", 12)
        pdf.cell(width - 30, 8, "Meilensteine", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Serif", "", 11)
        for milestone in data["milestones"]:
            pdf.set_x(35)
            pdf.cell(width - 68, 7, milestone["title"])
            pdf.cell(38, 7, german_date(milestone["reached_on"]), align="R", new_x="LMARGIN",
                     new_y="NEXT")

    pdf.set_xy(20, 225)
    pdf.set_font("Serif", "", 11)
    place = data["location"]
    pdf.cell(110, 6, f"{place}, {german_date(data['completed_on'])}", new_x="LMARGIN",
             new_y="NEXT")
    pdf.set_x(20)
    pdf.cell(110, 6, issuer_name, new_x="LMARGIN", new_y="NEXT")
    pdf.set_x(20)
    pdf.cell(110, 6, f"Ausgestellt am {german_date(issued_on)}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_x(20)
    pdf.set_font("Serif", "B", 11)
    pdf.cell(110, 6, f"Zertifikatsnummer {number}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_x(20)
    pdf.set_font("Serif", "", 9)
    pdf.cell(110, 5, f"Prüfcode {code}", new_x="LMARGIN", new_y="NEXT")
    pdf.set_x(20)
    pdf.cell(110, 5, f"Echtheit prüfen: {verification_url}", new_x="LMARGIN", new_y="NEXT")

    qr = io.BytesIO()
    segno.make(verification_url, error="m").save(qr, kind="png", scale=8, border=1)
    qr.seek(0)
    pdf.image(qr, x=pdf.w - 20 - 42, y=222, w=42, h=42)
    return bytes(pdf.output())
