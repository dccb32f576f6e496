"""What every service process does alike: a grpc.aio server with health and reflection, error mapping,
registration in Consul, and a graceful stop on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from shopmesh.runtime import metrics
from shopmesh.runtime.auth import Authorization, TokenVerifier, Verifier
from shopmesh.runtime.catalogue import ServicePart
from shopmesh.runtime.discovery import Registration, StatusCheck
from shopmesh.runtime.errors import ErrorMapping
from shopmesh.runtime.metrics import Observed, RequestIdFilter
from shopmesh.runtime.settings import Settings, load

log = logging.getLogger(__name__)

#: Request metadata a service accepts: Envoy's own limit on request headers (60 KiB) and some room.
METADATA_LIMIT = 64 * 1024

#: How often a service's log lines, written in blocks, reach its log file at the latest.
LOG_FLUSH_SECONDS = 0.2


class BatchedLogHandler(logging.StreamHandler):
    """Log lines to stdout (supervisord's pipe to the part's log file) written in blocks: a write and a wake-up of
    supervisord per access-log line cost the mesh more CPU than a primary-key read. A warning or worse is written at
    once; the rest at the latest LOG_FLUSH_SECONDS later, by flush_logs()."""

    def flush(self) -> None:
        pass

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.write_out()

    def write_out(self) -> None:
        self.acquire()
        try:
            self.stream.flush()
        finally:
            self.release()


async def flush_logs(handler: BatchedLogHandler) -> None:
    while True:
        await asyncio.sleep(LOG_FLUSH_SECONDS)
        handler.write_out()


#: Attaches a service's servicer to the server, appends any status checks of its own to the list (reported to
#: Consul with the instance), and returns what to close on shutdown (or None).
Attach = Callable[[grpc.aio.Server, Settings, list[StatusCheck]], Awaitable[Callable[[], Awaitable[None]] | None]]


@dataclass(frozen=True)
class Service:
    """A gRPC server as the runtime runs it: a service of the catalogue (Service.of), or the control plane."""

    consul_name: str  # the name it registers under
    full_name: str  # gRPC service name, e.g. shopmesh.customer.v1.CustomerService
    attach: Attach
    configured_port: Callable[[Settings], int]  # its port setting; SHOPMESH_INSTANCE_PORT overrides it
    authenticated: bool = True  # callers need a Keycloak token with a role of the permission table

    @classmethod
    def of(cls, part: ServicePart, attach: Attach) -> Service:
        return cls(part.consul_name, part.grpc_service, attach, lambda settings: settings.service_ports[part.name])

    def port(self, settings: Settings) -> int:
        return settings.listen_port(self.configured_port(settings))


@dataclass
class Running:
    """A started gRPC server of a service: its port, and what to do to stop it."""

    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    status_checks: list[StatusCheck]
    close: Callable[[], Awaitable[None]] | None

    async def stop(self, grace: float = 5) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace=grace)
        if self.close is not None:
            await self.close()


async def start(service: Service, settings: Settings, verifier: Verifier | None = None) -> Running:
    """Attach the service to a new gRPC server (with its token check, error mapping, health and reflection) and
    start it on its port (0: any free port). verifier checks tokens; by default against Keycloak's keys."""
    # Observed first: a call refused for its token is measured too.
    interceptors: list[grpc.aio.ServerInterceptor] = [Observed()]
    if service.authenticated:
        interceptors.append(Authorization(verifier or TokenVerifier(settings)))
    # Envoy forwards the REST path as x-envoy-original-path: a long id in it (refused with INVALID_ARGUMENT by the
    # service) must not first trip gRPC's default 8 KiB metadata limit, which answers RESOURCE_EXHAUSTED at random.
    server = grpc.aio.server(
        interceptors=[*interceptors, ErrorMapping()],
        options=[("grpc.max_metadata_size", METADATA_LIMIT), ("grpc.absolute_max_metadata_size", METADATA_LIMIT)],
    )
    status_checks: list[StatusCheck] = []
    close = await service.attach(server, settings, status_checks)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        [service.full_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    port = server.add_insecure_port(f"{settings.host}:{service.port(settings)}")
    await server.start()
    for name in ("", service.full_name):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("%s serving on %s:%d", service.full_name, settings.host, port)
    return Running(server, port, health, status_checks, close)


async def serve(service: Service, settings: Settings) -> None:
    running = await start(service, settings)
    port, status_checks = running.port, running.status_checks
    handlers = [handler for handler in logging.getLogger().handlers if isinstance(handler, BatchedLogHandler)]
    flushing = [asyncio.create_task(flush_logs(handler)) for handler in handlers]
    announced = metrics.serve(settings.host, settings.metrics_port)
    registration = Registration(settings, service.consul_name, port, status_checks=status_checks, meta=announced)
    await registration.register()

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()

    log.info("stopping %s", service.consul_name)
    await registration.deregister()
    # Still serving while the mesh hears that it left: its callers (the gateway through the control plane, other
    # services through their Consul watches) stop choosing it before it stops taking calls.
    await asyncio.sleep(settings.drain_seconds)
    await running.stop()
    log.info("stopped")
    for task in flushing:
        task.cancel()
    for handler in handlers:
        handler.write_out()


#: Every line names the request id of the call it was written in ("-" outside a call).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


def main(service: Service) -> None:
    handler = BatchedLogHandler(sys.stdout)
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, handlers=[handler])
    try:
        asyncio.run(serve(service, load()))
    finally:
        handler.write_out()
