"""What crosses the funding service's boundary."""
from marshmallow import Schema, fields, validate


class FundingPolicyIn(Schema):
    """Money in integer cents: 800,000 EUR is 80000000."""

    budget_cents = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    fee_cents = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    guaranteed_per_body = fields.Integer(load_default=1, strict=True,
                                         validate=validate.Range(min=0, max=100))
    reserve_until = fields.Date(required=True)
    # Reminders to bodies still without a confirmed participant, this many days before the
    # reserve date (each an automatic campaign: every body receives it once).
    remind_days_before = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=365)),
        load_default=list, validate=validate.Length(max=10))


class SetPolicyIn(FundingPolicyIn):
    programme_id = fields.UUID(required=True)
    programme_code = fields.String(required=True, validate=validate.Length(min=1, max=40))


class BudgetChangeIn(Schema):
    programme_code = fields.String(required=True)
    budget_cents = fields.Integer(required=True, strict=True, validate=validate.Range(min=0))
    reason = fields.String(required=True, validate=validate.Length(min=3, max=500))


class LedgerQueryIn(Schema):
    programme_code = fields.String(required=True)
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))
    per_page = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))


class BodyQueryIn(Schema):
    programme_code = fields.String(required=True)
    ags = fields.String(required=True, validate=validate.Regexp(
        r"^\d{8}$", error="must be an 8-digit Amtlicher Gemeindeschlüssel"))


class RemindIn(Schema):
    programme_code = fields.String(required=True, validate=validate.Length(min=1, max=40))
    campaign = fields.String(required=True, validate=[
        validate.Length(min=3, max=60),
        validate.Regexp(r"^[a-z0-9][a-z0-9-]*$",
                        error="small letters, digits and '-', e.g. erinnerung-2027-05")])
from services.common.schemas import EnrolmentIdsIn  # noqa: E402,F401  (access requests)
