"""Domain errors and their gRPC status: every handler raises these, one interceptor turns them into codes.

Anything else that escapes a handler is logged with its trace and answered INTERNAL with no detail, so a
client never sees a stack trace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.rpc import status_pb2
from grpc.aio import ServerInterceptor

log = logging.getLogger(__name__)
access = logging.getLogger("shopmesh.access")


#: How much of a client's value an error message quotes: messages travel in gRPC trailers and HTTP headers,
#: whose size is bounded, so a huge input must never be echoed whole.
QUOTED_CHARACTERS = 40


def shown(value: str, limit: int = QUOTED_CHARACTERS) -> str:
    """A client's value as an error message quotes it: in full when short, else its start and its length."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


class ServiceError(Exception):
    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServiceError):
    """A field of the request is wrong; the message starts with the field's name."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class ErrorMapping(ServerInterceptor):
    """Maps ServiceError to its status and anything unexpected to INTERNAL, for unary-unary handlers, and
    writes one access-log line per call (method, status, milliseconds)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        details = handler_call_details
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        behaviour: Any = handler.unary_unary  # an async handler on a grpc.aio server

        async def mapped(request, context: grpc.aio.ServicerContext):
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await behaviour(request, context)
            except ServiceError as error:
                code = error.code
                if code == grpc.StatusCode.UNAVAILABLE:  # not the caller's doing: the operator wants the why
                    log.warning("%s is unavailable: %s", details.method, error.message)
                # The google.rpc.Status in the trailers is what Envoy's transcoder turns into a JSON error body.
                status = status_pb2.Status(code=error.code.value[0], message=error.message)
                await context.abort(
                    error.code,
                    error.message,
                    trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
                )
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception:
                code = grpc.StatusCode.INTERNAL
                log.exception("unexpected error in %s", details.method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error; the service logged the details")
            finally:
                access.info("%s %s %.1f ms", details.method, code.name, (time.perf_counter() - started) * 1000)

        if details.method.startswith("/grpc.health.v1.Health/"):
            return handler  # Consul checks every 2 s: not worth an access-log line each

        return grpc.unary_unary_rpc_method_handler(
            mapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
