"""Rendering notices into e-mails and handing them to a mail server or to files.

No nameko here. The Message-ID is derived from the notice id, so if a crash falls between
sending and recording, the second copy carries the same Message-ID and a mail server or reader
can drop it.

Addresses: a domain with umlauts goes out in IDNA (punycode) in the envelope and the headers, so
any server takes it; a local part beyond ASCII needs SMTPUTF8 and is sent that way (UTF-8
headers) only where the server offers it. What can never be sent fails at once.

The message is written here directly as bytes (``Mail``), in the form the ``email`` package
gives it: headers with RFC 2047 encoded words (or UTF-8 for a mail that needs SMTPUTF8),
multipart/alternative of a plain text and an HTML part in UTF-8, quoted-printable, and for a
certificate multipart/mixed with the PDF in base64. Building it with the ``email`` package's
default policy cost about 1.3 ms a mail (headers parsed back from objects, folded, generated),
more than everything else a mail costs together; a mail reader sees the same headers and parts
(tests/unit/test_mail_format.py compares the two).
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import smtplib
import socket
import time
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from services.common.schemas import (
    UnencodableAddress,
    ascii_domain,
    envelope_address,
    split_address,
)

TEMPLATES = Path(__file__).resolve().parent / "templates"
_env = Environment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                   autoescape=False, trim_blocks=True, lstrip_blocks=True,
                   keep_trailing_newline=True)


def german_date(value) -> str:
    from services.certificates.pdf import german_date as format_date
    return format_date(value)


_env.filters["datum"] = german_date


class TransientFailure(Exception):
    pass


class PermanentFailure(Exception):
    pass


def render(template: str, context: dict) -> tuple[str, str, str]:
    """(subject, plain text, HTML): a template writes the subject, then ``@@text@@`` and the
    plain text, then ``@@html@@`` and the HTML part (values escaped there with ``|e``). The
    shared layout's macros take the values as ``m``: imported without context, the layout is
    evaluated once, not for every mail."""
    full = _env.get_template(f"{template}.j2").render(context, m=context)
    subject, _, rest = full.partition("@@text@@")
    text, _, html = rest.partition("@@html@@")
    return " ".join(subject.split()), text.strip() + "\n", html.strip()


# --- headers --------------------------------------------------------------------------------------

MAX_LINE = 78
# RFC 5322 atext, with RFC 6532's UTF-8 (only written raw where SMTPUTF8 is used).
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+"
_ATOMS = re.compile(rf"{_ATEXT}( {_ATEXT})*")  # a display name that needs no quotes
_DOT_ATOM = re.compile(rf"{_ATEXT}(\.{_ATEXT})*")  # a local part that needs no quotes
# Q encoding (RFC 2047 5(3)): what may stand for itself in a phrase; space is "_".
_Q_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!*+-/")
_Q = {b: (chr(b) if b in _Q_PLAIN else "_" if b == 0x20 else f"={b:02X}") for b in range(256)}
_WORD_TEXT = 45  # encoded text per encoded word: "Subject: " and one word stay within a line


def _printable(value: str) -> bool:
    return value.isprintable() and "=?" not in value


@lru_cache(maxsize=4096)
def _q_char(char: str) -> str:
    """A character's Q encoding, worked out once per character (names repeat their letters)."""
    return "".join(_Q[b] for b in char.encode("utf-8"))


def encoded_words(value: str, size: int = _WORD_TEXT) -> list[str]:
    """``value`` as RFC 2047 encoded words (UTF-8, Q encoding), each within ``size`` encoded
    characters and no character split between two; a reader joins adjacent ones back without
    the folding space between them."""
    words, current = [], ""
    for char in value:
        piece = _q_char(char)
        if current and len(current) + len(piece) > size:
            words.append(f"=?utf-8?q?{current}?=")
            current = ""
        current += piece
    if current:
        words.append(f"=?utf-8?q?{current}?=")
    return words


def _text_tokens(value: str, utf8: bool) -> list[str]:
    """Unstructured text (the subject) as header tokens to fold between."""
    if _printable(value) and (value.isascii() or utf8):
        return value.split(" ")
    return encoded_words(value)


def _phrase(name: str, utf8: bool) -> list[str]:
    """A display name: as it is, quoted if it must be, or its words beyond plain ASCII as
    encoded words. Each run of such words becomes one encoded word where it fits (60
    characters): some readers (Python's own) keep the space between two adjacent encoded words
    of a name, which others drop, so a name is split between encoded words only where it must."""
    if not name:
        return []
    if _printable(name) and (name.isascii() or utf8):
        if _ATOMS.fullmatch(name):
            return name.split(" ")
        return ['"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"']
    tokens, run = [], []
    for word in name.split(" ") + [None]:
        if word is not None and not (word.isascii() and _ATOMS.fullmatch(word)
                                     and "=?" not in word):
            run.append(word)
            continue
        if run:
            tokens += encoded_words(" ".join(run), 60)
            run = []
        if word is not None:
            tokens.append(word)
    return tokens


def _fold(name: str, tokens: list[str]) -> str:
    """``Name: token token ...``, folded between tokens where a line would grow too long."""
    lines = [f"{name}:"]
    for token in tokens:
        if len(lines[-1]) + 1 + len(token) > MAX_LINE and lines[-1] != f"{name}:":
            lines.append("")
        lines[-1] += " " + token
    return "\n".join(lines)


def header_address(name: str | None, address: str) -> Address:
    """The address for a From/To/Cc header: the domain in IDNA, so the header stays ASCII (the
    name is encoded by the e-mail package); a non-ASCII local part keeps its domain readable,
    as such a mail travels over SMTPUTF8 with UTF-8 headers anyway."""
    try:
        local, domain = split_address(address)
        if local.isascii():
            domain = ascii_domain(domain)
        else:
            ascii_domain(domain)  # it must have an IDNA form for the envelope
        return Address(display_name=name or "", username=local, domain=domain)
    except (UnencodableAddress, ValueError) as exc:
        reason = str(exc) if isinstance(exc, UnencodableAddress) else "malformed address"
        raise PermanentFailure(f"address cannot be used: {reason}") from None


@dataclass(frozen=True)
class _Party:
    name: str
    local: str
    domain: str  # IDNA unless the local part needs SMTPUTF8 anyway
    envelope: str

    @property
    def utf8(self) -> bool:
        return not self.local.isascii()

    def tokens(self, utf8: bool) -> list[str]:
        local = self.local if _DOT_ATOM.fullmatch(self.local) else \
            '"' + self.local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        spec = f"{local}@{self.domain}"
        return [*_phrase(self.name, utf8), f"<{spec}>"] if self.name else [spec]


def _party(name: str | None, address: str) -> _Party:
    """The header and envelope forms of an address (what ``header_address`` checks)."""
    try:
        local, domain = split_address(address)
        header_domain = ascii_domain(domain) if local.isascii() else domain
        envelope = envelope_address(address)
    except UnencodableAddress as exc:
        raise PermanentFailure(f"address cannot be used: {exc}") from None
    if not (local + domain).isprintable() or any(c.isspace() for c in local + domain) \
            or "\r" in (name or "") or "\n" in (name or ""):
        raise PermanentFailure("address cannot be used: malformed address")
    return _Party(name or "", local, header_domain, envelope)


# --- the message ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mail:
    """A mail ready to go: its envelope, and the message as bytes (``\\n`` line ends; the SMTP
    transport sends them as CRLF)."""

    message_id: str
    sender: str
    recipients: tuple[str, ...]
    smtputf8: bool  # a local part beyond ASCII: only over SMTPUTF8, with UTF-8 headers
    data: bytes

    def __bytes__(self) -> bytes:
        return self.data


def _body(text: str) -> bytes:
    """A text part as the ``email`` package writes it: UTF-8, every line ended by a line
    break, quoted-printable (7-bit clean for any server, lines of at most 76 characters)."""
    lines = text.encode("utf-8").splitlines()
    return binascii.b2a_qp(b"\n".join(lines) + b"\n", istext=True)


def _text_part(subtype: str, text: str) -> bytes:
    return (f'Content-Type: text/{subtype}; charset="utf-8"\n'
            f"Content-Transfer-Encoding: quoted-printable\n\n").encode("ascii") + _body(text)


def _multipart(subtype: str, boundary: str, parts: list[bytes]) -> bytes:
    head = f'Content-Type: multipart/{subtype};\n boundary="{boundary}"\n\n'.encode("ascii")
    delimiter = f"\n--{boundary}\n".encode("ascii")
    return (head + f"--{boundary}\n".encode("ascii") + delimiter.join(parts)
            + f"\n--{boundary}--\n".encode("ascii"))


def _filename(filename: str) -> str:
    if filename.isascii() and filename.isprintable() and '"' not in filename \
            and "\\" not in filename:
        return f'filename="{filename}"'
    return f"filename*=utf-8''{quote(filename, safe='')}"  # RFC 2231


def _pdf_part(filename: str, content: bytes) -> bytes:
    return (f"Content-Type: application/pdf\nContent-Transfer-Encoding: base64\n"
            f"Content-Disposition: attachment; {_filename(filename)}\n\n").encode("ascii") + \
        base64.encodebytes(content).rstrip(b"\n")


def build_message(notice, sender: tuple[str, str], context: dict,
                  attachment: tuple[str, bytes] | None = None) -> Mail:
    subject, text, html = render(notice.template, context)
    author = _party(*sender)
    to = _party(notice.to_name, notice.to_email)
    cc = _party(None, notice.cc_email) if notice.cc_email else None
    parties = [p for p in (author, to, cc) if p is not None]
    utf8 = any(p.utf8 for p in parties)
    message_id = f"<{notice.id}@notices.lotsen>"
    headers = [_fold("Subject", _text_tokens(subject, utf8)),
               _fold("From", author.tokens(utf8)), _fold("To", to.tokens(utf8))]
    if cc is not None:
        headers.append(_fold("Cc", cc.tokens(utf8)))
    headers += [f"Date: {formatdate(localtime=False)}", f"Message-ID: {message_id}",
                "Auto-Submitted: auto-generated", "MIME-Version: 1.0"]
    boundary = f"=_{getattr(notice.id, 'hex', notice.id)}"
    body = _multipart("alternative", boundary + "_a", [
        _text_part("plain", text),
        _text_part("html", f"<!doctype html><html lang='de'><body style='font-family:"
                           f"Georgia,serif;max-width:40em'>{html}</body></html>")])
    if attachment:
        body = _multipart("mixed", boundary + "_m", [body.rstrip(b"\n"),
                                                      _pdf_part(*attachment)])
    data = "\n".join(headers).encode("utf-8" if utf8 else "ascii") + b"\n" + body
    return Mail(message_id, author.envelope, tuple(p.envelope for p in (to, cc) if p),
                utf8, data)


def _addresses(message: EmailMessage, *names: str) -> list[Address]:
    return [a for name in names for header in (message.get_all(name) or ())
            for a in header.addresses]


def needs_smtputf8(message: EmailMessage) -> bool:
    return any(not a.username.isascii() for a in _addresses(message, "From", "To", "Cc"))


def envelope(address: Address) -> str:
    """The address for MAIL FROM / RCPT TO: always an IDNA domain."""
    return envelope_address(address.addr_spec)


def as_mail(message) -> Mail:
    """A ``Mail`` as it is, or one from an ``email.message.EmailMessage`` made elsewhere."""
    if isinstance(message, Mail):
        return message
    utf8 = needs_smtputf8(message)
    try:
        sender = envelope(_addresses(message, "From")[0])
        recipients = tuple(envelope(a) for a in _addresses(message, "To", "Cc"))
    except UnencodableAddress as exc:
        raise PermanentFailure(f"address cannot be used: {exc}") from None
    policy = message.policy.clone(utf8=True) if utf8 else None
    return Mail(str(message["Message-ID"] or ""), sender, recipients, utf8,
                message.as_bytes(policy=policy))


class FileTransport:
    """The embedded default: one .eml file per notice, named by the notice id."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def send(self, notice_id, message: Mail | EmailMessage):
        data = as_mail(message).data
        target = self.directory / f"{notice_id}.eml"
        partial = target.with_suffix(".eml.partial")
        try:
            partial.write_bytes(data)
        except FileNotFoundError:  # the first mail, or the directory was removed
            self.directory.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(data)
        os.replace(partial, target)  # one file per notice, whatever the retries

    def end_round(self):
        pass

    def close(self):
        pass


class SmtpTransport:
    """Sends over one SMTP connection for as long as mail keeps coming, instead of a
    connection, greeting and EHLO (and TLS and login) per mail or per delivery round. At the
    end of each round (``end_round``) the connection is closed if it has not been used for
    ``keep_open_s``; otherwise the next round checks it with a NOOP before its first mail, so
    a session the server dropped meanwhile costs nothing."""

    def __init__(self, host: str, port: int, starttls: bool = False, username: str | None = None,
                 password: str | None = None, timeout: float = 20, keep_open_s: float = 10):
        self.host, self.port, self.starttls = host, int(port), starttls
        self.username, self.password, self.timeout = username, password, timeout
        self.keep_open_s = keep_open_s
        self._smtp: smtplib.SMTP | None = None
        self._check = False  # NOOP before the next mail: the connection sat between rounds
        self._used = 0.0

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is None:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            try:
                if self.starttls:
                    smtp.starttls()
                if self.username:
                    smtp.login(self.username, self.password or "")
            except BaseException:
                smtp.close()
                raise
            self._smtp = smtp
        return self._smtp

    def end_round(self):
        if self._smtp is not None and time.monotonic() - self._used > self.keep_open_s:
            self.close()
        self._check = True

    def close(self):
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def send(self, notice_id, message: Mail | EmailMessage):
        mail = as_mail(message)
        try:
            if self._smtp is not None and self._check:
                try:
                    self._smtp.noop()  # still there? A dropped session costs nothing yet
                except (smtplib.SMTPException, OSError):
                    self.close()
            self._check = False
            smtp = self._connection()
            options = ()
            if mail.smtputf8:
                smtp.ehlo_or_helo_if_needed()
                if not smtp.has_extn("smtputf8"):
                    raise PermanentFailure("the address has characters beyond ASCII before the "
                                           "@, and the mail server does not offer SMTPUTF8")
                options = ("SMTPUTF8", "BODY=8BITMIME")  # UTF-8 headers (RFC 6531, 6532)
            try:
                smtp.sendmail(mail.sender, list(mail.recipients),
                              mail.data.replace(b"\n", b"\r\n"), mail_options=options)
            except UnicodeError:
                self.close()  # it may have failed halfway through a command
                raise PermanentFailure("the mail cannot be encoded for SMTP (characters beyond "
                                       "ASCII); retrying cannot help") from None
            self._used = time.monotonic()
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if all(500 <= code < 600 for code in codes):
                raise PermanentFailure(f"recipient refused ({codes})") from None
            raise TransientFailure(f"recipient deferred ({codes})") from None
        except smtplib.SMTPResponseException as exc:
            self.close()  # the session may be spoilt: the next mail starts afresh
            if 500 <= exc.smtp_code < 600:
                raise PermanentFailure(f"SMTP {exc.smtp_code}") from None
            raise TransientFailure(f"SMTP {exc.smtp_code}") from None
        except (smtplib.SMTPException, OSError, socket.timeout) as exc:
            self.close()
            raise TransientFailure(f"{type(exc).__name__}") from None


def transport_from(settings: dict, home: Path):
    if (settings.get("transport") or "file") == "smtp":
        return SmtpTransport(settings.get("host") or "localhost", settings.get("port") or 25,
                             bool(settings.get("starttls")), settings.get("username") or None,
                             settings.get("password") or None)
    return FileTransport(settings.get("directory") or home / "mail")
