"""GET one customer: REST through Envoy, native gRPC through Envoy, and gRPC straight to the service.

Run against a running mesh (`make up`):  .venv/bin/python -m bench.gateway [--seconds 10] [--clients 4]
Prints requests/s and p50/p99 latency for each path, and each one's cost relative to the direct call. Every
request carries user1's token (checked by Envoy and by the service); the token is fetched once, so a run
must end within its 300 s lifespan.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable

import grpc
import httpx

from shopmesh.customer.v1 import customer_service_pb2 as pb
from shopmesh.customer.v1 import customer_service_pb2_grpc as pb_grpc
from shopmesh.runtime.settings import load
from shopmesh.tooling import realm


def measure(make_call: Callable[[], Callable[[], object]], seconds: float, clients: int) -> tuple[float, list[float]]:
    """Run `clients` closed loops for `seconds`; return requests/s and every latency in ms."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + seconds

    def loop(mine: list[float]) -> None:
        call = make_call()
        while (started := time.perf_counter()) < stop:
            call()
            mine.append((time.perf_counter() - started) * 1000)

    threads = [threading.Thread(target=loop, args=(mine,)) for mine in latencies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [latency for mine in latencies for latency in mine]
    return len(everything) / seconds, everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    settings = load()
    bearer = (("authorization", f"Bearer {realm.token(settings, 'user1')['access_token']}"),)
    direct = f"{settings.host}:{settings.service_ports['customer']}"
    gateway = f"{settings.host}:{settings.gateway_port}"
    with grpc.insecure_channel(direct) as channel:
        customer_id = (
            pb_grpc.CustomerServiceStub(channel)
            .ListCustomers(pb.ListCustomersRequest(page_size=1), metadata=bearer)
            .customers[0]
            .id
        )

    def rest() -> Callable[[], object]:
        client = httpx.Client(base_url=settings.gateway_url, headers=dict(bearer))
        return lambda: client.get(f"/v1/customers/{customer_id}").raise_for_status()

    def grpc_to(address: str) -> Callable[[], Callable[[], object]]:
        def make() -> Callable[[], object]:
            stub = pb_grpc.CustomerServiceStub(grpc.insecure_channel(address))
            return lambda: stub.GetCustomer(pb.GetCustomerRequest(id=customer_id), timeout=5, metadata=bearer)

        return make

    paths = [
        ("gRPC direct to customer-service", grpc_to(direct)),
        ("gRPC through Envoy", grpc_to(gateway)),
        ("REST/JSON through Envoy", rest),
    ]
    print(f"GET /v1/customers/{{id}} — {args.clients} clients, {args.seconds:.0f} s each, on {settings.host}")
    print(f"{'path':<34}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p50 vs direct':>15}")
    baseline = None
    for name, make_call in paths:
        measure(make_call, 1, args.clients)  # warm up connections and caches
        rate, latencies = measure(make_call, args.seconds, args.clients)
        cuts = statistics.quantiles(latencies, n=100)
        p50, p99 = cuts[49], cuts[98]
        baseline = baseline or p50
        print(f"{name:<34}{rate:>9.0f}{p50:>9.2f}{p99:>9.2f}{p50 / baseline:>14.2f}x")


if __name__ == "__main__":
    main()
