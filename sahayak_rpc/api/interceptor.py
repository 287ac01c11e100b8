"""One interceptor for every RPC: who may call it, limits, ServiceError -> rich
status, and one log line per call (with the caller's token name, never the token)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError
import structlog

from .. import auth
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


class Malformed:
    """Stands in for a request whose bytes did not parse."""

    def __init__(self, error: str) -> None:
        self.error = error


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    # grpcio answers INTERNAL when a request fails to parse; a client's bad bytes (protobuf's
    # DecodeError) deserve INVALID_ARGUMENT, so those reach the handler. Anything else a
    # deserializer raises is our bug: grpcio logs it with its stack and answers INTERNAL.
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return Malformed(str(exc) or type(exc).__name__)

    return parse


def _check(request: Any, context: grpc.ServicerContext) -> None:
    if isinstance(request, Malformed):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid protobuf message: {request.error}")


def _checked_stream(requests: Iterator[Any], context: grpc.ServicerContext, limit: int) -> Iterator[Any]:
    for n, request in enumerate(requests, 1):
        if n > limit:
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"at most {limit} messages per stream ([server] max_stream_messages); the messages "
                "before this one were handled: send the rest in another call",
            )
        _check(request, context)
        yield request


class Guard:
    """Authentication, roles, and what one client may hold open at once."""

    def __init__(
        self,
        tokens: auth.TokenStore | None = None,
        open_reflection: bool = True,
        max_streams_per_client: int = 64,
        max_stream_messages: int = 100_000,
    ) -> None:
        self.tokens = tokens
        self.open_reflection = open_reflection
        self.max_streams = max_streams_per_client
        self.max_stream_messages = max_stream_messages
        self._streams: dict[str, int] = {}
        self._lock = threading.Lock()

    def admit(self, method: str, metadata: Any) -> tuple[str | None, str | None, str]:
        """(caller's token name, refusal code or None, message)."""
        if self.tokens is None:
            return None, None, ""
        principal, code, message = auth.decide(self.tokens, method, metadata, self.open_reflection)
        return (principal.name if principal else None), code, message

    def open_stream(self, client: str) -> bool:
        with self._lock:
            held = self._streams.get(client, 0)
            if held >= self.max_streams:
                return False
            self._streams[client] = held + 1
            return True

    def close_stream(self, client: str) -> None:
        with self._lock:
            held = self._streams.get(client, 0) - 1
            if held > 0:
                self._streams[client] = held
            else:
                self._streams.pop(client, None)

    def open_streams(self) -> int:
        with self._lock:
            return sum(self._streams.values())


def _client_key(principal: str | None, context: grpc.ServicerContext) -> str:
    if principal is not None:
        return f"token:{principal}"
    peer = context.peer() or ""  # ipv4:127.0.0.1:5432, ipv6:[::1]:5432, unix:...
    return peer.rsplit(":", 1)[0] if peer.startswith(("ipv4:", "ipv6:")) else peer


class RpcInterceptor(grpc.ServerInterceptor):
    def __init__(self, metrics: Any = None, guard: Guard | None = None) -> None:
        self._metrics = metrics  # runtime.metrics.Metrics, or None
        self._guard = guard or Guard()

    def intercept_service(self, continuation: Callable[[Any], Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        method = details.method
        principal, refusal, message = self._guard.admit(method, details.invocation_metadata)
        if refusal is not None:
            return _refuse(
                handler, _Call(method, principal, self._metrics, self._guard), grpc.StatusCode[refusal], message
            )
        handler = handler._replace(request_deserializer=tolerant(handler.request_deserializer))
        call = _Call(method, principal, self._metrics, self._guard)
        if handler.unary_unary:
            return handler._replace(unary_unary=_unary(handler.unary_unary, call, False))
        if handler.stream_unary:
            return handler._replace(stream_unary=_unary(handler.stream_unary, call, True))
        if handler.unary_stream:
            return handler._replace(unary_stream=_streaming(handler.unary_stream, call, False))
        return handler._replace(stream_stream=_streaming(handler.stream_stream, call, True))


class _Call:
    __slots__ = ("method", "principal", "metrics", "guard")

    def __init__(self, method: str, principal: str | None, metrics: Any, guard: Guard) -> None:
        self.method, self.principal, self.metrics, self.guard = method, principal, metrics, guard

    def record(self, code: str, seconds: float, rid: str, **extra: Any) -> None:
        if self.principal is not None:
            extra["principal"] = self.principal
        log.info("rpc", method=self.method, code=code, latency_us=round(seconds * 1e6), request_id=rid, **extra)
        if self.metrics is not None:
            self.metrics.requests.labels(self.method, code).inc()
            self.metrics.latency.labels(self.method).observe(seconds)

    def open_stream(self, context: grpc.ServicerContext) -> str:
        client = _client_key(self.principal, context)
        if not self.guard.open_stream(client):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this client already holds {self.guard.max_streams} open streams "
                "([server] max_streams_per_client); close one first",
            )
        return client


def _refuse(handler: Any, call: _Call, code: grpc.StatusCode, message: str) -> Any:
    """A handler of the same shape that answers ``code`` without running the method."""

    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        call.record(code.name, 0.0, _request_id(context))
        context.abort(code, message)

    def deny_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        deny(request, context)
        yield  # pragma: no cover - abort raised

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, None, handler.response_serializer)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, None, handler.response_serializer)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, None, handler.response_serializer)
    return grpc.stream_stream_rpc_method_handler(deny_stream, None, handler.response_serializer)


def _unary(
    behaviour: Callable[[Any, grpc.ServicerContext], Any], call: _Call, streamed: bool
) -> Callable[[Any, grpc.ServicerContext], Any]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        rid = _request_id(context)
        client = None
        try:
            if streamed:
                client = call.open_stream(context)
                request = _checked_stream(request, context, call.guard.max_stream_messages)
            else:
                _check(request, context)
            return behaviour(request, context)
        except Exception as exc:
            if context.code() not in (None, _OK):  # already aborted (incl. UNIMPLEMENTED)
                raise
            if not context.is_active():  # the client cancelled or went away: nothing to answer
                raise
            _fail(context, exc, call.method, rid)
        finally:
            if client is not None:
                call.guard.close_stream(client)
            call.record(_code(context), time.perf_counter() - start, rid)

    return wrapper


def _streaming(
    behaviour: Callable[[Any, grpc.ServicerContext], Iterator[Any]], call: _Call, streamed: bool
) -> Callable[[Any, grpc.ServicerContext], Iterator[Any]]:
    def wrapper(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        start = time.perf_counter()
        rid = _request_id(context)
        sent = 0
        client = None
        try:
            client = call.open_stream(context)
            if streamed:
                request = _checked_stream(request, context, call.guard.max_stream_messages)
            else:
                _check(request, context)
            for item in behaviour(request, context):
                sent += 1
                yield item
        except Exception as exc:
            if context.code() not in (None, _OK) or not context.is_active():
                raise
            _fail(context, exc, call.method, rid)
        finally:
            if client is not None:
                call.guard.close_stream(client)
            code = _code(context) if context.is_active() or context.code() is not None else "CANCELLED"
            call.record(code, time.perf_counter() - start, rid, messages=sent)

    return wrapper
