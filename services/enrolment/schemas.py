"""What crosses the enrolment service's RPC boundary: inputs checked, outputs shaped."""
from __future__ import annotations

import base64
import binascii

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from services.common.schemas import ags_field, email_field

BODY_KINDS = ("gemeinde", "kreis", "bezirk")
NAME = dict(required=True, validate=validate.Length(min=1, max=100))


class ParticipantIn(Schema):
    given_name = fields.String(**NAME)
    family_name = fields.String(**NAME)
    # IDNA domains are fine; a non-ASCII local part only with MAIL.smtputf8 (SMTP_SMTPUTF8).
    email = email_field(required=True)
    department = fields.String(load_default=None, allow_none=True,
                               validate=validate.Length(max=200))

    @post_load
    def normalise(self, data, **kwargs):
        data["given_name"] = data["given_name"].strip()
        data["family_name"] = data["family_name"].strip()
        if not data["given_name"] or not data["family_name"]:
            raise ValidationError("must not be blank", "given_name" if not data["given_name"]
                                  else "family_name")
        data["email"] = data["email"].strip().lower()
        return data


class EnrolIn(Schema):
    course_id = fields.UUID(required=True)
    participant = fields.Nested(ParticipantIn, required=True)
    idempotency_key = fields.String(load_default=None, allow_none=True,
                                    validate=validate.Length(min=1, max=200))


MAX_BATCH_ROWS = 500


class EnrolBatchIn(Schema):
    """Rows are checked one by one (a bad row does not spoil the others)."""

    rows = fields.List(fields.Raw(), required=True,
                       validate=validate.Length(min=1, max=MAX_BATCH_ROWS))
    dry_run = fields.Boolean(load_default=False)


# A programme's code starts its certificates' numbers ("BW-DL-2026-000123"), which every service
# stores in 40 characters: the code may take 40 - len("-2026-000123") of them. Must equal
# services.certificates.models.PROGRAMME_CODE_MAX (tests/unit/test_certificate_numbers.py).
PROGRAMME_CODE_MAX = 28


class CoverageIn(Schema):
    """Which programmes a coverage report covers; none given means all of them."""
    programme_codes = fields.List(
        fields.String(validate=validate.Length(min=1, max=PROGRAMME_CODE_MAX)),
        load_default=None, allow_none=True, validate=validate.Length(max=16))
RETENTION_DAYS = dict(strict=True, validate=validate.Range(min=1, max=36500))


class ProgrammeIn(Schema):
    code = fields.String(required=True, validate=[
        validate.Regexp(r"^[A-Z0-9][A-Z0-9-]+$",
                        error="use capitals, digits and '-', e.g. BW-DL"),
        validate.Length(max=PROGRAMME_CODE_MAX,
                        error=f"at most {PROGRAMME_CODE_MAX} characters (it starts every "
                              "certificate number, e.g. BW-DL-2026-000123)")])
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    land = fields.String(required=True, validate=validate.Regexp(
        r"^(0[1-9]|1[0-6])$", error="must be a Land code 01 to 16"))
    role_name = fields.String(required=True, validate=validate.Length(min=1, max=80))
    eligible_kinds = fields.List(fields.String(validate=validate.OneOf(BODY_KINDS)),
                                 required=True, validate=validate.Length(min=1))
    enrolment_opens_on = fields.Date(required=True)
    enrolment_closes_on = fields.Date(required=True)
    # Days participant data is kept after the course ended or the enrolment was cancelled.
    retention_days = fields.Integer(load_default=730, **RETENTION_DAYS)
    # False only for a coaching programme whose file has no funding section.
    funded = fields.Boolean(load_default=True)

    @validates_schema
    def window(self, data, **kwargs):
        if data["enrolment_closes_on"] < data["enrolment_opens_on"]:
            raise ValidationError("must not be before enrolment_opens_on", "enrolment_closes_on")


class ModuleIn(Schema):
    number = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=50))
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    date = fields.Date(required=True)


class CourseIn(Schema):
    # Chosen by the provider to make the call safe to repeat (a retry after a lost reply).
    id = fields.UUID(load_default=None)
    programme_code = fields.String(required=True, validate=validate.Length(min=1, max=40))
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    location = fields.String(required=True, validate=validate.Length(min=1, max=200))
    capacity = fields.Integer(required=True, strict=True,
                              validate=validate.Range(min=1, max=1000))
    modules = fields.List(fields.Nested(ModuleIn), required=True,
                          validate=validate.Length(min=1, max=50))
    open = fields.Boolean(load_default=False)

    @validates_schema
    def module_numbers(self, data, **kwargs):
        numbers = [m["number"] for m in data["modules"]]
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            raise ValidationError("module numbers must be 1, 2, ... without gaps or repeats",
                                  "modules")


class CancelIn(Schema):
    enrolment_id = fields.UUID(required=True)
    reason = fields.String(load_default=None, allow_none=True,
                           validate=validate.Length(max=500))


class AttendanceIn(Schema):
    course_id = fields.UUID(required=True)
    module_number = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    enrolment_ids = fields.List(fields.UUID(), required=True,
                                validate=validate.Length(min=1, max=1000))


class EnrolmentFilterIn(Schema):
    programme_code = fields.String(load_default=None, allow_none=True)
    course_id = fields.UUID(load_default=None, allow_none=True)
    status = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(
        ["confirmed", "waitlisted", "cancelled", "completed"]))
    # A page far beyond the end would overflow the database's OFFSET.
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = fields.Integer(load_default=50, validate=validate.Range(min=1, max=500))


class MunicipalityIn(Schema):
    ags = ags_field(required=True)
    contact_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    contact_email = fields.Email(required=True)


class ProviderIn(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))


# --- outputs -----------------------------------------------------------------------------------

class ModuleOut(Schema):
    number = fields.Integer()
    title = fields.String()
    date = fields.Date()


class CourseOut(Schema):
    id = fields.UUID()
    programme_code = fields.Function(lambda c: c.programme.code)
    programme_name = fields.Function(lambda c: c.programme.name)
    provider = fields.Function(lambda c: c.provider.name)
    title = fields.String()
    location = fields.String()
    capacity = fields.Integer()
    status = fields.String()
    modules = fields.List(fields.Nested(ModuleOut))


class EnrolmentOut(Schema):
    id = fields.UUID()
    programme_code = fields.Function(lambda e: e.course.programme.code)
    course_id = fields.UUID()
    course_title = fields.Function(lambda e: e.course.title)
    ags = fields.String()
    participant = fields.Function(lambda e: {
        "given_name": e.given_name, "family_name": e.family_name, "email": e.email,
        "department": e.department})
    status = fields.String()
    # The place on the course's waitlist depends on the others waiting: the caller sets it.
    waitlist_position = fields.Function(lambda e: None)
    enrolled_at = fields.AwareDateTime()
    confirmed_at = fields.AwareDateTime(allow_none=True)
    cancelled_at = fields.AwareDateTime(allow_none=True)
    cancelled_by = fields.String(allow_none=True)
    completed_at = fields.AwareDateTime(allow_none=True)
    attended_modules = fields.Function(lambda e: [a.module_number for a in e.attendance])
    funding = fields.Function(lambda e: {"status": e.funding_status, "kind": e.funding_kind})
    certificate = fields.Function(lambda e: {"number": e.certificate_number,
                                             "status": e.certificate_status}
                                  if e.certificate_number else None)


class BodyOut(Schema):
    ags = fields.String()
    name = fields.String()
    kind = fields.String()
    designation = fields.String()
    kreisfrei = fields.Boolean()
    land = fields.String()
    kreis_ags = fields.String(allow_none=True)


class ProgrammeOut(Schema):
    id = fields.UUID()
    code = fields.String()
    name = fields.String()
    land = fields.String()
    role_name = fields.String()
    eligible_kinds = fields.List(fields.String())
    enrolment_opens_on = fields.Date()
    enrolment_closes_on = fields.Date()
    revision = fields.Integer()
    retention_days = fields.Integer()


class ErasureIn(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    reason = fields.String(required=True, validate=validate.Length(min=3, max=500))


class ParticipantQueryIn(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))


class RetentionIn(Schema):
    today = fields.Date(load_default=None, allow_none=True)


class RetentionDaysIn(Schema):
    retention_days = fields.Integer(required=True, **RETENTION_DAYS)


# --- the municipality portal ---------------------------------------------------------------------

_URL = validate.Regexp(r"^https?://[^\s\x00]+$", error="must be an http(s) URL")


class SignInRequestIn(Schema):
    email = email_field(required=True)
    # Where the link leads (the gateway's public address); the token is appended.
    link_base = fields.String(required=True, validate=[validate.Length(max=300), _URL])

    @post_load
    def normalise(self, data, **kwargs):
        data["email"] = data["email"].strip().lower()
        return data


class SecretIn(Schema):
    """A sign-in token or a session id: long random strings of URL-safe characters."""

    secret = fields.String(required=True, validate=[
        validate.Length(min=20, max=100),
        validate.Regexp(r"^[A-Za-z0-9_-]+$", error="not a token")])


class ColleagueIn(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = email_field(required=True)
    portal_url = fields.String(required=True, validate=[validate.Length(max=300), _URL])

    @post_load
    def normalise(self, data, **kwargs):
        data["name"] = data["name"].strip()
        if not data["name"]:
            raise ValidationError("must not be blank", "name")
        data["email"] = data["email"].strip().lower()
        return data


class ColleagueIdIn(Schema):
    colleague_id = fields.UUID(required=True)


class PortalPersonOut(Schema):
    ags = fields.String()
    municipality = fields.String()
    email = fields.String()
    name = fields.String()
    role = fields.String()
    expires_at = fields.AwareDateTime()
    session_id = fields.String()


class ColleagueOut(Schema):
    id = fields.String()
    name = fields.String()
    email = fields.String()
    invited_at = fields.AwareDateTime()


class ContactRowIn(Schema):
    """One row of the office's onboarding file."""
    ags = ags_field(required=True)

    @pre_load
    def leading_zero(self, data, **kwargs):
        """Excel drops the leading zero of an AGS such as 08226098: put it back."""
        if isinstance(data, dict) and isinstance(data.get("ags"), str):
            ags = data["ags"].strip()
            data = dict(data, ags=ags.zfill(8) if ags.isdigit() and len(ags) == 7 else ags)
        return data
    contact_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    contact_email = email_field(required=True)

    @post_load
    def normalise(self, data, **kwargs):
        data["contact_name"] = data["contact_name"].strip()
        if not data["contact_name"]:
            raise ValidationError("must not be blank", "contact_name")
        data["contact_email"] = data["contact_email"].strip().lower()
        return data


class OnboardIn(Schema):
    rows = fields.List(fields.Raw(), required=True, validate=validate.Length(min=1, max=5000))
    portal_url = fields.String(required=True, validate=[validate.Length(max=300), _URL])


# --- coaching programmes -------------------------------------------------------------------------

class MilestoneDefIn(Schema):
    key = fields.String(required=True, validate=[
        validate.Length(min=1, max=40),
        validate.Regexp(r"^[a-z][a-z0-9_-]*$", error="small letters, digits, '-' and '_'")])
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    due_days = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=1000))
    document = fields.Boolean(load_default=False)


class CoachingSectionIn(Schema):
    """The ``coaching:`` section of a programme file."""
    milestones = fields.List(fields.Nested(MilestoneDefIn), required=True,
                             validate=validate.Length(min=1, max=20))


def programme_code_field():
    return fields.String(required=True, validate=[
        validate.Length(min=1, max=40),
        validate.Regexp(r"^[A-Z0-9][A-Z0-9-]*$", error="capitals, digits and '-', e.g. SN-DN")])


class NameNavigatorIn(Schema):
    programme_code = programme_code_field()
    navigator = fields.Nested(ParticipantIn, required=True)
    replace = fields.Boolean(load_default=False)


class ProgrammeNavigatorIn(Schema):
    programme_code = programme_code_field()
    navigator_id = fields.UUID(required=True)


class CoachIn(Schema):
    programme_code = fields.String(required=True, validate=validate.Length(min=1, max=40))
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    email = email_field(required=True)
    max_navigators = fields.Integer(required=True, strict=True,
                                    validate=validate.Range(min=1, max=500))

    @post_load
    def normalise(self, data, **kwargs):
        data["email"] = data["email"].strip().lower()  # the coach signs in with it
        return data


class PairIn(Schema):
    navigator_id = fields.UUID(required=True)
    coach_id = fields.UUID(required=True)
    started_on = fields.Date(load_default=None, allow_none=True)


class CoachIdIn(Schema):
    coach_id = fields.UUID(required=True)


class MilestoneIn(Schema):
    navigator_id = fields.UUID(required=True)
    key = fields.String(required=True, validate=validate.Length(min=1, max=40))
    reached_on = fields.Date(required=True)
    note = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))
    document_ref = fields.String(load_default=None, allow_none=True,
                                 validate=validate.Length(min=1, max=300))


# An uploaded PDF travels base64-encoded in the RPC's JSON: at most 8 MiB of document.
MAX_DOCUMENT_BASE64 = 4 * (8 * 1024 * 1024 + 2) // 3


class DocumentIn(Schema):
    filename = fields.String(required=True, validate=validate.Length(min=1, max=200))
    content = fields.String(required=True,
                            validate=validate.Length(min=4, max=MAX_DOCUMENT_BASE64))

    @post_load
    def decode(self, data, **kwargs):
        try:
            data["content"] = base64.b64decode(data["content"], validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError("not base64", "content") from None
        data["filename"] = data["filename"].replace("\x00", "").strip() or "dokument.pdf"
        return data


class CoachMilestoneIn(MilestoneIn):
    """A milestone recorded on the coaches' pages: a reference or an uploaded PDF."""

    document = fields.Nested(DocumentIn, load_default=None, allow_none=True)

    @validates_schema
    def one_document(self, data, **kwargs):
        if data.get("document") and data.get("document_ref"):
            raise ValidationError("either a reference or an uploaded PDF, not both",
                                  "document_ref")


class DocumentIdIn(Schema):
    document_id = fields.UUID(required=True)


class CoachingDayIn(Schema):
    today = fields.Date(load_default=None, allow_none=True)
