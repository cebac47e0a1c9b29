"""The HTTP API's shapes, for the OpenAPI document. Requests are validated by the enrolment
service (its schemas are reused here); these describe what the gateway answers."""
from marshmallow import Schema, fields, validate

from services.enrolment.schemas import BodyOut as Body  # noqa: F401  (documented as is)
from services.enrolment.schemas import NAME, ParticipantIn


# What the enrolment service strips from a name before it refuses a blank one (Python's
# whitespace, which JSON Schema's \s does not match exactly).
_BLANK = "\t-\r \x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_NOT_BLANK = {"pattern": f"^[^\x00]*[^{_BLANK}\x00][^\x00]*$",
              "description": "not only whitespace, no NUL character"}
NO_NUL = {"pattern": "^[^\x00]*$", "description": "no NUL character"}


class ParticipantRequest(ParticipantIn):
    """The enrolment service's participant, with what its blank-name check means spelt out."""
    given_name = fields.String(**NAME, metadata=_NOT_BLANK)
    family_name = fields.String(**NAME, metadata=_NOT_BLANK)
    department = fields.String(load_default=None, allow_none=True,
                               validate=validate.Length(max=200), metadata=NO_NUL)


class EnrolmentRequest(Schema):
    course_id = fields.UUID(required=True)
    participant = fields.Nested(ParticipantRequest, required=True)


class NavigatorRequest(Schema):
    """Name the municipality's Digital-Navigator for a coaching programme."""
    programme_code = fields.String(required=True, metadata={"example": "SN-DN"}, validate=[
        validate.Length(min=1, max=40), validate.Regexp(r"^[A-Z0-9][A-Z0-9-]*$")])
    navigator = fields.Nested(ParticipantRequest, required=True)
    replace = fields.Boolean(load_default=False, metadata={
        "description": "end the current Navigator's term (it stays in the history)"})


class MilestoneState(Schema):
    key = fields.String()
    title = fields.String()
    due_on = fields.Date(allow_none=True)
    reached_on = fields.Date(allow_none=True)
    note = fields.String(allow_none=True)
    document_ref = fields.String(allow_none=True)
    overdue = fields.Boolean()


class Navigator(Schema):
    id = fields.UUID()
    ags = fields.String()
    participant = fields.Nested(lambda: Participant())
    named_at = fields.AwareDateTime()
    replaced_at = fields.AwareDateTime(allow_none=True)
    replaces_id = fields.UUID(allow_none=True)
    coach_id = fields.UUID(allow_none=True)
    coaching_started_on = fields.Date(allow_none=True)
    milestones = fields.List(fields.Nested(MilestoneState))


class NavigatorList(Schema):
    items = fields.List(fields.Nested(Navigator), metadata={
        "description": "the active Navigator first, then the ones before"})


class Module(Schema):
    number = fields.Integer()
    title = fields.String()
    date = fields.Date()


class Course(Schema):
    id = fields.UUID()
    programme_code = fields.String()
    programme_name = fields.String()
    provider = fields.String()
    title = fields.String()
    location = fields.String()
    capacity = fields.Integer()
    status = fields.String()
    modules = fields.List(fields.Nested(Module))
    free_seats = fields.Integer()
    waitlist_length = fields.Integer()


class CourseList(Schema):
    items = fields.List(fields.Nested(Course))


class Participant(Schema):
    given_name = fields.String()
    family_name = fields.String()
    email = fields.Email()
    department = fields.String(allow_none=True)


class Funding(Schema):
    status = fields.String(metadata={"description": "pending, granted, waiting or released; none "
                                                  "in a programme that funds nothing"})
    kind = fields.String(allow_none=True, metadata={"description": "guaranteed or pool"})


class CertificateRef(Schema):
    number = fields.String()
    status = fields.String()


class Enrolment(Schema):
    id = fields.UUID()
    programme_code = fields.String()
    course_id = fields.UUID()
    course_title = fields.String()
    ags = fields.String()
    participant = fields.Nested(Participant)
    status = fields.String(metadata={"description": "confirmed, waitlisted, cancelled, completed"})
    waitlist_position = fields.Integer(allow_none=True)
    enrolled_at = fields.AwareDateTime()
    confirmed_at = fields.AwareDateTime(allow_none=True)
    cancelled_at = fields.AwareDateTime(allow_none=True)
    cancelled_by = fields.String(allow_none=True)
    completed_at = fields.AwareDateTime(allow_none=True)
    attended_modules = fields.List(fields.Integer())
    funding = fields.Nested(Funding)
    certificate = fields.Nested(CertificateRef, allow_none=True)


class EnrolmentPage(Schema):
    items = fields.List(fields.Nested(Enrolment))
    total = fields.Integer()
    page = fields.Integer()
    per_page = fields.Integer()


class BatchRowRequest(EnrolmentRequest):
    idempotency_key = fields.String(allow_none=True, validate=validate.Length(min=1, max=200))


class BatchRequest(Schema):
    rows = fields.List(fields.Nested(BatchRowRequest), required=True,
                       validate=validate.Length(1, 500),
                       metadata={"description": "1 to 500 enrolments; every row is checked on its "
                                                "own, so an invalid row fails alone (207, with "
                                                "its reasons in its result)"})


class RowError(Schema):
    status = fields.Integer()
    title = fields.String()
    detail = fields.String()
    fields_ = fields.Dict(data_key="fields", keys=fields.String(),
                          values=fields.List(fields.String()))


class BatchRow(Schema):
    row = fields.Integer()
    result = fields.String(metadata={"description": "created, would_create (dry run) or error"})
    enrolment = fields.Nested(Enrolment)
    error = fields.Nested(RowError)


class BatchResult(Schema):
    dry_run = fields.Boolean()
    succeeded = fields.Integer()
    failed = fields.Integer()
    results = fields.List(fields.Nested(BatchRow))


class ProgrammeState(Schema):
    programme_code = fields.String()
    programme_name = fields.String()
    enrolments = fields.Dict(keys=fields.String(), values=fields.Integer())
    guaranteed_seat_used = fields.Boolean()
    coaching = fields.Boolean(metadata={
        "description": "a coaching programme: name its Navigator at /api/v1/navigators"})


class Municipality(Schema):
    body = fields.Nested(Body)
    programmes = fields.List(fields.Nested(ProgrammeState))


class FieldError(Schema):
    field = fields.String()
    message = fields.String()


class Problem(Schema):
    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    errors = fields.List(fields.Nested(FieldError))


class Health(Schema):
    status = fields.String()
    enrolment = fields.Raw(metadata={"description": "readiness only: what the enrolment "
                                                    "service reports, or 'no answer'"})


class Verification(Schema):
    status = fields.String(metadata={"description": "valid, revoked, superseded or unknown"})
    number = fields.String()
    participant = fields.String(allow_none=True,
                                metadata={"description": "null once the holder's data was erased"})
    holder_erased = fields.Boolean(metadata={"description": "the holder's data was erased (on "
                                                            "request or after retention)"})
    holder_erased_at = fields.AwareDateTime(allow_none=True)
    municipality = fields.String()
    programme = fields.String()
    role_name = fields.String()
    course_title = fields.String()
    provider = fields.String()
    completed_on = fields.Date()
    issued_at = fields.AwareDateTime()
    revoked_at = fields.AwareDateTime(allow_none=True)
    revocation_reason = fields.String(allow_none=True)
    superseded_by = fields.String(allow_none=True)


class CredentialCheck(Schema):
    # The limits the certificates service checks (services.certificates.schemas.CredentialIn).
    credential = fields.String(required=True, validate=validate.Length(10, 20000),
                               metadata={"description": "compact JWS", "pattern": NO_NUL["pattern"]})


class CredentialResult(Schema):
    valid = fields.Boolean()
    status = fields.String()
    number = fields.String()
    key_id = fields.String()
    reason = fields.String()
    revoked_at = fields.AwareDateTime(allow_none=True)
    revocation_reason = fields.String(allow_none=True)
    superseded_by = fields.String(allow_none=True)
    holder_erased = fields.Boolean()
    holder_erased_at = fields.AwareDateTime(allow_none=True)
