"""ServiceError -> a gRPC status with google.rpc details (BadRequest, ErrorInfo)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..errors import ServiceError

DOMAIN = "sahayak.v1"
# The status travels in trailing metadata, which a client reads only up to 8 KiB
# by default (16 KiB hard): past that it sees RESOURCE_EXHAUSTED instead of our
# error. grpc-message is percent-encoded (up to 3 bytes a byte) and
# grpc-status-details-bin is base64 of the Status (which repeats the message), so
# the budgets below keep the worst case near 7 KiB. Field names and values in an
# error echo the client's input, which may be any length.
MAX_MESSAGE_BYTES = 1000
MAX_BAD_REQUEST_BYTES = 2000
MAX_FIELD_BYTES = 200
MAX_DESCRIPTION_BYTES = 400


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes (plus an ellipsis when cut)."""
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode(errors="ignore") + "\u2026"


def to_status(err: ServiceError) -> grpc.Status:
    details = []
    if err.field_errors:
        bad = error_details_pb2.BadRequest()
        for e in err.field_errors[:100]:
            bad.field_violations.add(
                field=clip(e.field, MAX_FIELD_BYTES), description=clip(e.reason, MAX_DESCRIPTION_BYTES)
            )
            if bad.ByteSize() > MAX_BAD_REQUEST_BYTES and len(bad.field_violations) > 1:
                del bad.field_violations[-1]
                break
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    if err.reason:
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN))
        details.append(packed)
    status = status_pb2.Status(
        code=code_pb2.Code.Value(err.code), message=clip(err.message, MAX_MESSAGE_BYTES), details=details
    )
    return rpc_status.to_status(status)
