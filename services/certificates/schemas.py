"""What crosses the certificates service's boundary."""
from marshmallow import Schema, fields, validate

NUMBER = dict(required=True, validate=validate.Regexp(
    r"^[A-Z0-9][A-Z0-9-]{1,39}-\d{4}-\d{6}$", error="not a certificate number"))


class NumberIn(Schema):
    number = fields.String(**NUMBER)
    ags = fields.String(load_default=None, allow_none=True,
                        validate=validate.Regexp(r"^\d{8}$"))


class RevokeIn(Schema):
    number = fields.String(**NUMBER)
    reason = fields.String(required=True, validate=validate.Length(min=3, max=500))


class ReissueIn(Schema):
    number = fields.String(**NUMBER)
    given_name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    family_name = fields.String(required=True, validate=validate.Length(min=1, max=100))


class CredentialIn(Schema):
    credential = fields.String(required=True, validate=validate.Length(min=10, max=20000))
from services.common.schemas import EnrolmentIdsIn  # noqa: E402,F401  (access requests)
