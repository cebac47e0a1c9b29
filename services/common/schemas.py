"""Marshmallow helpers for every boundary: validate or raise a typed, readable error."""
from __future__ import annotations

from marshmallow import Schema, ValidationError, fields, validate

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


def load(schema: Schema, data, what: str = "input"):
    """Validate ``data`` with ``schema``; raise ``ValidationFailed`` naming each bad field."""
    if data is None:
        raise ValidationFailed(f"{what} is missing", {"_schema": ["no data given"]})
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed(f"{what} is invalid", flatten_messages(exc.messages)) from None
