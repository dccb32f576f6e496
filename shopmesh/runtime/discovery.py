"""Consul for the services: each instance registers itself with a gRPC health check, and callers find the
passing instances of another service through a blocking-query watch, round-robin across them."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import consul.aio
import grpc

import consul
from shopmesh.runtime import catalogue
from shopmesh.runtime.errors import Unavailable
from shopmesh.runtime.settings import Settings

log = logging.getLogger(__name__)


def _client(settings: Settings) -> consul.aio.Consul:
    return consul.aio.Consul(host=settings.consul_address, port=settings.consul_http_port)


@dataclass(frozen=True)
class StatusCheck:
    """A check of a part of a service that Consul cannot run itself (billing's outbox, say): `evaluate` answers
    ("passing" | "warning", notes), and the registration reports it to Consul as a TTL check every few seconds.
    A warning shows in Consul and `shopmesh status` without taking the instance out of service."""

    name: str
    evaluate: Callable[[], Awaitable[tuple[str, str]]]
    every: float = 5.0


class Registration:
    """One instance of a service in Consul's catalog, under a unique id. A gRPC server is checked by Consul
    through grpc.health.v1; a process without a port (ttl given) keeps its TTL check passing itself."""

    def __init__(
        self,
        settings: Settings,
        service: str,
        port: int,
        tags: tuple[str, ...] = ("grpc",),
        ttl: str | None = None,
        service_id: str | None = None,
        status_checks: Sequence[StatusCheck] = (),
        meta: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.service = service
        self.port = port
        self.tags = list(tags)
        self.ttl = ttl
        self.service_id = service_id or catalogue.service_id(service, settings.advertise_address, port)
        self.status_checks = tuple(status_checks)
        self.meta = dict(meta or {})  # where its metrics are, say (shopmesh.runtime.metrics.announce)
        self._reporters: list[asyncio.Task] = []

    def _check_id(self, check: StatusCheck) -> str:
        return f"{self.service_id}:{check.name}"

    async def register(self) -> None:
        address = f"{self.settings.advertise_address}:{self.port}"
        if self.ttl:
            check = consul.Check.ttl(self.ttl)
            check["DeregisterCriticalServiceAfter"] = self.settings.consul_deregister_after
        else:
            check = consul.Check.grpc(
                address, self.settings.consul_check_interval, deregister=self.settings.consul_deregister_after
            )
        client = _client(self.settings)
        try:
            # replace_existing_checks: a restarted instance re-registers cleanly under the same id.
            # A status check that stops being reported turns critical after 4 rounds: its reporter is stuck.
            extra = [
                {
                    "CheckID": self._check_id(status),
                    "Name": status.name,
                    "TTL": f"{status.every * 4:g}s",
                    "Status": "passing",
                }
                for status in self.status_checks
            ]
            await client.agent.service.register(
                self.service,
                service_id=self.service_id,
                address=self.settings.advertise_address,
                port=self.port,
                tags=self.tags,
                check=check,
                extra_checks=extra or None,
                meta=self.meta or None,
                replace_existing_checks=True,
            )
        finally:
            await client.close()
        log.info("registered %s in Consul as %s (%s)", self.service, self.service_id, address)
        self._reporters = [
            asyncio.create_task(self._report(self._check_id(status), status), name=status.name)
            for status in self.status_checks
        ]

    async def _report(self, check_id: str, status: StatusCheck) -> None:
        """Report the status check to Consul every status.every seconds until cancelled."""
        client = _client(self.settings)
        last = None
        try:
            while True:
                try:
                    verdict, notes = await status.evaluate()
                    update = client.agent.check.ttl_warn if verdict == "warning" else client.agent.check.ttl_pass
                    await update(check_id, notes=notes)
                    if verdict != last:
                        (log.warning if verdict == "warning" else log.info)("%s: %s (%s)", status.name, verdict, notes)
                    last = verdict
                except Exception as error:
                    log.warning("could not report the check %s: %s", status.name, error)
                await asyncio.sleep(status.every)
        finally:
            await client.close()

    async def keep_passing(self, every: float) -> None:
        """Pass the instance's own TTL check every `every` seconds until cancelled."""

        async def alive() -> tuple[str, str]:
            return "passing", ""

        await self._report(f"service:{self.service_id}", StatusCheck(self.service_id, alive, every))

    async def deregister(self) -> None:
        for reporter in self._reporters:
            reporter.cancel()
        await asyncio.gather(*self._reporters, return_exceptions=True)
        client = _client(self.settings)
        try:
            await client.agent.service.deregister(self.service_id)
            log.info("deregistered %s from Consul", self.service_id)
        except Exception as error:
            log.warning("could not deregister %s: %s", self.service_id, error)
        finally:
            await client.close()


def _address(entry: dict) -> str:
    """host:port of one of Consul's health entries."""
    return f"{entry['Service']['Address'] or entry['Node']['Address']}:{entry['Service']['Port']}"


def usable_addresses(entries: list[dict], known: tuple[str, ...]) -> tuple[str, ...]:
    """The addresses of the instances that take traffic, from Consul's health entries of a service.

    An instance takes traffic unless a check of it is critical: a warning (billing's outbox waiting on Kafka, say)
    is reported, not a reason to stop calling it. A check that is critical with no output has never run: a Consul
    agent that has just (re)started restores its checks as critical until each runs once. Such an instance keeps
    the state it had, so a restart of Consul does not empty the set for the seconds its checks take."""
    usable = []
    for entry in entries:
        address = _address(entry)
        critical = [check for check in entry.get("Checks", []) if check.get("Status") == "critical"]
        not_yet_run = all(not check.get("Output") for check in critical)
        if not critical or (not_yet_run and address in known):
            usable.append(address)
    return tuple(sorted(usable))


def _why_left(entries: list[dict], before: tuple[str, ...], after: tuple[str, ...]) -> str:
    """For the log: why the instances that left the set left it (Consul's word on each)."""
    reasons = []
    listed = {_address(entry): entry for entry in entries}
    for address in sorted(set(before) - set(after)):
        entry = listed.get(address)
        if entry is None:
            reasons.append(f"{address} not listed")
        else:
            checks = [
                f"{check.get('Status')} {check.get('Output', '').strip()[:80]!r}" for check in entry.get("Checks", [])
            ]
            reasons.append(f"{address}: {'; '.join(checks)}")
    return ", ".join(reasons)


#: How long an instance seen usable is still taken for known: a Consul agent that restarts may list an instance
#: without its checks, or not at all, for a moment before it lists it critical with no output.
RECENT_SECONDS = 10.0
#: How long a call waits for an instance when Consul lists none, before it fails UNAVAILABLE.
EMPTY_WAIT_SECONDS = 2.0


class Endpoints:
    """The passing instances of one service, kept current by a Consul blocking query."""

    def __init__(
        self, settings: Settings, service: str, on_change: Callable[[str, tuple[str, ...]], None] | None = None
    ) -> None:
        self.settings = settings
        self.service = service
        self.on_change = on_change
        self.addresses: tuple[str, ...] = ()
        self._turn = itertools.count()
        self._known = asyncio.Event()
        self._some = asyncio.Event()  # set while there is at least one address
        self._left: dict[str, float] = {}  # address -> when it left the usable set (monotonic)
        self._unlisted_since: float | None = None  # since when Consul lists none of the set
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name=f"watch {self.service}")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        client = _client(self.settings)
        index = None
        try:
            while True:
                try:
                    index, entries = await client.health.service(self.service, index=index, wait="30s")
                except Exception as error:
                    log.warning("watching %s in Consul failed (%s); retrying", self.service, error)
                    index = None
                    await asyncio.sleep(1)
                    continue
                if self.update(entries, time.monotonic()) and self.on_change is not None:
                    self.on_change(self.service, self.addresses)
        finally:
            await client.close()

    def update(self, entries: list[dict], now: float) -> bool:
        """Take Consul's latest health entries of the service; True when the usable set changed."""
        # Known: what is usable now, and what stopped being usable less than RECENT_SECONDS ago. (A blocking query
        # answers on changes only: an instance in the set for an hour was last reported an hour ago.)
        self._left = {address: left for address, left in self._left.items() if now - left < RECENT_SECONDS}
        addresses = usable_addresses(entries, (*self.addresses, *self._left))
        listed = {_address(entry) for entry in entries}
        if not addresses and self.addresses and not listed & set(self.addresses):
            # Consul lists none of the instances in the set, rather than listing them failing: a Consul agent that
            # has just restarted does so for a moment while it syncs its services again. The set is kept for up to
            # RECENT_SECONDS; a service whose every instance really left (or failed) empties it after that.
            self._unlisted_since = self._unlisted_since if self._unlisted_since is not None else now
            if now - self._unlisted_since < RECENT_SECONDS:
                addresses = self.addresses
        else:
            self._unlisted_since = None
        self._left.update(dict.fromkeys(set(self.addresses) - set(addresses), now))
        changed = addresses != self.addresses or not self._known.is_set()
        if changed:
            log.info("%s instances: %s", self.service, ", ".join(addresses) or "none")
            if left := _why_left(entries, self.addresses, addresses):
                log.info("%s instances left: %s", self.service, left)
        self.addresses = addresses
        self._known.set()
        (self._some.set if addresses else self._some.clear)()
        return changed

    async def next_address(self, wait: float = 5.0) -> str:
        """The next passing instance, round-robin. While Consul lists none (an agent restarting, say) it waits up
        to EMPTY_WAIT_SECONDS for one; then UNAVAILABLE."""
        try:
            await asyncio.wait_for(self._known.wait(), wait)
        except TimeoutError:
            raise Unavailable(f"{self.service}: Consul did not answer within {wait:.0f} s") from None
        if not self.addresses:
            try:
                await asyncio.wait_for(self._some.wait(), EMPTY_WAIT_SECONDS)
            except TimeoutError:
                raise Unavailable(f"{self.service}: no healthy instance is registered in Consul") from None
        addresses = self.addresses
        return addresses[next(self._turn) % len(addresses)]


class Channels:
    """One gRPC channel per address, reused across calls and closed together."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def get(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address)
        return self._channels[address]

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels.values()))
        self._channels.clear()
