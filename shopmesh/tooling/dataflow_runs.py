"""Running a dataflow on topics of its own beside the mesh's, as the tests and the stream bench do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kafka.admin import KafkaAdminClient, NewTopic

from shopmesh.runtime.settings import Settings


@dataclass(frozen=True)
class Topics:
    input: str
    total_5s: str
    by_customer: str
    dlq: str

    @classmethod
    def unique(cls) -> Topics:
        tag = uuid.uuid4().hex[:8]
        return cls(f"test-{tag}-in", f"test-{tag}-5s", f"test-{tag}-by-customer", f"test-{tag}-dlq")

    def env(self) -> dict[str, str]:
        return {
            "SHOPMESH_FACTURATION_TOPIC": self.input,
            "SHOPMESH_TOTAL_5S_TOPIC": self.total_5s,
            "SHOPMESH_TOTAL_BY_CUSTOMER_TOPIC": self.by_customer,
            "SHOPMESH_DLQ_TOPIC": self.dlq,
        }


@contextmanager
def own_topics(settings: Settings) -> Iterator[Topics]:
    """Topics of a test's own, FACTURATION's partitions on the input; deleted afterwards."""
    made = Topics.unique()
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    names = [made.input, made.total_5s, made.by_customer, made.dlq]
    admin.create_topics(
        [NewTopic(name, num_partitions=3 if name == made.input else 1, replication_factor=1) for name in names]
    )
    try:
        yield made
    finally:
        admin.delete_topics(names)
        admin.close()


class RunningDataflow:
    """`python -m dataflows NAME`, as the mesh runs it, on the test's topics and with its own recovery store."""

    def __init__(self, name: str, topics: Topics, var_dir: Path, **settings: str) -> None:
        self.name, self.var_dir = name, var_dir
        self.env = {
            **os.environ,
            **topics.env(),
            "SHOPMESH_VAR_DIR": str(var_dir),
            "RUST_BACKTRACE": "0",
            **{f"SHOPMESH_ANALYTICS_{key.upper()}": value for key, value in settings.items()},
        }
        self.process: subprocess.Popen | None = None

    def start(self) -> RunningDataflow:
        log = (self.var_dir / f"{self.name}.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dataflows", self.name], env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    @property
    def running(self) -> subprocess.Popen:
        if self.process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.process

    def kill(self) -> None:
        self.running.send_signal(signal.SIGKILL)
        self.running.wait(10)

    def stop(self) -> int:
        self.running.send_signal(signal.SIGTERM)
        return self.running.wait(30)

    def log(self) -> str:
        return (self.var_dir / f"{self.name}.log").read_text(errors="replace")


@contextmanager
def stopped_at_the_end() -> Iterator[list[RunningDataflow]]:
    started: list[RunningDataflow] = []
    try:
        yield started
    finally:
        for dataflow in started:
            if dataflow.process is not None and dataflow.process.poll() is None:
                dataflow.stop()
