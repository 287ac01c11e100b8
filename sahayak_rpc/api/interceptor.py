"""One interceptor for every RPC: ServiceError -> rich status, one log line per call."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import structlog

from ..errors import ServiceError
from .errors import to_status

log = structlog.get_logger("sahayak_rpc.rpc")
_ids = itertools.count(1)
_OK = grpc.StatusCode.OK


def _request_id(context: grpc.ServicerContext) -> str:
    for key, value in context.invocation_metadata():
        if key == "x-request-id":
            return str(value)[:64]
    return f"r{next(_ids)}"


def _fail(context: grpc.ServicerContext, exc: Exception, method: str, rid: str) -> None:
    if isinstance(exc, ServiceError):
        context.abort_with_status(to_status(exc))
    # A bug of ours: log it with the stack and answer INTERNAL without details.
    log.exception("rpc.crashed", method=method, request_id=rid)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {rid})")


def _code(context: grpc.ServicerContext) -> str:
    code = context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class _Malformed:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, error: str) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    # grpcio answers INTERNAL when a request fails to parse; a client's bad
    # bytes deserve INVALID_ARGUMENT, so parsing errors reach the handler.
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError and friends
            return _Malformed(str(exc) or type(exc).__name__)

    return parse


def _check(request: Any, context: grpc.ServicerContext) -> None:
    if isinstance(request, _Malformed):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid protobuf message: {request.error}")


def _checked_stream(requests: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    for request in requests:
        _check(request, context)
        yield request


class RpcInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: Any = None) -> None:
        self._metrics = metrics  # runtime.metrics.Metrics, or None

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method  # type: ignore[attr-defined]
        handler = handler._replace(request_deserializer=_tolerant(handler.request_deserializer))
        m = self._metrics
        if handler.unary_unary:
            return handler._replace(unary_unary=_unary(handler.unary_unary, method, False, m))
        if handler.stream_unary:
            return handler._replace(stream_unary=_unary(handler.stream_unary, method, True, m))
        if handler.unary_stream:
            return handler._replace(unary_stream=_streaming(handler.unary_stream, method, False, m))
        return handler._replace(stream_stream=_streaming(handler.stream_stream, method, True, m))


def _record(metrics: Any, method: str, code: str, seconds: float, rid: str, **extra: Any) -> None:
    log.info("rpc", method=method, code=code, latency_us=round(seconds * 1e6), request_id=rid, **extra)
    if metrics is not None:
        metrics.requests.labels(method, code).inc()
        metrics.latency.labels(method).observe(seconds)


def _unary(behaviour: Callable[[Any, grpc.ServicerContext], Any], method: str, streamed: bool,
           metrics: Any) -> Callable[[Any, grpc.ServicerContext], Any]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        rid = _request_id(context)
        try:
            if streamed:
                request = _checked_stream(request, context)
            else:
                _check(request, context)
            return behaviour(request, context)
        except Exception as exc:
            if context.code() not in (None, _OK):  # already aborted (incl. UNIMPLEMENTED)
                raise
            _fail(context, exc, method, rid)
        finally:
            _record(metrics, method, _code(context), time.perf_counter() - start, rid)

    return wrapper


def _streaming(behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]], method: str, streamed: bool,
               metrics: Any) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        start = time.perf_counter()
        rid = _request_id(context)
        sent = 0
        try:
            if streamed:
                request = _checked_stream(request, context)
            else:
                _check(request, context)
            for item in behaviour(request, context):
                sent += 1
                yield item
        except Exception as exc:
            if context.code() not in (None, _OK):
                raise
            _fail(context, exc, method, rid)
        finally:
            code = _code(context) if context.is_active() or context.code() is not None else "CANCELLED"
            _record(metrics, method, code, time.perf_counter() - start, rid, messages=sent)

    return wrapper
