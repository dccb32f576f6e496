"""The per-partition event clock of totals_5s: windows close on the event time every partition has reached."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dataflows.windowing import PartitionedEventClock

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
WAIT = timedelta(seconds=5)


@dataclass
class Item:
    partition: int
    at: datetime


class SystemClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 13, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _logic(system: SystemClock, resume=None, partitions: int = 3):
    clock = PartitionedEventClock(lambda item: item.at, lambda item: item.partition, partitions, WAIT, now=system)
    return clock.build(resume)


def test_a_partition_far_ahead_does_not_make_the_others_late():
    system = SystemClock()
    logic = _logic(system)
    logic.before_batch()
    for partition in (0, 1, 2):
        logic.on_item(Item(partition, T0))
    # A batch of partition 0 runs a minute ahead in event time, in the same instant of system time.
    _, watermark = logic.on_item(Item(0, T0 + timedelta(seconds=60)))
    assert watermark == T0 - WAIT  # partitions 1 and 2 are still at T0
    # Their next invoices, 10 s of event time on, are not late.
    timestamp, watermark = logic.on_item(Item(1, T0 + timedelta(seconds=10)))
    assert timestamp >= watermark


def test_the_watermark_is_the_least_partition_time_less_the_wait_and_never_goes_back():
    system = SystemClock()
    logic = _logic(system)
    logic.before_batch()
    logic.on_item(Item(0, T0 + timedelta(seconds=20)))
    logic.on_item(Item(1, T0 + timedelta(seconds=30)))
    _, watermark = logic.on_item(Item(2, T0 + timedelta(seconds=25)))
    assert watermark == T0 + timedelta(seconds=20) - WAIT
    _, later = logic.on_item(Item(0, T0 + timedelta(seconds=40)))
    assert later == T0 + timedelta(seconds=25) - WAIT
    # A partition seen for the first time with older invoices does not take the watermark back.
    _, after_new = logic.on_item(Item(3, T0))
    assert after_new == later


def test_an_idle_partition_holds_nothing_back_as_system_time_passes():
    system = SystemClock()
    logic = _logic(system)
    logic.before_batch()
    logic.on_item(Item(0, T0))
    logic.on_item(Item(1, T0))
    logic.on_item(Item(2, T0))
    system.now += timedelta(seconds=8)  # partition 1 goes quiet; partition 0 carries on in real time
    logic.before_batch()
    _, watermark = logic.on_item(Item(0, T0 + timedelta(seconds=8)))
    assert watermark == T0 + timedelta(seconds=8) - WAIT
    assert logic.on_notify() == T0 + timedelta(seconds=8) - WAIT


def test_the_clock_resumes_from_its_snapshot():
    system = SystemClock()
    logic = _logic(system)
    logic.before_batch()
    logic.on_item(Item(0, T0 + timedelta(seconds=20)))
    logic.on_item(Item(1, T0 + timedelta(seconds=30)))
    assert logic.on_notify() == T0 + timedelta(seconds=15)
    resumed = _logic(system, logic.snapshot(), partitions=2)
    resumed.before_batch()
    assert resumed.on_notify() == T0 + timedelta(seconds=15)


def test_a_first_batch_of_one_partition_closes_no_window_before_the_others_are_read():
    system = SystemClock()
    logic = _logic(system)
    logic.before_batch()
    for second in range(61):
        _, watermark = logic.on_item(Item(0, T0 + timedelta(seconds=second)))
    assert watermark == T0 - WAIT  # partitions 1 and 2 may still hold invoices from T0 on
    system.now += timedelta(seconds=8)  # ... unless they stay empty: then system time moves the windows on
    logic.before_batch()
    assert logic.on_notify() == T0 + timedelta(seconds=8) - WAIT


def test_a_snapshot_of_bytewaxs_event_clock_resumes_with_its_watermark():
    from bytewax.operators.windowing import EventClock

    system = SystemClock()
    old = EventClock(lambda item: item.at, WAIT, now_getter=system).build(None)
    old.before_batch()
    old.on_item(Item(0, T0 + timedelta(seconds=30)))
    resumed = _logic(system, old.snapshot())
    resumed.before_batch()
    assert resumed.on_notify() == T0 + timedelta(seconds=25)
