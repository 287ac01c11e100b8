"""The errors our code raises; the api layer turns each into a gRPC status.

ServiceError
├── InvalidArgument      INVALID_ARGUMENT (carries field violations)
├── NotFound             NOT_FOUND
├── AlreadyExists        ALREADY_EXISTS
├── FailedPrecondition   FAILED_PRECONDITION
├── ResourceExhausted    RESOURCE_EXHAUSTED
└── Unavailable          UNAVAILABLE (e.g. the database is locked)
"""

from __future__ import annotations

from .schema import FieldError


class ServiceError(Exception):
    code = "INTERNAL"

    def __init__(self, message: str, *, reason: str = "", field_errors: list[FieldError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        # UPPER_SNAKE machine-readable cause, sent as google.rpc.ErrorInfo.
        self.reason = reason
        self.field_errors = field_errors or []


class InvalidArgument(ServiceError):
    code = "INVALID_ARGUMENT"

    @classmethod
    def fields(cls, errors: list[FieldError], reason: str = "INVALID_FIELD") -> InvalidArgument:
        head = "; ".join(f"{e.field}: {e.reason}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return cls(head + more, reason=reason, field_errors=errors)


class NotFound(ServiceError):
    code = "NOT_FOUND"


class AlreadyExists(ServiceError):
    code = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    code = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    code = "RESOURCE_EXHAUSTED"


class Unavailable(ServiceError):
    code = "UNAVAILABLE"
