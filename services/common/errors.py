"""Typed errors that cross the RPC boundary.

Every subclass registers itself with nameko, so an RPC caller receives an instance of the same
class (not a ``RemoteError``) with the message and the field errors intact. The gateway maps
``status`` to its HTTP answer.
"""
from __future__ import annotations

from nameko.exceptions import deserialize_to_instance


class LotsenError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, message: str, fields: dict | None = None):
        super().__init__(message, dict(fields or {}))

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        deserialize_to_instance(cls)

    @property
    def message(self) -> str:
        return self.args[0]

    @property
    def fields(self) -> dict:
        return self.args[1]

    def __str__(self) -> str:
        if self.fields:
            return f"{self.message} {self.fields}"
        return self.message

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": self.message, "fields": self.fields}


deserialize_to_instance(LotsenError)


class ValidationFailed(LotsenError):
    """Input that does not match the schema; ``fields`` says which field and why."""

    status = 422
    title = "Invalid input"


class NotFound(LotsenError):
    status = 404
    title = "Not found"


class AuthenticationFailed(LotsenError):
    status = 401
    title = "Authentication failed"


class PermissionDenied(LotsenError):
    status = 403
    title = "Not allowed"


class Gone(LotsenError):
    """It existed, and is no longer given out (a certificate's PDF after its holder's data
    was erased)."""

    status = 410
    title = "Gone"


class Unavailable(LotsenError):
    """A service this call needs did not answer in time; nothing was changed, try again."""

    status = 503
    title = "Service unavailable"


class Conflict(LotsenError):
    status = 409
    title = "Conflict"


class DuplicateEnrolment(Conflict):
    title = "Participant already enrolled"


class IdempotencyKeyReused(LotsenError):
    """The same idempotency key came back with a different request."""

    status = 422
    title = "Idempotency key reused"


class RuleViolation(LotsenError):
    """Well-formed input that a domain rule refuses (not eligible, window closed, ...)."""

    status = 422
    title = "Rule violation"


class ContractViolation(LotsenError):
    """An event that does not match its contract: retrying cannot help, so it is parked."""

    status = 400
    title = "Event contract violated"
