"""The HTTP API's shapes, for the OpenAPI document. Requests are validated by the enrolment
service (its schemas are reused here); these describe what the gateway answers."""
from marshmallow import Schema, fields

from services.enrolment.schemas import BodyOut as Body  # noqa: F401  (documented as is)
from services.enrolment.schemas import EnrolIn, ParticipantIn  # noqa: F401


class EnrolmentRequest(Schema):
    course_id = fields.UUID(required=True)
    participant = fields.Nested(ParticipantIn, required=True)


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
    status = fields.String(metadata={"description": "pending, granted, waiting or released"})
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


class BatchRequest(Schema):
    rows = fields.List(fields.Nested(EnrolIn), required=True,
                       metadata={"description": "1 to 500 enrolments"})


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


class Verification(Schema):
    status = fields.String(metadata={"description": "valid, revoked, superseded or unknown"})
    number = fields.String()
    participant = fields.String()
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
    credential = fields.String(required=True, metadata={"description": "compact JWS"})


class CredentialResult(Schema):
    valid = fields.Boolean()
    status = fields.String()
    number = fields.String()
    key_id = fields.String()
    reason = fields.String()
    revoked_at = fields.AwareDateTime(allow_none=True)
    revocation_reason = fields.String(allow_none=True)
    superseded_by = fields.String(allow_none=True)
