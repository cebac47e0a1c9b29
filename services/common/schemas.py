"""Marshmallow helpers for every boundary: validate or raise a typed, readable error."""
from __future__ import annotations

import os

from marshmallow import Schema, ValidationError, fields, validate
from marshmallow.experimental.context import Context

from services.common.errors import ValidationFailed

AGS = fields.String(
    required=True,
    validate=validate.Regexp(r"^\d{8}$", error="must be an 8-digit Amtlicher Gemeindeschlüssel"),
)


def ags_field(**kwargs) -> fields.String:
    return fields.String(
        validate=validate.Regexp(r"^\d{8}$", error="must be an 8-digit Amtlicher Gemeindeschlüssel"),
        **kwargs,
    )


def flatten_messages(messages, prefix: str = "") -> dict[str, list[str]]:
    """Turn marshmallow's nested error dict into ``{"participant.email": ["..."]}``."""
    flat: dict[str, list[str]] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                name = prefix or "_schema"
            for sub_key, sub_value in flatten_messages(value, name).items():
                flat.setdefault(sub_key, []).extend(sub_value)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        flat[prefix or "_schema"] = list(messages)
    elif isinstance(messages, list):
        for item in messages:
            for sub_key, sub_value in flatten_messages(item, prefix).items():
                flat.setdefault(sub_key, []).extend(sub_value)
    else:
        flat[prefix or "_schema"] = [str(messages)]
    return flat


def nul_path(value, path: str = "") -> str | None:
    """The dotted path of the first string (or key) in JSON-like data that holds a NUL
    character, which no text column can store; None if there is none."""
    pending = [(value, path)]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path
        elif isinstance(value, dict):
            for key, item in value.items():
                inner = f"{path}.{key}" if path else str(key)
                if "\x00" in str(key):
                    return path
                pending.append((item, inner))
        elif isinstance(value, (list, tuple)):
            pending.extend((item, f"{path}.{n}" if path else str(n))
                           for n, item in enumerate(value))
    return None


def load(schema: Schema, data, what: str = "input"):
    """Validate ``data`` with ``schema``; raise ``ValidationFailed`` naming each bad field."""
    if data is None:
        raise ValidationFailed(f"{what} is missing", {"_schema": ["no data given"]})
    where = nul_path(data)
    if where is not None:  # every boundary: a database error later would be an internal one
        raise ValidationFailed(f"{what} is invalid",
                               {where or "_schema": ["must not contain the NUL character"]})
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed(f"{what} is invalid", flatten_messages(exc.messages)) from None


# --- e-mail addresses ----------------------------------------------------------------------------
# A domain with umlauts travels as IDNA (punycode A-labels), which every mail server takes. A
# local part (before the @) beyond ASCII can only travel over SMTPUTF8 (RFC 6531): the address
# is accepted where the configured mail server offers it (MAIL.smtputf8), refused otherwise.

SMTPUTF8_ENV = "SMTP_SMTPUTF8"


class UnencodableAddress(ValueError):
    """An address that no mail server can be given as it is. The message names no address."""


def split_address(address: str) -> tuple[str, str]:
    local, at, domain = str(address).rpartition("@")
    if not at or not local or not domain:
        raise UnencodableAddress("not an e-mail address")
    return local, domain


def ascii_domain(domain: str) -> str:
    """The domain as DNS and SMTP want it: non-ASCII labels as IDNA 2008 A-labels."""
    if domain.isascii():
        return domain
    import idna  # IDNA 2008: Python's own codec (2003) would turn "straße" into "strasse"
    try:
        encoded = idna.encode(domain, uts46=True).decode("ascii")
    except UnicodeError:
        raise UnencodableAddress("the domain is not a valid internationalised domain name "
                                 "(IDNA)") from None
    if len(encoded) > 253:
        raise UnencodableAddress("the domain is too long once written in IDNA (punycode)")
    return encoded


def envelope_address(address: str) -> str:
    """``local@domain`` for the SMTP envelope: the domain in IDNA, the local part as it is."""
    local, domain = split_address(address)
    return f"{local}@{ascii_domain(domain)}"


def truthy(value) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def mail_smtputf8(config: dict | None = None) -> bool:
    """Whether the configured mail server takes SMTPUTF8: ``MAIL.smtputf8`` of ``config``.

    Without a config: the marshmallow context's ``smtputf8`` if a caller set one (``with
    Context({"smtputf8": mail_smtputf8(config)})``), else the ``SMTP_SMTPUTF8`` variable that
    the deployment files expand into ``MAIL.smtputf8``; false unless set."""
    if config is not None:
        return truthy((config.get("MAIL") or {}).get("smtputf8"))
    context = Context.get(default=None)
    value = context.get("smtputf8") if isinstance(context, dict) else None
    if value is None:
        value = os.environ.get(SMTPUTF8_ENV)
    return truthy(value)


class MailAddress(fields.Email):
    """An e-mail address that can be delivered: the domain must have an IDNA form, and a local
    part beyond ASCII is accepted only where the mail server offers SMTPUTF8."""

    def __init__(self, *args, smtputf8=mail_smtputf8, **kwargs):
        super().__init__(*args, **kwargs)
        self.smtputf8 = smtputf8  # a bool, or a function that tells at validation time
        self.validators.append(self._deliverable)

    def _deliverable(self, address: str):
        try:
            local, domain = split_address(address)
        except UnencodableAddress:
            return  # not an address at all: the Email validator says so
        try:
            encoded = ascii_domain(domain)
        except UnencodableAddress as exc:
            raise ValidationError(str(exc)) from None
        if len(local) + 1 + len(encoded) > 254:
            raise ValidationError("too long once the domain is written in IDNA (punycode)")
        if not local.isascii():
            allowed = self.smtputf8() if callable(self.smtputf8) else self.smtputf8
            if not allowed:
                raise ValidationError(
                    "the part before the @ has characters beyond ASCII (such as umlauts); "
                    "the programme's mail server cannot deliver to such an address (it does "
                    "not offer SMTPUTF8): please give an address without them")


def email_field(**kwargs) -> MailAddress:
    return MailAddress(validate=validate.Length(max=254), **kwargs)


class EnrolmentIdsIn(Schema):
    """The enrolments of one person, for an access request."""

    enrolment_ids = fields.List(fields.UUID(), required=True,
                                validate=validate.Length(max=1000))
