"""Event contracts: the one place that says what every event carries.

Every event travels in an envelope (id, type, version, time, producer, correlation id,
payload). Payload schemas are versioned: a consumer names the versions it understands, and a
producer never changes a published version, it adds a new one.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.common.errors import ContractViolation, ValidationFailed
from services.common.schemas import ags_field, flatten_messages, load, nul_path


class EnvelopeSchema(Schema):
    event_id = fields.UUID(required=True)
    event_type = fields.String(required=True)
    version = fields.Integer(required=True, validate=validate.Range(min=1))
    occurred_at = fields.AwareDateTime(required=True, default_timezone=timezone.utc)
    producer = fields.String(required=True)
    correlation_id = fields.String(load_default=None, allow_none=True)
    payload = fields.Dict(required=True)


class ParticipantSchema(Schema):
    """Only what consumers need to address and certify a participant."""

    given_name = fields.String(required=True)
    family_name = fields.String(required=True)
    email = fields.Email(required=True)


class ReachedMilestoneSchema(Schema):
    title = fields.String(required=True)
    reached_on = fields.Date(required=True)


class ModuleSchema(Schema):
    number = fields.Integer(required=True)
    title = fields.String(required=True)
    date = fields.Date(required=True)


class EligibleBodySchema(Schema):
    ags = ags_field(required=True)
    kind = fields.String(required=True)


class CourseInfoSchema(Schema):
    """What a notice about an enrolment tells of its course."""

    title = fields.String(required=True)
    location = fields.String(required=True)
    provider_name = fields.String(required=True)
    programme_code = fields.String(required=True)
    programme_name = fields.String(required=True)
    modules = fields.List(fields.Nested(ModuleSchema), required=True)


# --- enrolment -------------------------------------------------------------------------------

class MunicipalityRegisteredV1(Schema):
    """A body registered for the gateway: its contact receives the municipality's notices."""

    ags = ags_field(required=True)
    name = fields.String(required=True)
    contact_name = fields.String(required=True)
    contact_email = fields.Email(required=True)


class ProgrammePublishedV1(Schema):
    programme_id = fields.UUID(required=True)
    code = fields.String(required=True)
    name = fields.String(required=True)
    land = fields.String(required=True)
    role_name = fields.String(required=True)
    revision = fields.Integer(required=True)
    eligible_bodies = fields.List(fields.Nested(EligibleBodySchema), required=True)
    # False for a coaching programme whose file has no funding section: funding decides
    # nothing for it (instead of waiting for a policy). Absent in older events: funded.
    funded = fields.Boolean(load_default=True)


class EnrolmentCreatedV1(Schema):
    enrolment_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    course_id = fields.UUID(required=True)
    ags = ags_field(required=True)
    status = fields.String(required=True, validate=validate.OneOf(["confirmed", "waitlisted"]))
    waitlist_position = fields.Integer(allow_none=True, load_default=None)
    enrolled_at = fields.AwareDateTime(required=True)
    participant = fields.Nested(ParticipantSchema, required=True)
    course = fields.Nested(CourseInfoSchema, load_default=None, allow_none=True)


class EnrolmentPromotedV1(Schema):
    enrolment_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    course_id = fields.UUID(required=True)
    ags = ags_field(required=True)
    confirmed_at = fields.AwareDateTime(required=True)
    participant = fields.Nested(ParticipantSchema, required=True)
    course = fields.Nested(CourseInfoSchema, load_default=None, allow_none=True)


class EnrolmentCancelledV1(Schema):
    enrolment_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    course_id = fields.UUID(required=True)
    ags = ags_field(required=True)
    previous_status = fields.String(required=True)
    cancelled_by = fields.String(
        required=True, validate=validate.OneOf(["municipality", "provider", "course_cancelled"])
    )
    reason = fields.String(allow_none=True, load_default=None)
    cancelled_at = fields.AwareDateTime(required=True)
    participant = fields.Nested(ParticipantSchema, required=True)
    course = fields.Nested(CourseInfoSchema, load_default=None, allow_none=True)


class EnrolmentCompletedV1(Schema):
    enrolment_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    programme_code = fields.String(required=True)
    programme_name = fields.String(required=True)
    role_name = fields.String(required=True)
    course_id = fields.UUID(required=True)
    course_title = fields.String(required=True)
    location = fields.String(required=True)
    provider_name = fields.String(required=True)
    ags = ags_field(required=True)
    municipality_name = fields.String(required=True)
    completed_on = fields.Date(required=True)
    modules = fields.List(fields.Nested(ModuleSchema), required=True)
    participant = fields.Nested(ParticipantSchema, required=True)
    # A coaching programme's milestones, all reached (the certificate lists them); absent in a
    # seminar programme and in older events.
    milestones = fields.List(fields.Nested(ReachedMilestoneSchema), load_default=list)


class CourseCancelledV1(Schema):
    course_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    title = fields.String(required=True)
    reason = fields.String(allow_none=True, load_default=None)
    cancelled_at = fields.AwareDateTime(required=True)
    enrolment_ids = fields.List(fields.UUID(), required=True)


# --- funding (published by the funding service) -------------------------------------------------

class FundingGrantedV1(Schema):
    enrolment_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    ags = ags_field(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["guaranteed", "pool"]))
    amount_cents = fields.Integer(required=True, validate=validate.Range(min=0))


class FundingWaitingV1(Schema):
    enrolment_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    ags = ags_field(required=True)


class FundingReleasedV1(Schema):
    enrolment_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    ags = ags_field(required=True)
    amount_cents = fields.Integer(required=True, validate=validate.Range(min=0))


class FundingConvertedV1(Schema):
    enrolment_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    ags = ags_field(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["guaranteed", "pool"]))


class BodyRemindedV1(Schema):
    """An eligible body without a confirmed participant was reminded of its guarantee (once
    per campaign); notifications mails its contact."""
    programme_id = fields.UUID(required=True)
    programme_code = fields.String(required=True)
    programme_name = fields.String(required=True)
    ags = ags_field(required=True)
    campaign = fields.String(required=True, validate=validate.Length(min=1, max=60))
    reserve_until = fields.Date(required=True)
    reminded_at = fields.AwareDateTime(required=True)


# --- certificates (published by the certificates service) ---------------------------------------

class CertificateIssuedV1(Schema):
    enrolment_id = fields.UUID(required=True)
    certificate_number = fields.String(required=True)
    verification_url = fields.String(required=True)
    issued_at = fields.AwareDateTime(required=True)


class CertificateRevokedV1(Schema):
    enrolment_id = fields.UUID(required=True)
    certificate_number = fields.String(required=True)
    reason = fields.String(required=True)
    revoked_at = fields.AwareDateTime(required=True)


# --- the municipality portal (published by enrolment) -------------------------------------------

class SignInLinkRequestedV1(Schema):
    """Someone asked to sign in to the portal with an address that may sign in for this body:
    notifications mails the link. The link is a secret that works once, until ``expires_at``
    (15 minutes); the enrolment service keeps only its hash."""

    ags = ags_field(required=True)
    municipality = fields.String(required=True)
    email = fields.Email(required=True)
    name = fields.String(required=True)
    link = fields.String(required=True, validate=validate.Length(min=20, max=500))
    expires_at = fields.AwareDateTime(required=True)


class ColleagueInvitedV1(Schema):
    """The body's contact invited a colleague to the portal: notifications tells the colleague
    where to sign in (no link that signs in: that is asked for on the sign-in page)."""

    ags = ags_field(required=True)
    municipality = fields.String(required=True)
    email = fields.Email(required=True)
    name = fields.String(required=True)
    invited_by = fields.String(required=True)
    portal_url = fields.String(required=True, validate=validate.Length(min=8, max=500))


class OfficeSignInLinkRequestedV1(Schema):
    """A member of the programme office asked to sign in to the office's pages: notifications
    mails the single-use link (valid until ``expires_at``)."""

    email = fields.Email(required=True)
    name = fields.String(required=True)
    link = fields.String(required=True, validate=validate.Length(min=20, max=500))
    expires_at = fields.AwareDateTime(required=True)


# --- coaching programmes (published by enrolment) ------------------------------------------------

class _AboutNavigator(Schema):
    """What every event about a Navigator carries: whom, where, in which programme, and the
    Navigator's change count."""

    navigator_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    programme_name = fields.String(required=True)
    ags = ags_field(required=True)
    municipality = fields.String(required=True)
    participant = fields.Nested(ParticipantSchema, required=True)
    sequence = fields.Integer(required=True, validate=validate.Range(min=1))


class NavigatorNamedV1(_AboutNavigator):
    """A municipality named its Navigator for a coaching programme (``replaces_id``: the one
    whose term this ends)."""

    named_at = fields.AwareDateTime(required=True)
    replaces_id = fields.UUID(allow_none=True, load_default=None)


class CoachingPairedV1(_AboutNavigator):
    """The office paired a Navigator with a coach; coaching (and the milestones' clock)
    starts ``started_on``."""

    coach_id = fields.UUID(required=True)
    coach_name = fields.String(required=True)
    coach_email = fields.Email(required=True)
    started_on = fields.Date(required=True)


class CoachingPairedV2(CoachingPairedV1):
    """As v1, and whether the Navigator's coaching goes on (a move to another coach, or a new
    coach after theirs left): then ``started_on`` is the coaching's first day, long past, and
    ``paired_on`` the day this coach takes over."""

    continues = fields.Boolean(required=True)
    paired_on = fields.Date(required=True)


class CoachingUnpairedV1(_AboutNavigator):
    """The Navigator's coach left the programme; the Navigator is without a coach until the
    office pairs them again (their milestones and the coaching's start day stay)."""

    coach_id = fields.UUID(required=True)
    coach_name = fields.String(required=True)
    unpaired_at = fields.AwareDateTime(required=True)


class CoachSignInLinkRequestedV1(OfficeSignInLinkRequestedV1):
    """A coach asked to sign in to the coaches' pages: notifications mails the link."""


class MilestoneReachedV1(Schema):
    """A coach recorded a milestone the Navigator reached: the Navigator is told."""

    navigator_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    programme_name = fields.String(required=True)
    ags = ags_field(required=True)
    municipality = fields.String(required=True)
    participant = fields.Nested(ParticipantSchema, required=True)
    coach_name = fields.String(required=True)
    coach_email = fields.Email(required=True)
    key = fields.String(required=True, validate=validate.Length(min=1, max=40))
    title = fields.String(required=True)
    reached_on = fields.Date(required=True)
    document_ref = fields.String(allow_none=True, load_default=None)
    sequence = fields.Integer(required=True, validate=validate.Range(min=1))


class MilestoneOverdueV1(Schema):
    """A milestone passed its due day unreached: the Navigator and the coach are reminded
    (once per Navigator and milestone)."""

    navigator_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    programme_name = fields.String(required=True)
    ags = ags_field(required=True)
    municipality = fields.String(required=True)
    key = fields.String(required=True, validate=validate.Length(min=1, max=40))
    title = fields.String(required=True)
    due_on = fields.Date(required=True)
    participant = fields.Nested(ParticipantSchema, required=True)
    coach_name = fields.String(required=True)
    coach_email = fields.Email(required=True)
# --- data protection (published by the enrolment service) ----------------------------------------

class ErasedEnrolmentSchema(Schema):
    """An enrolment whose participant's data is erased: ids only, so a consumer that never
    heard of the enrolment can still keep a marker (and a late event finds it)."""

    enrolment_id = fields.UUID(required=True)
    programme_id = fields.UUID(required=True)
    course_id = fields.UUID(required=True)
    ags = ags_field(required=True)


class ParticipantErasedV1(Schema):
    """A participant's identifying data is erased (Art. 17 DSGVO or the end of the retention
    period). It names no one: consumers find what they hold by the enrolment ids (and the
    Navigator ids) and replace it with ``pseudonym``."""

    erasure_id = fields.UUID(required=True)
    pseudonym = fields.String(required=True, validate=validate.Regexp(r"^[a-z0-9-]{8,40}$"))
    cause = fields.String(required=True, validate=validate.OneOf(["request", "retention"]))
    erased_at = fields.AwareDateTime(required=True)
    enrolments = fields.List(fields.Nested(ErasedEnrolmentSchema), required=True,
                             validate=validate.Length(max=1000))
    # The person as a coaching programme's Navigator (someone named who never enrolled has
    # only these): consumers drop what they wrote to or about them.
    navigators = fields.List(fields.UUID(), load_default=list, validate=validate.Length(max=100))

    @validates_schema
    def someone(self, data, **kwargs):
        if not data.get("enrolments") and not data.get("navigators"):
            raise ValidationError("an erasure concerns enrolments or Navigators",
                                  "enrolments")


# --- version 2: each event carries its subject's ``sequence`` ------------------------------------
# Events about one enrolment (its funding, its certificates) can reach a consumer out of order:
# a retried one after a newer one. ``sequence`` counts the changes of that enrolment (of its
# funding, of its certificates) at its producer, so a read model applies an event only if it is
# newer than what it holds.

def _sequenced(base: type[Schema]) -> type[Schema]:
    return type(base.__name__.replace("V1", "V2"), (base,), {
        "sequence": fields.Integer(required=True, validate=validate.Range(min=1))})


EnrolmentCreatedV2 = _sequenced(EnrolmentCreatedV1)
EnrolmentPromotedV2 = _sequenced(EnrolmentPromotedV1)
EnrolmentCancelledV2 = _sequenced(EnrolmentCancelledV1)
EnrolmentCompletedV2 = _sequenced(EnrolmentCompletedV1)
FundingGrantedV2 = _sequenced(FundingGrantedV1)
FundingWaitingV2 = _sequenced(FundingWaitingV1)
FundingReleasedV2 = _sequenced(FundingReleasedV1)
FundingConvertedV2 = _sequenced(FundingConvertedV1)
MunicipalityRegisteredV2 = _sequenced(MunicipalityRegisteredV1)
CertificateIssuedV2 = _sequenced(CertificateIssuedV1)
CertificateRevokedV2 = _sequenced(CertificateRevokedV1)


CONTRACTS: dict[tuple[str, int], type[Schema]] = {
    ("programme_published", 1): ProgrammePublishedV1,
    ("municipality_registered", 1): MunicipalityRegisteredV1,
    ("enrolment_created", 1): EnrolmentCreatedV1,
    ("enrolment_promoted", 1): EnrolmentPromotedV1,
    ("enrolment_cancelled", 1): EnrolmentCancelledV1,
    ("enrolment_completed", 1): EnrolmentCompletedV1,
    ("course_cancelled", 1): CourseCancelledV1,
    ("funding_granted", 1): FundingGrantedV1,
    ("funding_waiting", 1): FundingWaitingV1,
    ("funding_released", 1): FundingReleasedV1,
    ("funding_converted", 1): FundingConvertedV1,
    ("body_reminded", 1): BodyRemindedV1,
    ("municipality_registered", 2): MunicipalityRegisteredV2,
    ("enrolment_created", 2): EnrolmentCreatedV2,
    ("enrolment_promoted", 2): EnrolmentPromotedV2,
    ("enrolment_cancelled", 2): EnrolmentCancelledV2,
    ("enrolment_completed", 2): EnrolmentCompletedV2,
    ("funding_granted", 2): FundingGrantedV2,
    ("funding_waiting", 2): FundingWaitingV2,
    ("funding_released", 2): FundingReleasedV2,
    ("funding_converted", 2): FundingConvertedV2,
    ("certificate_issued", 1): CertificateIssuedV1,
    ("certificate_revoked", 1): CertificateRevokedV1,
    ("certificate_issued", 2): CertificateIssuedV2,
    ("certificate_revoked", 2): CertificateRevokedV2,
    ("sign_in_link_requested", 1): SignInLinkRequestedV1,
    ("colleague_invited", 1): ColleagueInvitedV1,
    ("office_sign_in_link_requested", 1): OfficeSignInLinkRequestedV1,
    ("coach_sign_in_link_requested", 1): CoachSignInLinkRequestedV1,
    ("navigator_named", 1): NavigatorNamedV1,
    ("coaching_paired", 1): CoachingPairedV1,
    ("coaching_paired", 2): CoachingPairedV2,
    ("coaching_unpaired", 1): CoachingUnpairedV1,
    ("milestone_reached", 1): MilestoneReachedV1,
    ("milestone_overdue", 1): MilestoneOverdueV1,
    ("participant_erased", 1): ParticipantErasedV1,
}

# Payload fields that are a secret of the event's one recipient (a sign-in link lets whoever
# holds it in): the relay blanks them in its outbox once the broker has confirmed the event,
# so a copy of the database lets nobody in (notifications forgets them once the mail is sent).
SECRET_FIELDS: dict[str, tuple[str, ...]] = {
    "sign_in_link_requested": ("link",),
    "office_sign_in_link_requested": ("link",),
    "coach_sign_in_link_requested": ("link",),
}

LATEST_VERSION = {}
for _type, _version in CONTRACTS:
    LATEST_VERSION[_type] = max(_version, LATEST_VERSION.get(_type, 0))


_SCHEMAS: dict[tuple[str, int], Schema] = {}
_ENVELOPE = EnvelopeSchema()


def contract(event_type: str, version: int) -> Schema | None:
    """The contract's schema, made once: building a marshmallow schema costs more than using it."""
    schema = _SCHEMAS.get((event_type, version))
    if schema is None:
        schema_cls = CONTRACTS.get((event_type, version))
        if schema_cls is None:
            return None
        schema = _SCHEMAS.setdefault((event_type, version), schema_cls())
    return schema


def build_event(producer: str, event_type: str, payload: dict,
                correlation_id: str | None = None, version: int | None = None) -> dict:
    """Check ``payload`` against its contract and wrap it in an envelope (JSON-ready).

    One dump makes the payload JSON-ready (and drops what the contract does not name); one
    validation of that form is the check a consumer's ``parse_event`` will make."""
    version = version or LATEST_VERSION.get(event_type)
    schema = contract(event_type, version)
    if schema is None:
        raise ContractViolation(f"no contract for event {event_type} v{version}")
    checked = schema.dump(payload)
    if nul_path(checked) is not None:
        raise ContractViolation(f"{event_type} payload is invalid",
                                {nul_path(checked) or "_schema": ["must not contain NUL"]})
    errors = schema.validate(checked)
    if errors:
        raise ContractViolation(f"{event_type} payload is invalid", flatten_messages(errors))
    return {
        "event_id": str(uuid.uuid4()),
        "event_type": event_type,
        "version": version,
        "occurred_at": datetime.now(timezone.utc).isoformat(),
        "producer": producer,
        "correlation_id": correlation_id,
        "payload": checked,
    }


class Event:
    """A received event, checked against its contract."""

    __slots__ = ("event_id", "event_type", "version", "occurred_at", "producer",
                 "correlation_id", "payload")

    def __init__(self, **values):
        for name in self.__slots__:
            setattr(self, name, values[name])


def newer(sequence: int | None, held: int | None) -> bool:
    """Whether an event with ``sequence`` is newer than the version a read model holds; an
    event without one (version 1 contracts) counts as newer, as before sequences existed."""
    return sequence is None or held is None or sequence > held


def parse_event(envelope, expected_type: str | None = None) -> Event:
    """Check an incoming envelope and its payload; a mismatch is a ``ContractViolation``."""
    try:
        header = load(_ENVELOPE, envelope, "event envelope")
    except ValidationFailed as exc:
        raise ContractViolation(exc.message, exc.fields) from None
    if expected_type and header["event_type"] != expected_type:
        raise ContractViolation(f"expected {expected_type}, got {header['event_type']}")
    schema = contract(header["event_type"], header["version"])
    if schema is None:
        raise ContractViolation(f"unknown event {header['event_type']} v{header['version']}")
    try:
        header["payload"] = load(schema, header["payload"], f"{header['event_type']} payload")
    except ValidationFailed as exc:
        raise ContractViolation(exc.message, exc.fields) from None
    return Event(**header)
