"""schemathesis against the OpenAPI schema of a live server: no 5xx, every response (status,
content type, body) matches the schema. A bounded number of examples keeps it under a minute."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from _api_helpers import Served
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from _wait import until

pytestmark = pytest.mark.kafka


@pytest.fixture(scope="module")
def api_schema(served: Served) -> Any:
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json")


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def test_api_conforms_to_its_schema(api_schema: Any, served: Served) -> None:
    # An admin key: every operation is exercised past authentication.
    headers = {"Authorization": f"Bearer {served.keys['admin']}"}
    tested = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=6, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS, timeout=60)

        run()
        tested.append(operation.label)
    assert len(tested) >= 10, tested

    # POST /v1/finetune/jobs was exercised with an admin key, yet nothing trained: the shared
    # server keeps no corpus, so a job there finds nothing to learn and nothing keeps running
    # in the background of the session
    import httpx

    def jobs() -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = httpx.get(f"{served.url}/v1/finetune/jobs",
                                              headers=headers, timeout=30).json()["jobs"]
        return got

    assert "POST /v1/finetune/jobs" in tested
    until(lambda: all(j["status"] not in ("queued", "running") for j in jobs()),
          what="the fine-tuning jobs schemathesis started to end")
    assert jobs() and all(j["status"] == "skipped" for j in jobs()), jobs()


def test_schema_documents_every_route(api_schema: Any, served: Served) -> None:
    import httpx

    schema = httpx.get(f"{served.url}/openapi.json").json()
    paths = schema["paths"]
    for path in ("/v1/records", "/v1/search", "/v1/ask", "/v1/chat/completions", "/v1/models",
                 "/v1/completions", "/v1/embeddings",
                 "/v1/lineage/{source_id}", "/v1/dlq", "/healthz", "/readyz", "/metrics",
                 "/v1/adapters", "/v1/adapters/{version}", "/v1/adapters/{version}/activate",
                 "/v1/adapters/rollback", "/v1/adapters/{version}/archive", "/v1/finetune/jobs",
                 "/v1/finetune/jobs/{job_id}", "/v1/eval", "/v1/images/{image_id}/thumbnail"):
        assert path in paths, path
    assert "202" in paths["/v1/finetune/jobs"]["post"]["responses"]
    assert "409" in paths["/v1/finetune/jobs"]["post"]["responses"]
    job = paths["/v1/finetune/jobs/{job_id}"]["get"]["responses"]["200"]
    assert job["content"]["application/json"]["schema"]["$ref"].endswith("/JobOut")
    error = paths["/v1/records"]["post"]["responses"]["401"]["content"]["application/json"]
    assert error["schema"]["$ref"].endswith("/ErrorOut")
    # a citation says where in its source: the time in a recording, the page of a PDF
    cited = schema["components"]["schemas"]["CitationOut"]["properties"]
    assert {"start_s", "end_s", "page"} <= cited.keys(), cited
