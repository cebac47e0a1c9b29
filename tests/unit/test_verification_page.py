"""The public verification page once the holder's data was erased: it still says what the
certificate is, that it was valid (or revoked), and that the holder's data is gone."""
from html.parser import HTMLParser

from services.gateway import verification

RESULT = {"status": "valid", "number": "BW-DL-2026-000001", "participant": "Jörg Weiß",
          "holder_erased": False, "holder_erased_at": None,
          "municipality": "Wiesloch, Stadt", "programme": "Kommunale Digitallotsen",
          "role_name": "Digitallotse", "course_title": "Basisseminar", "provider": "VWA",
          "completed_on": "2026-11-20", "issued_at": "2026-11-21T09:00:00+00:00",
          "revoked_at": None, "revocation_reason": None, "superseded_by": None}


class Text(HTMLParser):
    def __init__(self):
        super().__init__()
        self.parts = []

    def handle_data(self, data):
        self.parts.append(data)


def text_of(page: str) -> str:
    parser = Text()
    parser.feed(page)
    return " ".join(parser.parts)


def test_a_valid_certificate_shows_its_holder():
    text = text_of(verification.page(RESULT, "7KQ2M-8XH4-R9TZ"))
    assert "Zertifikat gültig" in text and "Jörg Weiß" in text and "gelöscht" not in text


def test_an_erased_holder_is_named_nowhere_and_the_page_says_so():
    erased = dict(RESULT, participant=None, holder_erased=True,
                  holder_erased_at="2027-03-01T10:00:00+00:00")
    page = verification.page(erased, "7KQ2M-8XH4-R9TZ")
    text = text_of(page)
    assert "Zertifikat gültig ausgestellt – Inhaberdaten gelöscht" in text
    assert "personenbezogenen Daten der Inhaberin oder des Inhabers wurden" in text
    assert "BW-DL-2026-000001" in text and "None" not in text
    assert "<html lang='de'>" in page
    revoked = text_of(verification.page(dict(erased, status="revoked",
                                             revoked_at="2027-01-01T00:00:00+00:00",
                                             revocation_reason="Fehler"), "X"))
    assert "widerrufen" in revoked and "Daten der Inhaberin" in revoked
