"""REST fuzzing of every operation of protos/openapi.yaml through Envoy, as an authorised user (schemathesis,
a bounded number of generated requests per operation): no answer is a 5xx, and every answer is documented, in
status, content type and body shape."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from shopmesh.tooling.codegen import OPENAPI

described = schemathesis.openapi.from_path(OPENAPI)
#: The streams (…:watch) run until the caller leaves: a generated request would wait for ever. They are tested on
#: their own (tests/unit/test_services_in_process.py, test_browser.py).
schema = described.exclude(path_regex=r":watch$")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
#: Generated requests per operation: with 15 operations, about a minute against the mesh.
EXAMPLES = 60


def test_the_description_covers_all_17_operations_of_which_15_are_fuzzed():
    assert len([result.ok() for result in described.get_all_operations()]) == 17
    fuzzed = [result.ok() for result in schema.get_all_operations()]
    assert len(fuzzed) == 15 and not any(operation.path.endswith(":watch") for operation in fuzzed)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_no_generated_request_gets_a_5xx_or_an_undocumented_answer(case, mesh, tokens):
    case.call_and_validate(base_url=mesh.gateway_url, headers=tokens.header("mesh-admin"), checks=CHECKS)
