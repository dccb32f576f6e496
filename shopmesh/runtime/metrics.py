"""What a process tells about itself: Prometheus metrics, and the request id of the call it serves.

Each process serves its metrics (prometheus_client's registry) on a port of its own, bound to the address the
process binds, and announces that port in Consul as the service meta `metrics_port` (with `metrics_path`).
Prometheus discovers its targets there (prometheus/prometheus.yml): a new instance is scraped as soon as it
registers, and nothing lists targets by hand.

Names follow Prometheus's conventions: the unit in the name, counters ending in _total, and labels that take few
values (a method, a status code, a reason): never a customer, an id or a token. The gRPC metrics carry the names
of go-grpc-prometheus (grpc_server_handled_total, grpc_server_handling_seconds, ...), so the usual dashboards
and queries work unchanged.

The request id is Envoy's x-request-id: the gateway sets it on every request (or keeps the caller's), the gRPC
metadata carries it to the service, each log line written for the call names it, and billing passes it on to
customer and inventory."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
from grpc.aio import ServerInterceptor
from prometheus_client import Counter, Gauge, Histogram, start_http_server

#: Consul service meta: where an instance serves its metrics (port on the instance's address, and path).
METRICS_PORT = "metrics_port"
METRICS_PATH = "metrics_path"

#: The metadata key of the request id, as Envoy names it.
REQUEST_ID = "x-request-id"
#: What a request id may hold before it reaches a log line; anything else is replaced.
_UNSAFE = re.compile(r"[^A-Za-z0-9._:@/+=-]")
MAX_REQUEST_ID = 128

#: Latency buckets in seconds: from a cached read (under a millisecond) to a call that hit its 5 s deadline.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

_SERVER_LABELS = ("grpc_service", "grpc_method", "grpc_type")
SERVER_STARTED = Counter("grpc_server_started", "RPCs started on the server.", _SERVER_LABELS)
SERVER_HANDLED = Counter(
    "grpc_server_handled", "RPCs completed on the server, by status code.", (*_SERVER_LABELS, "grpc_code")
)
SERVER_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status, on the server.",
    _SERVER_LABELS,
    buckets=LATENCY_BUCKETS,
)
SERVER_IN_FLIGHT = Gauge(
    "grpc_server_in_flight_requests", "RPCs under way on the server (open streams included).", _SERVER_LABELS
)
DATABASE_SECONDS = Histogram(
    "shopmesh_database_seconds",
    "Time an RPC spent in its database transactions and reads (only RPCs that used the database).",
    ("grpc_service", "grpc_method"),
    buckets=LATENCY_BUCKETS,
)
_CLIENT_LABELS = ("grpc_service", "grpc_method")
CLIENT_HANDLED = Counter(
    "grpc_client_handled",
    "Calls made to another service, by status code (each retry on another instance counts).",
    (*_CLIENT_LABELS, "grpc_code"),
)
CLIENT_SECONDS = Histogram(
    "grpc_client_handling_seconds",
    "Time of a call made to another service, to its status.",
    _CLIENT_LABELS,
    buckets=LATENCY_BUCKETS,
)

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_database: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar("database_seconds", default=None)


def serve(host: str, port: int = 0) -> dict[str, str]:
    """Serve this process's metrics on host:port (0: a free port); the Consul service meta announcing them."""
    server, _thread = start_http_server(port, addr=host)
    return announce(server.server_port)


def announce(port: int, path: str = "/metrics") -> dict[str, str]:
    return {METRICS_PORT: str(port), METRICS_PATH: path}


def request_id() -> str:
    """The request id of the call being served ("-" outside a call)."""
    return _request_id.get()


def safe_request_id(value: object) -> str:
    """A caller's request id as it may appear in a log line: printable, no spaces, at most MAX_REQUEST_ID long."""
    text = value if isinstance(value, str) else ""
    return _UNSAFE.sub("_", text[:MAX_REQUEST_ID]) or "-"


def passed_on(metadata: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Metadata for a call made while serving one: the caller's request id goes with it."""
    current = _request_id.get()
    return metadata if current == "-" else (*metadata, (REQUEST_ID, current))


class RequestIdFilter(logging.Filter):
    """Gives every log record the request id of the call it was written in, as %(request_id)s."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        return True


def count_database(seconds: float) -> None:
    """Add database time to the RPC being served, if any."""
    spent = _database.get()
    if spent is not None:
        spent[0] += seconds


@contextmanager
def database_time() -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        count_database(time.perf_counter() - started)


@dataclass
class _Outcome:
    code: grpc.StatusCode = grpc.StatusCode.OK


def code_label(code: grpc.StatusCode) -> str:
    """A status code as go-grpc-prometheus labels it: OK, InvalidArgument, PermissionDenied, ..."""
    return "OK" if code is grpc.StatusCode.OK else code.name.title().replace("_", "")


def _split(method: str) -> tuple[str, str]:
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


class Observed(ServerInterceptor):
    """Measures every RPC a server handles (the health checks and reflection aside), and sets the request id and
    the database clock of the call for the code that serves it. It runs first, so calls refused for their token
    are counted too."""

    SKIPPED = ("/grpc.health.v1.Health/", "/grpc.reflection.")

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or details.method.startswith(self.SKIPPED):
            return handler
        service, method = _split(details.method)
        incoming = dict(details.invocation_metadata or ()).get(REQUEST_ID, "")
        rid = safe_request_id(incoming) if incoming else "-"

        if handler.unary_unary is not None:
            unary: Any = handler.unary_unary
            labels = (service, method, "unary")

            async def observed_unary(request, context: grpc.aio.ServicerContext):
                with _observing(labels, rid, context) as outcome:
                    try:
                        return await unary(request, context)
                    except grpc.aio.AbortError:
                        outcome.code = context.code() or grpc.StatusCode.UNKNOWN
                        raise

            return grpc.unary_unary_rpc_method_handler(
                observed_unary, handler.request_deserializer, handler.response_serializer
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _streaming(handler.unary_stream, (service, method, "server_stream"), rid),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                _streaming(handler.stream_stream, (service, method, "bidi_stream"), rid),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler


def _streaming(behaviour: Any, labels: tuple[str, str, str], rid: str) -> Callable[..., Any]:
    """A streaming handler measured: an async generator of responses, or a coroutine that writes them."""
    if inspect.isasyncgenfunction(behaviour):

        async def generated(request, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            with _observing(labels, rid, context) as outcome:
                try:
                    async for response in behaviour(request, context):
                        yield response
                except grpc.aio.AbortError:
                    outcome.code = context.code() or grpc.StatusCode.UNKNOWN
                    raise

        return generated

    async def written(request, context: grpc.aio.ServicerContext) -> None:
        with _observing(labels, rid, context) as outcome:
            try:
                await behaviour(request, context)
            except grpc.aio.AbortError:
                outcome.code = context.code() or grpc.StatusCode.UNKNOWN
                raise

    return written


@contextmanager
def _observing(labels: tuple[str, str, str], rid: str, context: grpc.aio.ServicerContext) -> Iterator[_Outcome]:
    outcome = _Outcome()
    spent = [0.0]
    rid_token, database_token = _request_id.set(rid), _database.set(spent)
    SERVER_STARTED.labels(*labels).inc()
    in_flight = SERVER_IN_FLIGHT.labels(*labels)
    in_flight.inc()
    started = time.perf_counter()
    try:
        yield outcome
        outcome.code = context.code() or grpc.StatusCode.OK
    except asyncio.CancelledError:
        outcome.code = grpc.StatusCode.CANCELLED
        raise
    except grpc.aio.AbortError:
        raise
    except BaseException:
        outcome.code = grpc.StatusCode.UNKNOWN
        raise
    finally:
        elapsed = time.perf_counter() - started
        SERVER_HANDLED.labels(*labels, code_label(outcome.code)).inc()
        in_flight.dec()
        if spent[0]:
            DATABASE_SECONDS.labels(*labels[:2]).observe(spent[0])
        SERVER_SECONDS.labels(*labels).observe(elapsed)  # last: a call's whole bookkeeping is done once it counts
        try:
            _request_id.reset(rid_token)
            _database.reset(database_token)
        except ValueError:
            pass  # a stream resumed in another context: that context ends with the call anyway


@contextmanager
def client_call(service: str, method: str) -> Iterator[_Outcome]:
    """Measure one call to another service; the caller sets outcome.code when the call fails."""
    outcome = _Outcome()
    started = time.perf_counter()
    try:
        yield outcome
    except grpc.aio.AioRpcError as error:
        outcome.code = error.code()
        raise
    except asyncio.CancelledError:
        outcome.code = grpc.StatusCode.CANCELLED
        raise
    except BaseException:
        outcome.code = grpc.StatusCode.UNKNOWN
        raise
    finally:
        CLIENT_SECONDS.labels(service, method).observe(time.perf_counter() - started)
        CLIENT_HANDLED.labels(service, method, code_label(outcome.code)).inc()
