"""The live totals the analytics service holds: the latest windows and every customer's running total, read from
the dataflows' output topics, and the watchers that each change is sent to. Pure: no Kafka, no gRPC."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from shopmesh.analytics.v1 import analytics_service_pb2 as pb

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Windows kept: an hour of 5-second windows.
MAX_WINDOWS = 720
DEFAULT_WINDOWS = 60
#: Changes a watcher may fall behind by before it is let go (it can watch again, from the current state).
WATCHER_BACKLOG = 10_000


class SlowWatcher(Exception):
    """The watcher did not keep up with the changes."""


@dataclass(eq=False)  # each watcher is itself: kept in a set by identity
class Watcher:
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(WATCHER_BACKLOG))
    overflowed: bool = False

    def offer(self, change) -> None:
        try:
            self.queue.put_nowait(change)
        except asyncio.QueueFull:
            self.overflowed = True

    async def next(self):
        if self.overflowed:
            raise SlowWatcher(f"fell more than {WATCHER_BACKLOG} changes behind")
        return await self.queue.get()


@dataclass
class Totals:
    windows: OrderedDict[str, pb.WindowTotal] = field(default_factory=OrderedDict)
    customers: dict[str, pb.CustomerTotal] = field(default_factory=dict)
    window_watchers: set[Watcher] = field(default_factory=set)
    customer_watchers: set[Watcher] = field(default_factory=set)

    def add_window(self, raw: bytes) -> None:
        """A record of FACTURATION_TOTAL_5S; one that is not such a record is logged and skipped."""
        window = _record(
            raw,
            "window total",
            lambda r: pb.WindowTotal(
                window_start=r["window_start"], window_end=r["window_end"], total=r["total"], count=r["count"]
            ),
        )
        if window is None:
            return
        self.windows[window.window_start] = window
        self.windows.move_to_end(window.window_start)
        if len(self.windows) > MAX_WINDOWS:  # windows arrive in order, nearly: the oldest go first
            for start in sorted(self.windows)[: len(self.windows) - MAX_WINDOWS]:
                del self.windows[start]
        for watcher in self.window_watchers:
            watcher.offer(window)

    def add_customer(self, raw: bytes) -> None:
        """A record of FACTURATION_TOTAL_BY_CUSTOMER: the customer's latest total."""
        total = _record(
            raw,
            "customer total",
            lambda r: pb.CustomerTotal(
                customer_name=r["customer_name"], total=r["total"], count=r["count"], updated_at=r["updated_at"]
            ),
        )
        if total is None:
            return
        self.customers[total.customer_name] = total
        for watcher in self.customer_watchers:
            watcher.offer(total)

    def latest_windows(self, limit: int) -> list[pb.WindowTotal]:
        starts = sorted(self.windows)[-(limit or DEFAULT_WINDOWS) :]
        return [self.windows[start] for start in starts]

    def all_customers(self) -> list[pb.CustomerTotal]:
        return [self.customers[name] for name in sorted(self.customers)]


def _record(raw: bytes, kind: str, build: Callable[[dict], T]) -> T | None:
    """The message build makes of a JSON record, or None (logged) when the record is not one."""
    try:
        return build(json.loads(raw))
    except (ValueError, KeyError, TypeError) as error:
        log.warning("skipped a record that is not a %s (%s): %.200r", kind, error, raw)
        return None
