"""The windows' sense of time: tumbling windows whose event clock is never forgotten, and an event clock that
keeps a watermark per input partition.

KeptTumblingWindower: Bytewax drops a key's window state, its event clock included, once no window is open. Our
windows have one key, so after a quiet spell the next invoice would start a fresh clock, and an invoice for a
window already closed and published would open it again and publish a second, partial total for it. Keeping the
state, however empty, keeps the watermark: such an invoice is late, as it should be. It costs one small state
for one key.

PartitionedEventClock: see its docstring."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bytewax.operators.windowing import (
    UTC_MAX,
    UTC_MIN,
    Clock,
    ClockLogic,
    TumblingWindower,
    Windower,
    WindowerLogic,
    WindowMetadata,
)


@dataclass
class _Kept(WindowerLogic):
    tumbling: WindowerLogic

    def open_for(self, timestamp: datetime) -> Iterable[int]:
        return self.tumbling.open_for(timestamp)

    def late_for(self, timestamp: datetime) -> Iterable[int]:
        return self.tumbling.late_for(timestamp)

    def merged(self) -> Iterable[tuple[int, int]]:
        return self.tumbling.merged()

    def close_for(self, watermark: datetime) -> Iterable[tuple[int, WindowMetadata]]:
        return self.tumbling.close_for(watermark)

    def notify_at(self) -> datetime | None:
        return self.tumbling.notify_at()

    def is_empty(self) -> bool:
        return False  # the point of this class: see the module's docstring

    def snapshot(self):
        return self.tumbling.snapshot()


@dataclass
class KeptTumblingWindower(Windower):
    """TumblingWindower(length, align_to), with the key's state (and so its watermark) kept while idle."""

    length: timedelta
    align_to: datetime

    def build(self, resume_state) -> WindowerLogic:
        return _Kept(TumblingWindower(self.length, self.align_to).build(resume_state))


@dataclass
class _PartitionTime:
    """The latest event time seen on one input partition, and the system time it was seen at."""

    max_event: datetime
    seen_at: datetime


@dataclass
class _PartitionedState:
    partitions: dict[int, _PartitionTime]
    watermark: datetime
    #: When the clock first ran, and the earliest event time seen: where a partition not seen yet is taken to be.
    started: datetime
    earliest: datetime | None = None


@dataclass
class _PartitionedClockLogic(ClockLogic):
    timestamp_of: Callable[[Any], datetime]
    partition_of: Callable[[Any], int]
    partitions: int
    wait: timedelta
    to_system: Callable[[datetime], datetime | None]
    now: Callable[[], datetime]
    state: _PartitionedState
    _system_now: datetime = field(init=False)

    def __post_init__(self) -> None:
        self._system_now = self.now()

    def before_batch(self) -> None:
        self._system_now = max(self._system_now, self.now())  # the system clock may step back; time does not

    def _watermark(self) -> datetime:
        """The event time every partition has reached, less the wait: each partition's latest event time, moved on
        by the system time since it was seen (so an idle partition does not hold the others back), the least of
        them, and never less than before."""
        reached_by = [part.max_event + (self._system_now - part.seen_at) for part in self.state.partitions.values()]
        if self.state.earliest is not None and any(p not in self.state.partitions for p in range(self.partitions)):
            # A partition not read yet (its first batch is still to come) is where the earliest invoice was when the
            # clock started, moved on by the system time since: it holds the windows back, but not for ever.
            reached_by.append(self.state.earliest + (self._system_now - self.state.started))
        if reached_by:
            reached = min(reached_by)
            try:
                self.state.watermark = max(self.state.watermark, reached - self.wait)
            except OverflowError:
                pass  # before year 1 plus the wait: the watermark stays where it was
        return self.state.watermark

    def on_item(self, value) -> tuple[datetime, datetime]:
        timestamp = self.timestamp_of(value)
        partition = self.partition_of(value)
        if self.state.earliest is None or timestamp < self.state.earliest:
            self.state.earliest = timestamp
        known = self.state.partitions.get(partition)
        if known is None or timestamp > known.max_event + (self._system_now - known.seen_at):
            self.state.partitions[partition] = _PartitionTime(timestamp, self._system_now)
        return timestamp, self._watermark()

    def on_notify(self) -> datetime:
        self.before_batch()
        return self._watermark()

    def on_eof(self) -> datetime:
        return UTC_MAX

    def to_system_utc(self, timestamp: datetime) -> datetime | None:
        return self.to_system(timestamp)

    def snapshot(self) -> _PartitionedState:
        return copy.deepcopy(self.state)


@dataclass
class PartitionedEventClock(Clock):
    """An event clock with a watermark per input partition, as stream processors such as Flink keep them.

    Bytewax's EventClock keeps one watermark: the latest event time seen, less the wait. Catching up a backlog,
    Kafka's partitions are read a batch at a time, so one partition runs far ahead in event time while the others
    are still being read, and their invoices arrive late for windows already closed. Here a window closes on the
    event time that every partition has reached: the least of the partitions' latest event times (each moved on
    by the system time since, so an idle partition holds nothing back), less the wait."""

    timestamp_of: Callable[[Any], datetime]
    partition_of: Callable[[Any], int]
    #: How many partitions the input has (0: not known, then only the partitions seen count).
    partitions: int
    wait_for_system_duration: timedelta
    to_system_utc: Callable[[datetime], datetime | None] = lambda moment: moment
    now: Callable[[], datetime] = lambda: datetime.now(UTC)

    def build(self, resume_state) -> ClockLogic:
        if isinstance(resume_state, _PartitionedState):
            state = resume_state
        else:
            # None on a first start; a snapshot of Bytewax's EventClock (made before this clock existed) keeps its
            # watermark, so that the windows it closed stay closed.
            watermark = getattr(resume_state, "watermark_base", UTC_MIN)
            state = _PartitionedState({}, watermark, self.now())
        return _PartitionedClockLogic(
            self.timestamp_of,
            self.partition_of,
            self.partitions,
            self.wait_for_system_duration,
            self.to_system_utc,
            self.now,
            state,
        )
