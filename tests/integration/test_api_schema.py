"""Schemathesis against the served OpenAPI document: generated requests for every operation, as a
signed-in plain user (so that no generated request can delete the other tests' domains): no 5xx,
and every response matches what the document says (status code, content type, body schema)."""

from __future__ import annotations

import uuid

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.api_client import ApiClient
from tests.integration.conftest import MailSystem

EXAMPLES_PER_OPERATION = 30
# What the issue asks: no 5xx, and every response as documented. Not the "a schema-valid request must
# be accepted" heuristic: rules the schema cannot express (an address must be ours, a patch must
# change something) answer 400 by design.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


def _fuzz(operation, base_url: str, headers: dict[str, str]) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(case):
        case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)

    check()


def test_every_operation_conforms_to_the_document(mail_system: MailSystem):
    domain = f"fuzz{uuid.uuid4().hex[:8]}.test"
    mail_system.add_domain(domain)
    email = f"fuzzer@{domain}"
    mail_system.add_user(email)
    client = ApiClient(mail_system)
    client.login(email)
    headers = {"Authorization": f"Bearer {client.token}"}
    base_url = f"http://127.0.0.1:{mail_system.http_port}"
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    failures: dict[str, str] = {}
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        try:
            _fuzz(operation, base_url, headers)
        except BaseException as exc:  # FailureGroup too: collect every operation's, then report together
            if isinstance(exc, KeyboardInterrupt):
                raise
            failures[operation.label] = str(exc)[:1500]
    assert operations > 20
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
