"""Rendering notices into e-mails and handing them to a mail server or to files.

No nameko here. The Message-ID is derived from the notice id, so if a crash falls between
sending and recording, the second copy carries the same Message-ID and a mail server or reader
can drop it.

Addresses: a domain with umlauts goes out in IDNA (punycode) in the envelope and the headers, so
any server takes it; a local part beyond ASCII needs SMTPUTF8 and is sent that way (UTF-8
headers) only where the server offers it. What can never be sent fails at once.
"""
from __future__ import annotations

import os
import smtplib
import socket
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

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
    plain text, then ``@@html@@`` and the HTML part (values escaped there with ``|e``)."""
    full = _env.get_template(f"{template}.j2").render(context)
    subject, _, rest = full.partition("@@text@@")
    text, _, html = rest.partition("@@html@@")
    return " ".join(subject.split()), text.strip() + "\n", html.strip()


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


def envelope(address: Address) -> str:
    """The address for MAIL FROM / RCPT TO: always an IDNA domain."""
    return envelope_address(address.addr_spec)


def _addresses(message: EmailMessage, *names: str) -> list[Address]:
    return [a for name in names for header in (message.get_all(name) or ())
            for a in header.addresses]


def needs_smtputf8(message: EmailMessage) -> bool:
    return any(not a.username.isascii() for a in _addresses(message, "From", "To", "Cc"))


def build_message(notice, sender: tuple[str, str], context: dict,
                  attachment: tuple[str, bytes] | None = None) -> EmailMessage:
    subject, text, html = render(notice.template, context)
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = header_address(*sender)
    message["To"] = header_address(notice.to_name, notice.to_email)
    if notice.cc_email:
        message["Cc"] = header_address(None, notice.cc_email)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = f"<{notice.id}@notices.lotsen>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    message.add_alternative(f"<!doctype html><html lang='de'><body style='font-family:Georgia,"
                            f"serif;max-width:40em'>{html}</body></html>", subtype="html")
    if attachment:
        filename, content = attachment
        message.add_attachment(content, maintype="application", subtype="pdf",
                               filename=filename)
    return message


class FileTransport:
    """The embedded default: one .eml file per notice, named by the notice id."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def send(self, notice_id, message: EmailMessage):
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.directory / f"{notice_id}.eml"
        partial = target.with_suffix(".eml.partial")
        policy = message.policy.clone(utf8=True) if needs_smtputf8(message) else None
        partial.write_bytes(message.as_bytes(policy=policy))
        os.replace(partial, target)  # one file per notice, whatever the retries

    def close(self):
        pass


class SmtpTransport:
    """Sends over one SMTP connection per delivery round (``close`` ends it), instead of a
    connection, greeting and EHLO per mail."""

    def __init__(self, host: str, port: int, starttls: bool = False, username: str | None = None,
                 password: str | None = None, timeout: float = 20):
        self.host, self.port, self.starttls = host, int(port), starttls
        self.username, self.password, self.timeout = username, password, timeout
        self._smtp: smtplib.SMTP | None = None

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

    def close(self):
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()

    def send(self, notice_id, message: EmailMessage):
        try:
            sender = envelope(_addresses(message, "From")[0])
            recipients = [envelope(a) for a in _addresses(message, "To", "Cc")]
        except UnencodableAddress as exc:
            raise PermanentFailure(f"address cannot be used: {exc}") from None
        try:
            if self._smtp is not None:
                try:
                    self._smtp.noop()  # still there? A dropped session costs nothing yet
                except (smtplib.SMTPException, OSError):
                    self.close()
            smtp = self._connection()
            if not "".join([sender, *recipients]).isascii():
                smtp.ehlo_or_helo_if_needed()
                if not smtp.has_extn("smtputf8"):
                    raise PermanentFailure("the address has characters beyond ASCII before the "
                                           "@, and the mail server does not offer SMTPUTF8")
            try:
                # With a non-ASCII local part smtplib asks for SMTPUTF8 and sends UTF-8 headers.
                smtp.send_message(message, sender, recipients)
            except UnicodeError:
                self.close()  # it may have failed halfway through a command
                raise PermanentFailure("the mail cannot be encoded for SMTP (characters beyond "
                                       "ASCII); retrying cannot help") from None
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
