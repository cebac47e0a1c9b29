"""Schema-driven fuzzing of the real running gateway (enrolment and certificates behind it, real
RabbitMQ and PostgreSQL) with schemathesis, from the document the gateway itself serves: no
answer is a 5xx, and every answer is one the document describes (status, content type, headers,
body schema). Public operations are called without a key, the others with a valid one."""
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.test_gateway_limits import start_gateway

# Per operation and mode; LOTSEN_FUZZ_EXAMPLES=200 for a longer hunt by hand.
EXAMPLES_PER_OPERATION = int(os.environ.get("LOTSEN_FUZZ_EXAMPLES", "12"))


@pytest.fixture
def fuzzed_gateway(container_factory, service_config, enrolment_db, register_file):
    return start_gateway(container_factory, service_config, enrolment_db, register_file,
                         read_timeout_s=5, max_body_bytes=200_000)


# The response checks (no 5xx; status, content type, headers and body as documented), and that
# a request the document calls valid is not refused. Not the reverse: a batch answers invalid
# rows one by one (207) by design, instead of refusing the request.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, positive_data_acceptance]


def fuzz(operation, mode, gateway) -> str | None:
    """Up to EXAMPLES_PER_OPERATION generated calls of one operation; the first failure found
    (not shrunk, to keep the run short), or None."""
    public = operation.definition.raw.get("security") == []
    headers = {} if public else {"Authorization": f"Bearer {gateway['key']}"}

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
              database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, headers=headers or None))
    def run(case):
        case.call_and_validate(base_url=gateway["url"], timeout=30, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:  # nothing to get wrong here (no parameters, or only free text)
        return None
    except Exception as exc:  # schemathesis' failures, or a transport error
        return f"{operation.label} ({mode.value}): {exc}"
    return None


def test_every_answer_is_documented_and_none_is_a_server_error(fuzzed_gateway):
    schema = schemathesis.openapi.from_url(fuzzed_gateway["url"] + "/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    failures = [failure for operation in operations
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
                if (failure := fuzz(operation, mode, fuzzed_gateway))]
    assert not failures, "\n\n".join(failures)
