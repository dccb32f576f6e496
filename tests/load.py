"""Load that runs beside a fault: requests in a background thread, counted by outcome."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager

import httpx

from tests.auth import Bearer


class Stock:
    """A fresh customer and a product with `units` in stock, made through the gateway; whether the stock taken
    equals the quantities billed."""

    def __init__(self, admin: httpx.Client, units: int, name: str) -> None:
        self.admin, self.units = admin, units
        self.customer = admin.post(
            "/v1/customers", json={"name": name, "email": f"{uuid.uuid4().hex[:12]}@example.com"}
        ).json()
        self.product = admin.post(
            "/v1/products", json={"name": f"{name.lower()} {uuid.uuid4().hex[:6]}", "price": "1.25", "quantity": units}
        ).json()

    def taken(self) -> int:
        return self.units - self.admin.get(f"/v1/products/{self.product['id']}").json()["quantity"]

    def billed(self) -> int:
        bills, token = [], ""
        while True:
            page = self.admin.get(
                "/v1/bills", params={"customerId": self.customer["id"], "pageSize": 1000, "pageToken": token}
            ).json()
            bills += page["bills"]
            if not (token := page["nextPageToken"]):
                return sum(item["quantity"] for bill in bills for item in bill["items"])

    def reconciled(self) -> bool:
        return self.taken() == self.billed()


class BackgroundLoop:
    """Requests made one after another in a background thread while a test injects a fault: a context manager
    that starts the loop, and stops and joins it on the way out."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def wait_done(self, seconds: float) -> None:
        self._thread.join(timeout=seconds)


class GetLoop(BackgroundLoop):
    """GETs of one customer through Envoy in a background thread, counting the answers by status."""

    def __init__(self, mesh, customer_id: str, tokens, limit: int = 100_000) -> None:
        super().__init__()
        self.url = f"{mesh.gateway_url}/v1/customers/{customer_id}"
        self.auth = Bearer(tokens)
        self.limit = limit
        self.statuses: list[int] = []
        self.failures: list[str] = []  # the first few answers other than 200, as "status body"

    def _run(self) -> None:
        with httpx.Client(timeout=15, auth=self.auth) as client:
            while not self._stop.is_set() and len(self.statuses) < self.limit:
                try:
                    answer = client.get(self.url)
                    self.statuses.append(answer.status_code)
                    if answer.status_code != 200 and len(self.failures) < 10:
                        self.failures.append(f"{answer.status_code} {answer.text[:300]}")
                except httpx.HTTPError as error:
                    self.statuses.append(0)
                    if len(self.failures) < 10:
                        self.failures.append(f"0 {error!r}")
                time.sleep(0.01)


class BillLoop(BackgroundLoop):
    """Bills of one unit, one after the other through the gateway in a background thread, recorded by outcome.

    between() holds the loop between two bills, and for a second after: a process killed then has no bill of this
    loop in flight. A bill whose instance dies under it, or that goes out on a connection in the instant between
    the process's death and the gateway reading the connection's close, cannot be told stored or not by its
    caller, and the gateway retries no write it has sent: CreateBill has no idempotency key (README)."""

    def __init__(self, mesh, tokens, stock: Stock, pause: float = 0.1) -> None:
        super().__init__()
        self.client = httpx.Client(base_url=mesh.gateway_url, timeout=30, auth=Bearer(tokens, "billing-manager"))
        self.stock, self.pause = stock, pause
        self.ids: list[str] = []
        self.statuses: list[int] = []
        self.failures: list[str] = []
        self._turn = threading.Lock()

    def _run(self) -> None:
        body = {
            "customerId": self.stock.customer["id"],
            "items": [{"productId": self.stock.product["id"], "quantity": 1}],
        }
        while not self._stop.is_set():
            with self._turn:
                try:
                    answer = self.client.post("/v1/bills", json=body)
                    status = answer.status_code
                    if status == 200:
                        self.ids.append(answer.json()["id"])
                    elif len(self.failures) < 10:
                        self.failures.append(f"{status} {answer.text[:300]}")
                except httpx.HTTPError as error:
                    status = 0
                    self.failures.append(f"0 {error!r}")
                self.statuses.append(status)
            time.sleep(self.pause)

    @contextmanager
    def between(self, settle: float = 1.0):
        with self._turn:
            yield
            time.sleep(settle)

    def outcomes(self) -> Counter:
        return Counter(self.statuses)

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        self.client.close()
