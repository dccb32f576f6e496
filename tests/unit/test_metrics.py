"""The metrics and request ids of the runtime, on a real grpc.aio server in this process: each call moves the
counters with its method and status code, database time is measured per call, the request id reaches the log
lines of the call, and dead letters are counted by a bounded kind of reason."""

from __future__ import annotations

import logging
import time

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from services.customer.service import SERVICE as CUSTOMER
from shopmesh.customer.v1 import customer_service_pb2 as customer_pb
from shopmesh.customer.v1 import customer_service_pb2_grpc as customer_grpc
from shopmesh.runtime import metrics
from shopmesh.runtime.invoices import REASON_KINDS, BadInvoice, parse, reason_kind
from tests.unit.test_services_in_process import ADMIN, READER, serving

SERVICE = "shopmesh.customer.v1.CustomerService"


def handled(method: str, code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": "unary", "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


def latency_count(method: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": "unary"}
    return REGISTRY.get_sample_value("grpc_server_handling_seconds_count", labels) or 0.0


def database_count(method: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method}
    return REGISTRY.get_sample_value("shopmesh_database_seconds_count", labels) or 0.0


@pytest.fixture
def customers(tmp_path):
    with serving(CUSTOMER, tmp_path) as (channel, _):
        yield customer_grpc.CustomerServiceStub(channel)


def test_each_call_is_counted_with_its_method_and_code(customers):
    before = {code: handled("GetCustomer", code) for code in ("OK", "NotFound", "InvalidArgument", "Unauthenticated")}
    seconds_before, database_before = latency_count("GetCustomer"), database_count("GetCustomer")
    created = customers.CreateCustomer(
        customer_pb.CreateCustomerRequest(customer=customer_pb.Customer(name="Metric", email="metric@example.com")),
        metadata=(("authorization", f"Bearer {ADMIN}"),),
    )
    reader = (("authorization", f"Bearer {READER}"),)
    customers.GetCustomer(customer_pb.GetCustomerRequest(id=created.id), metadata=reader)
    customers.GetCustomer(customer_pb.GetCustomerRequest(id=created.id), metadata=reader)
    for request, metadata in (
        (customer_pb.GetCustomerRequest(id="0" * 32), reader),  # unknown id
        (customer_pb.GetCustomerRequest(id="x" * 500), reader),  # not an id
        (customer_pb.GetCustomerRequest(id=created.id), ()),  # no token
    ):
        with pytest.raises(grpc.RpcError):
            customers.GetCustomer(request, metadata=metadata)

    # gRPC sends an error's status from abort(), before the call's bookkeeping ends in the server's thread: the
    # last call's count may follow its answer by a moment.
    deadline = time.monotonic() + 5
    while latency_count("GetCustomer") - seconds_before < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert latency_count("GetCustomer") - seconds_before == 5
    assert handled("GetCustomer", "OK") - before["OK"] == 2
    assert handled("GetCustomer", "NotFound") - before["NotFound"] == 1
    assert handled("GetCustomer", "InvalidArgument") - before["InvalidArgument"] == 1
    # Refused by the token check, before the service: counted all the same.
    assert handled("GetCustomer", "Unauthenticated") - before["Unauthenticated"] == 1
    # The calls that reached the database (both reads, and the unknown id) measured their time there.
    assert database_count("GetCustomer") - database_before == 3
    in_flight = REGISTRY.get_sample_value(
        "grpc_server_in_flight_requests", {"grpc_service": SERVICE, "grpc_method": "GetCustomer", "grpc_type": "unary"}
    )
    assert in_flight == 0


def test_the_request_id_is_in_the_log_lines_of_its_call(customers, caplog):
    handler_filter = metrics.RequestIdFilter()
    access = logging.getLogger("shopmesh.access")
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(handler_filter)
    customers.ListCustomers(
        customer_pb.ListCustomersRequest(),
        metadata=(("authorization", f"Bearer {READER}"), ("x-request-id", "trace-me-42")),
    )
    customers.ListCustomers(
        customer_pb.ListCustomersRequest(),
        metadata=(("authorization", f"Bearer {READER}"), ("x-request-id", "bad id with <spaces>")),
    )
    ids = [record.request_id for record in caplog.records if record.name == access.name]
    # What a caller sends is made safe for a log line: no spaces, nothing but a few punctuation marks.
    assert ids == ["trace-me-42", "bad_id_with__spaces_"]


def test_a_request_id_goes_with_the_calls_made_while_serving():
    assert metrics.passed_on((("authorization", "Bearer t"),)) == (("authorization", "Bearer t"),)
    token = metrics._request_id.set("abc")
    try:
        assert metrics.passed_on((("authorization", "Bearer t"),)) == (
            ("authorization", "Bearer t"),
            ("x-request-id", "abc"),
        )
    finally:
        metrics._request_id.reset(token)


@given(st.text(max_size=300))
def test_a_request_id_is_always_safe_for_a_log_line(value):
    safe = metrics.safe_request_id(value)
    assert 0 < len(safe) <= metrics.MAX_REQUEST_ID
    assert not any(character.isspace() or not character.isprintable() for character in safe)


@given(st.binary(max_size=200))
def test_every_dead_letter_reason_has_a_bounded_kind(raw):
    try:
        parse(raw)
    except BadInvoice as reason:
        assert reason_kind(str(reason)) in REASON_KINDS


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"nope", "not_json"),
        (b"[1]", "not_object"),
        (b'{"invoice_id": "a"}', "missing_field"),
        (b'{"invoice_id": "a", "customer_name": "b", "amount": -1, "issued_at": "2026-01-01T00:00:00Z"}', "amount"),
        (b'{"invoice_id": "a", "customer_name": "b", "amount": 1, "issued_at": "yesterday"}', "issued_at"),
        (b'{"invoice_id": "", "customer_name": "b", "amount": 1, "issued_at": "2026-01-01T00:00:00Z"}', "invoice_id"),
        (b'{"invoice_id": "a", "customer_name": "b", "amount": 1, "issued_at": "2999-01-01T00:00:00Z"}', "future"),
    ],
)
def test_dead_letter_kinds(raw, kind):
    with pytest.raises(BadInvoice) as reason:
        parse(raw)
    assert reason_kind(str(reason.value)) == kind
    assert reason_kind("late") == "late"


def test_status_codes_are_labelled_as_go_grpc_prometheus_labels_them():
    assert metrics.code_label(grpc.StatusCode.OK) == "OK"
    assert metrics.code_label(grpc.StatusCode.INVALID_ARGUMENT) == "InvalidArgument"
    assert metrics.code_label(grpc.StatusCode.PERMISSION_DENIED) == "PermissionDenied"
