"""AnalyticsService: the current totals and their changes, from the dataflows' output topics. Each instance reads
both topics from their beginning into memory (a Kafka consumer in a thread of its own, handing each record to the
event loop), so any instance answers alike, and a restarted one reads its way back to the present."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable

import grpc
from kafka.errors import KafkaError

from kafka import KafkaConsumer, TopicPartition
from services.analytics.totals import MAX_WINDOWS, SlowWatcher, Totals, Watcher
from shopmesh.analytics.v1 import analytics_service_pb2 as pb
from shopmesh.analytics.v1 import analytics_service_pb2_grpc as pb_grpc
from shopmesh.runtime import catalogue
from shopmesh.runtime.discovery import StatusCheck
from shopmesh.runtime.errors import InvalidArgument
from shopmesh.runtime.server import Service
from shopmesh.runtime.settings import Settings

log = logging.getLogger(__name__)


def _limit(requested: int) -> int:
    if not 0 <= requested <= MAX_WINDOWS:
        raise InvalidArgument("limit", f"must be from 0 to {MAX_WINDOWS}, got {requested}")
    return requested


class AnalyticsService(pb_grpc.AnalyticsServiceServicer):
    def __init__(self, totals: Totals) -> None:
        self.totals = totals

    async def ListWindowTotals(self, request: pb.ListWindowTotalsRequest, context) -> pb.ListWindowTotalsResponse:
        return pb.ListWindowTotalsResponse(windows=self.totals.latest_windows(_limit(request.limit)))

    async def ListCustomerTotals(self, request, context) -> pb.ListCustomerTotalsResponse:
        return pb.ListCustomerTotalsResponse(customers=self.totals.all_customers())

    async def WatchWindowTotals(self, request: pb.WatchWindowTotalsRequest, context) -> AsyncIterator[pb.WindowTotal]:
        try:
            limit = _limit(request.limit)
        except InvalidArgument as error:
            await context.abort(error.code, error.message)
        async for window in self._watch(self.totals.window_watchers, self.totals.latest_windows(limit), context):
            yield window

    async def WatchCustomerTotals(self, request, context) -> AsyncIterator[pb.CustomerTotal]:
        async for total in self._watch(self.totals.customer_watchers, self.totals.all_customers(), context):
            yield total

    async def _watch(self, watchers: set[Watcher], current: list, context) -> AsyncIterator:
        watcher = Watcher()
        watchers.add(watcher)  # before the current state is sent: no change falls between the two
        try:
            for item in current:
                yield item
            while True:
                try:
                    yield await watcher.next()
                except SlowWatcher as slow:
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"the watch {slow}; watch again")
        finally:
            watchers.discard(watcher)


class TopicReader:
    """Reads the output topics from their beginning, then as records come, in a thread; hands each record to
    the event loop. Survives Kafka's absence: it waits for the topics and reconnects."""

    def __init__(
        self, settings: Settings, handlers: dict[str, Callable[[bytes], None]], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.settings, self.handlers, self.loop = settings, handlers, loop
        self.stopping = threading.Event()
        self.caught_up = False
        self.thread = threading.Thread(target=self._run, name="topic-reader", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._read()
            except KafkaError as error:
                log.warning("reading the totals from Kafka: %s; trying again", error)
                self.stopping.wait(2)

    def _read(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap, enable_auto_commit=False, request_timeout_ms=30_000
        )
        try:
            partitions = []
            for topic in self.handlers:
                while not (found := consumer.partitions_for_topic(topic)) and not self.stopping.is_set():
                    log.info("waiting for topic %s", topic)
                    self.stopping.wait(2)
                partitions += [TopicPartition(topic, number) for number in sorted(found or ())]
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            ends = consumer.end_offsets(partitions)
            log.info("reading %s from their beginning", ", ".join(self.handlers))
            while not self.stopping.is_set():
                for part, records in consumer.poll(timeout_ms=500).items():
                    handle = self.handlers[part.topic]
                    for record in records:
                        self.loop.call_soon_threadsafe(handle, record.value or b"")
                if not self.caught_up and all(consumer.position(p) >= ends[p] for p in partitions):
                    self.caught_up = True
                    log.info("caught up with %s", ", ".join(self.handlers))
        finally:
            consumer.close()


async def attach(server: grpc.aio.Server, settings: Settings, status_checks: list[StatusCheck]):
    totals = Totals()
    reader = TopicReader(
        settings,
        {settings.total_5s_topic: totals.add_window, settings.total_by_customer_topic: totals.add_customer},
        asyncio.get_running_loop(),
    )
    reader.start()
    pb_grpc.add_AnalyticsServiceServicer_to_server(AnalyticsService(totals), server)

    async def close() -> None:
        await asyncio.to_thread(reader.stop)

    return close


SERVICE = Service.of(catalogue.part("analytics"), attach)
