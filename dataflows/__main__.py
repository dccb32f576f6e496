"""Run a dataflow as the mesh runs it: `python -m dataflows totals_5s`.

What this adds to `python -m bytewax.run "dataflows.totals_5s:flow()"`: a registration in Consul with a TTL
check that passes while the dataflow runs, and a Bytewax recovery store under var/recovery/, created on first
start, from which a restarted dataflow resumes."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import threading
import time
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from bytewax.errors import BytewaxRuntimeError
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.run import cli_main
from prometheus_client import Gauge

from dataflows import CONSUL_NAMES, service_id, totals_5s, totals_by_customer
from shopmesh.runtime import metrics
from shopmesh.runtime.discovery import Registration
from shopmesh.runtime.settings import Settings, load

log = logging.getLogger("dataflows")

SNAPSHOT_AGE = Gauge(
    "shopmesh_dataflow_last_snapshot_age_seconds",
    "Time since the dataflow last wrote its recovery store (a snapshot every analytics_snapshot_seconds).",
    ("dataflow",),
)


def _snapshot_age(store: Path) -> float:
    written = [path.stat().st_mtime for path in store.iterdir() if path.is_file()]
    return time.time() - max(written) if written else float("nan")


class Name(StrEnum):
    totals_5s = "totals_5s"
    totals_by_customer = "totals_by_customer"


FLOWS = {Name.totals_5s.value: totals_5s.flow, Name.totals_by_customer.value: totals_by_customer.flow}


def recovery_store(name: Name, settings: Settings, partitions: int = 1) -> Path:
    """The dataflow's recovery store, made on first start with one partition per process of its Bytewax cluster:
    every process reads and writes the same store (on one machine, or a shared file system)."""
    store = settings.recovery_dir / name.value
    if not store.exists():
        # Made aside and renamed: a crash halfway leaves no store that looks ready, and of two processes making it
        # at once, one's rename wins and the other's copy is dropped.
        staging = store.with_name(f"{store.name}.new-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        init_db_dir(staging, partitions)
        try:
            staging.rename(store)
            log.info("created the recovery store %s with %d partition(s)", store, partitions)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return store


def _heartbeat(registration: Registration) -> None:
    async def beat() -> None:
        await registration.register()
        await registration.keep_passing(3)

    threading.Thread(target=asyncio.run, args=(beat(),), name="consul-ttl", daemon=True).start()


_stopping = threading.Event()


def _stop(signum, frame) -> None:
    # Bytewax stops on KeyboardInterrupt by abandoning the epoch in progress, with a BytewaxRuntimeError: the
    # next start resumes from the last snapshot. The process manager stops programs with SIGTERM.
    _stopping.set()
    raise KeyboardInterrupt


def main(
    name: Name,
    process_id: Annotated[
        int | None,
        typer.Option(help="This process's place in the dataflow's Bytewax cluster (the cluster topology's hosts)."),
    ] = None,
) -> None:
    """Run the dataflow NAME until stopped: alone, or as process PROCESS_ID of a Bytewax cluster."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load()
    addresses = settings.dataflow_addresses(list(Name).index(name))
    if process_id is not None and not 0 <= process_id < len(addresses):
        raise typer.BadParameter(
            f"there are {len(addresses)} processes of {name.value} in this topology", param_hint="--process-id"
        )
    store = recovery_store(name, settings, partitions=max(1, len(addresses)))
    SNAPSHOT_AGE.labels(name.value).set_function(lambda: _snapshot_age(store))
    announced = metrics.serve(settings.host, settings.metrics_port)
    registration = Registration(
        settings,
        CONSUL_NAMES[name.value],
        0,
        tags=("bytewax", "kafka"),
        ttl="10s",
        service_id=service_id(name.value, settings),
        meta=announced,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _stop)
    try:
        _heartbeat(registration)
        log.info(
            "%s: %s -> results, snapshots every %gs in %s",
            name.value,
            settings.facturation_topic,
            settings.analytics_snapshot_seconds,
            store,
        )
        cli_main(
            FLOWS[name.value](settings),
            process_id=process_id,
            addresses=addresses or None,
            epoch_interval=timedelta(seconds=settings.analytics_snapshot_seconds),
            recovery_config=RecoveryConfig(store),
        )
    except (KeyboardInterrupt, BytewaxRuntimeError):
        if not _stopping.is_set():
            raise
        log.info("%s stopped; it resumes from its last snapshot", name.value)
    finally:
        asyncio.run(registration.deregister())


if __name__ == "__main__":
    typer.run(main)
