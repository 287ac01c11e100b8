"""ServiceError -> a gRPC status with google.rpc details (BadRequest, ErrorInfo)."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ..errors import ServiceError

DOMAIN = "sahayak.v1"


def to_status(err: ServiceError) -> grpc.Status:
    details = []
    if err.field_errors:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=e.field, description=e.reason)
                for e in err.field_errors[:100]
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        details.append(packed)
    if err.reason:
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN))
        details.append(packed)
    status = status_pb2.Status(code=code_pb2.Code.Value(err.code), message=err.message[:2000], details=details)
    return rpc_status.to_status(status)

