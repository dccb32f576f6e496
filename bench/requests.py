"""The request path, measured with outside tools: ghz for native gRPC, vegeta for REST through Envoy.

Run against a running mesh (`make up`):  .venv/bin/python -m bench.requests [--seconds 10] [--connections 16]
[--rate 500] [--paths GetCustomer,ListCustomers,GetBill,CreateBill] [--database-url URL]

For each path it prints, through Envoy (REST/JSON, JWT, RBAC, transcoding) and straight to the service (native
gRPC, the service's own token check): a closed loop of N connections, and an open loop at a constant rate; each
with requests/s, p50, p99, the errors, and the throughput or p99 relative to the direct gRPC call. ghz and vegeta
are built from the Go module proxy into the per-user cache on first use. Every request carries mesh-admin's
token, fetched once: a run must end within its 300 s lifespan. After the table, the CPU milliseconds each part of
the mesh spent per request through Envoy: where the time goes. With --database-url (a PostgreSQL server, say),
the customer reads are also measured on one customer-service process on that database.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import psutil

from services.seeds import CUSTOMERS
from shopmesh.runtime.settings import Settings, load
from shopmesh.tooling import codegen, health, install, realm
from shopmesh.tooling.instances import free_port
from shopmesh.tooling.supervise import Supervisor

#: A customer every customer database holds from its first start.
SEEDED_CUSTOMER = CUSTOMERS[0][0]


@dataclass(frozen=True)
class Operation:
    """One operation, as REST through the gateway and as the gRPC call straight to its service."""

    name: str
    method: str
    url: str
    body: dict | None
    rpc: str
    port: int
    message: dict


@dataclass(frozen=True)
class Figures:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int


class CpuMeter:
    """CPU seconds each part of the mesh (and the load tool's own children) spent between start() and stop():
    where a request's time goes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._before: dict[str, float] = {}

    def _processes(self) -> dict[str, list[psutil.Process]]:
        parts: dict[str, list[psutil.Process]] = {}
        for name, info in Supervisor(self.settings).info().items():
            if info.get("pid"):
                try:
                    process = psutil.Process(info["pid"])
                    # Several instances of a service are counted as the service.
                    part = name.rsplit("-", 1)[0] if name.rsplit("-", 1)[-1].isdigit() else name
                    parts.setdefault(part, []).extend([process, *process.children(recursive=True)])
                except psutil.NoSuchProcess:
                    continue
        return parts

    def _cpu(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for part, processes in self._processes().items():
            for process in processes:
                try:
                    times = process.cpu_times()
                    totals[part] = totals.get(part, 0.0) + times.user + times.system
                except psutil.NoSuchProcess:
                    continue
        return totals

    def start(self) -> None:
        self._before = self._cpu()

    def stop(self) -> dict[str, float]:
        after = self._cpu()
        return {part: after[part] - self._before.get(part, after[part]) for part in after}


def _data(settings: Settings, token: str) -> tuple[str, str, str]:
    """A customer, a product with stock for every CreateBill of the run, and a bill of theirs."""
    with httpx.Client(base_url=settings.gateway_url, headers={"authorization": f"Bearer {token}"}, timeout=30) as api:
        customer = api.post(
            "/v1/customers", json={"name": "Bench Customer", "email": f"bench-{uuid.uuid4().hex[:10]}@example.com"}
        ).json()
        product = api.post(
            "/v1/products", json={"name": "Bench item", "price": "12.34", "quantity": 2_000_000_000}
        ).json()
        bill = api.post(
            "/v1/bills", json={"customerId": customer["id"], "items": [{"productId": product["id"], "quantity": 1}]}
        ).json()
    return customer["id"], product["id"], bill["id"]


def paths(settings: Settings, customer_id: str, product_id: str, bill_id: str) -> list[Operation]:
    gateway = settings.gateway_url
    bill = {"customerId": customer_id, "items": [{"productId": product_id, "quantity": 1}]}
    return [
        Operation(
            "GetCustomer",
            "GET",
            f"{gateway}/v1/customers/{customer_id}",
            None,
            "shopmesh.customer.v1.CustomerService/GetCustomer",
            settings.service_ports["customer"],
            {"id": customer_id},
        ),
        Operation(
            "ListCustomers (50)",
            "GET",
            f"{gateway}/v1/customers?pageSize=50",
            None,
            "shopmesh.customer.v1.CustomerService/ListCustomers",
            settings.service_ports["customer"],
            {"page_size": 50},
        ),
        Operation(
            "GetBill",
            "GET",
            f"{gateway}/v1/bills/{bill_id}",
            None,
            "shopmesh.billing.v1.BillingService/GetBill",
            settings.service_ports["billing"],
            {"id": bill_id},
        ),
        Operation(
            "CreateBill",
            "POST",
            f"{gateway}/v1/bills",
            bill,
            "shopmesh.billing.v1.BillingService/CreateBill",
            settings.service_ports["billing"],
            {"customer_id": customer_id, "items": [{"product_id": product_id, "quantity": 1}]},
        ),
    ]


def vegeta(binary: Path, path: Operation, token: str, seconds: int, connections: int, rate: int | None) -> Figures:
    """REST through the gateway: rate None is a closed loop of `connections` workers."""
    with tempfile.TemporaryDirectory() as scratch:
        target = {
            "method": path.method,
            "url": path.url,
            "header": {"authorization": [f"Bearer {token}"], "content-type": ["application/json"]},
        }
        if path.body is not None:
            target["body"] = base64.b64encode(json.dumps(path.body).encode()).decode()
        targets = Path(scratch) / "targets.json"
        targets.write_text(json.dumps(target) + "\n")  # one target a line
        pace = ["-rate=0", f"-max-workers={connections}"] if rate is None else [f"-rate={rate}/s"]
        attack = subprocess.run(
            [
                str(binary),
                "attack",
                "-format=json",
                f"-targets={targets}",
                f"-duration={seconds}s",
                f"-workers={connections}",
                "-keepalive=true",
                *pace,
            ],
            capture_output=True,
            check=True,
        )
        report = json.loads(
            subprocess.run(
                [str(binary), "report", "-type=json"], input=attack.stdout, capture_output=True, check=True
            ).stdout
        )
    ok = report["status_codes"].get("200", 0)
    return Figures(
        report["throughput"],
        report["latencies"]["50th"] / 1e6,
        report["latencies"]["99th"] / 1e6,
        report["requests"] - ok,
        report["requests"],
    )


def ghz(
    binary: Path, path: Operation, settings: Settings, token: str, seconds: int, connections: int, rate: int | None
) -> Figures:
    """Native gRPC straight to the service: rate None is a closed loop of `connections` workers."""
    pace = [] if rate is None else [f"--rps={rate}"]
    done = subprocess.run(
        [
            str(binary),
            "--insecure",
            f"--protoset={codegen.DESCRIPTOR_SET}",
            f"--call={path.rpc}",
            f"--data={json.dumps(path.message)}",
            f"--metadata={json.dumps({'authorization': f'Bearer {token}'})}",
            f"--concurrency={connections}",
            f"--connections={connections}",
            f"--duration={seconds}s",
            "--format=json",
            *pace,
            f"{settings.host}:{path.port}",
        ],
        capture_output=True,
        check=True,
    )
    report = json.loads(done.stdout)
    latency = {entry["percentage"]: entry["latency"] / 1e6 for entry in report.get("latencyDistribution") or []}
    # ghz closes its connections when the duration ends, failing the calls still in flight: not the server's errors.
    errors = sum(
        count
        for message, count in (report.get("errorDistribution") or {}).items()
        if "use of closed network connection" not in message
    )
    return Figures(report["rps"], latency.get(50, 0.0), latency.get(99, 0.0), errors, report["count"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rate", type=int, default=500, help="requests/s of the constant-rate runs")
    parser.add_argument("--paths", default="", help="comma-separated names, e.g. GetCustomer,CreateBill")
    parser.add_argument(
        "--database-url",
        default="",
        help="also measure the customer reads straight on a customer-service process that the bench "
        "starts on this SQLAlchemy URL, e.g. postgresql+psycopg://shopmesh@127.0.0.1:5432/shop",
    )
    args = parser.parse_args()
    settings = load()
    tools = {
        name: install.ensure(tool, settings.cache_dir) / "bin" / name for name, tool in install.BENCH_TOOLS.items()
    }
    token = realm.token(settings, "mesh-admin")["access_token"]
    meter = CpuMeter(settings)
    costs: list[tuple[str, int, dict[str, float]]] = []
    chosen = [name.strip() for name in args.paths.split(",") if name.strip()]
    measured = [
        path for path in paths(settings, *_data(settings, token)) if not chosen or path.name.split(" ")[0] in chosen
    ]

    print(
        f"{'path':<20} {'route':<16} {'load':<18} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs gRPC':>8}"
    )
    for path in measured:
        for rate in (None, args.rate):
            load_name = f"{args.connections} connections" if rate is None else f"{rate}/s constant"
            direct = ghz(tools["ghz"], path, settings, token, args.seconds, args.connections, rate)
            meter.start()
            gateway = vegeta(tools["vegeta"], path, token, args.seconds, args.connections, rate)
            if rate is None:
                costs.append((path.name, gateway.requests, meter.stop()))
            for route, figures in (("REST via Envoy", gateway), ("gRPC direct", direct)):
                # Closed loop: throughput relative to the direct call; constant rate: p99 relative to it.
                ratio = (
                    (figures.rate / direct.rate if rate is None else figures.p99_ms / direct.p99_ms)
                    if direct.rate and direct.p99_ms
                    else 0.0
                )
                print(
                    f"{path.name:<20} {route:<16} {load_name:<18} {figures.rate:>8.0f} {figures.p50_ms:>8.1f} "
                    f"{figures.p99_ms:>8.1f} {figures.errors:>7} {ratio:>7.2f}x",
                    flush=True,
                )
    _print_costs(costs)
    if args.database_url:
        _on_database(args, settings, tools["ghz"], token)


def _on_database(args, settings: Settings, binary: Path, token: str) -> None:
    """GetCustomer and ListCustomers on a customer-service process of the given database (seeded on start)."""
    port = free_port(settings.host)
    env = {
        **os.environ,
        "SHOPMESH_INSTANCE_PORT": str(port),
        "SHOPMESH_DATABASE_URLS__CUSTOMER": args.database_url,
        "SHOPMESH_SERVICE_PROCESSES": "1",
    }
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.customer"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while health.grpc_serving(settings, port):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise SystemExit(f"customer-service on {args.database_url} did not start:\n{log.read().decode()}")
                time.sleep(0.2)
            dialect = args.database_url.split(":", 1)[0].split("+", 1)[0]
            print(f"\ncustomer-service, one process, on {dialect}: gRPC direct")
            for path in paths(settings, SEEDED_CUSTOMER, "", "")[:2]:
                for rate in (None, args.rate):
                    figures = ghz(
                        binary, replace(path, port=port), settings, token, args.seconds, args.connections, rate
                    )
                    load_name = f"{args.connections} connections" if rate is None else f"{rate}/s constant"
                    print(
                        f"{path.name:<20} {dialect:<16} {load_name:<18} {figures.rate:>8.0f} "
                        f"{figures.p50_ms:>8.1f} {figures.p99_ms:>8.1f} {figures.errors:>7}",
                        flush=True,
                    )
        finally:
            process.terminate()
            process.wait(timeout=30)


def _print_costs(costs: list[tuple[str, int, dict[str, float]]]) -> None:
    """CPU milliseconds per request of each part, over the closed-loop runs through Envoy."""
    parts = sorted({part for _, _, cpu in costs for part, seconds in cpu.items() if seconds > 0.05})
    if not parts:
        return
    print("\nCPU ms per request through Envoy (closed loop; the load tool not counted)")
    print(f"{'path':<20} " + " ".join(f"{part.removesuffix('-service')[:12]:>12}" for part in parts) + f" {'total':>8}")
    for name, requests, cpu in costs:
        cells = [1000 * cpu.get(part, 0.0) / max(requests, 1) for part in parts]
        print(f"{name:<20} " + " ".join(f"{cell:>12.2f}" for cell in cells) + f" {sum(cells):>8.2f}")


if __name__ == "__main__":
    main()
