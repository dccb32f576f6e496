"""Load that runs beside a fault: requests in a background thread, counted by outcome."""

from __future__ import annotations

import threading
import time

import httpx

from tests.auth import Bearer


class GetLoop:
    """GETs of one customer through Envoy in a background thread, counting the answers by status."""

    def __init__(self, mesh, customer_id: str, tokens, limit: int = 100_000) -> None:
        self.url = f"{mesh.gateway_url}/v1/customers/{customer_id}"
        self.auth = Bearer(tokens)
        self.limit = limit
        self.statuses: list[int] = []
        self.failures: list[str] = []  # the first few answers other than 200, as "status body"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

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

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def wait_done(self, seconds: float) -> None:
        self._thread.join(timeout=seconds)
