"""Tumbling windows whose event clock is never forgotten.

Bytewax drops a key's window state, its event clock included, once no window is open. Our windows have one key,
so after a quiet spell the next invoice would start a fresh clock, and an invoice for a window already closed
and published would open it again and publish a second, partial total for it. Keeping the state, however
empty, keeps the watermark: such an invoice is late, as it should be. It costs one small state for one key."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bytewax.operators.windowing import TumblingWindower, WindowerLogic, WindowMetadata, Windower


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
