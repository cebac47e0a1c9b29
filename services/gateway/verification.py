"""The public verification page: what a person needs to trust (or not) a certificate."""
from __future__ import annotations

import html

from services.certificates.pdf import german_date

STYLE = ("body{font-family:Georgia,serif;margin:0;background:#f4f6f9;color:#1b1f24}"
         "main{max-width:40em;margin:3em auto;background:#fff;padding:2em 2.5em;"
         "border-radius:6px;box-shadow:0 1px 4px #0002}h1{margin-top:0}"
         ".ok{color:#1d6b32}.bad{color:#a3161b}.warn{color:#8a5a00}"
         "dt{font-weight:bold;margin-top:.6em}dd{margin-left:0}"
         "footer{font-size:.85em;color:#555;margin-top:2em}")


ERASED_NOTE = ("<p>Die personenbezogenen Daten der Inhaberin oder des Inhabers wurden auf "
               "Antrag oder nach Ablauf der Aufbewahrungsfrist gelöscht. Nummer, Status und "
               "Qualifizierung bleiben nachprüfbar.</p>")


def _details(result: dict) -> str:
    holder = result["participant"] if not result.get("holder_erased") \
        else "Daten gelöscht"
    rows = [("Name", holder), ("Kommune", result["municipality"]),
            ("Qualifizierung", f"{result['role_name']} – {result['programme']}"),
            ("Seminar", f"{result['course_title']}, {result['provider']}"),
            ("Abgeschlossen am", german_date(result["completed_on"])),
            ("Zertifikatsnummer", result["number"]),
            ("Ausgestellt am", german_date(result["issued_at"]))]
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>"
                            for k, v in rows) + "</dl>"


def page(result: dict, code: str) -> str:
    status = result["status"]
    erased = ERASED_NOTE if result.get("holder_erased") else ""
    if status == "valid" and erased:
        heading = "<h1 class='ok'>✔ Zertifikat gültig ausgestellt – Inhaberdaten gelöscht</h1>"
        body = ("<p>Dieses Zertifikat wurde ausgestellt und war gültig.</p>" + erased
                + _details(result))
    elif status == "valid":
        heading = "<h1 class='ok'>✔ Zertifikat gültig</h1>"
        body = ("<p>Dieses Zertifikat wurde ausgestellt und ist gültig.</p>" + _details(result))
    elif status == "revoked":
        heading = "<h1 class='bad'>✘ Zertifikat widerrufen</h1>"
        body = (f"<p>Widerrufen am {html.escape(german_date(result['revoked_at']))}. "
                f"Grund: {html.escape(result['revocation_reason'] or '–')}</p>" + erased
                + _details(result))
    elif status == "superseded":
        heading = "<h1 class='warn'>Zertifikat ersetzt</h1>"
        body = (f"<p>Dieses Zertifikat wurde durch das Zertifikat "
                f"<strong>{html.escape(result['superseded_by'])}</strong> ersetzt "
                "(zum Beispiel nach einer Namenskorrektur).</p>" + erased + _details(result))
    else:
        heading = "<h1 class='bad'>Unbekannter Prüfcode</h1>"
        body = ("<p>Zu diesem Prüfcode gibt es kein Zertifikat. Bitte prüfen Sie die Eingabe "
                "(z. B. 7KQ2M-8XH4-R9TZ); Groß- und Kleinschreibung spielen keine Rolle.</p>")
    return ("<!doctype html><html lang='de'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>Zertifikatsprüfung</title><style>{STYLE}</style></head><body><main>"
            f"{heading}{body}<footer>Geprüfter Code: {html.escape(code[:40])}. "
            "Maschinenlesbar: <code>/api/v1/verify/&lt;code&gt;</code>; signierte Nachweise "
            "prüfen Sie mit den Schlüsseln unter <code>/.well-known/jwks.json</code>."
            "</footer></main></body></html>")
