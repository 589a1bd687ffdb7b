"""End to end on the real broker: POST a record, find it by search and ask; delete it, and
neither finds it. Also lineage, recent ingests, readiness and metrics of the same server."""

from __future__ import annotations

import json

import httpx
import pytest
from _api_helpers import Served, publish

from _wait import until

pytestmark = pytest.mark.kafka

TEXT = "The Quillon lighthouse keeper feeds seventeen herons every Tuesday."
QUERY = "Quillon lighthouse herons"


def _search(served: Served, q: str) -> list[dict]:  # type: ignore[type-arg]
    with served.client() as c:
        r = c.get("/v1/search", params={"q": q, "k": 3})
    assert r.status_code == 200, r.text
    hits: list[dict] = r.json()["hits"]  # type: ignore[type-arg]
    return hits


def test_publish_search_ask_delete(served: Served) -> None:
    accepted = publish(served, {"source_id": "e2e/quillon", "content": TEXT,
                                "meta": {"tags": ["birds"]}})
    assert accepted["accepted"] == 1 and accepted["records"][0]["source_id"] == "e2e/quillon"
    hits = until(lambda: [h for h in _search(served, QUERY)
                             if h["source_id"] == "e2e/quillon"], what="the record in search")
    assert "seventeen herons" in hits[0]["text"]
    with served.client() as c:
        filtered = c.get("/v1/search", params=[("q", QUERY), ("filter", "tag=birds"),
                                               ("filter", "source=e2e/")]).json()["hits"]
        other = c.get("/v1/search", params={"q": QUERY, "filter": "source=elsewhere/"})
        answer = c.post("/v1/ask", json={"question": "How many herons does the Quillon "
                                                     "lighthouse keeper feed?"}).json()
        lineage = c.get("/v1/lineage/e2e/quillon").json()
    assert [h["source_id"] for h in filtered] == ["e2e/quillon"]
    assert other.status_code == 200 and other.json()["hits"] == []
    assert not answer["abstained"]
    assert answer["citations"][0]["source_id"] == "e2e/quillon"
    assert "herons" in answer["citations"][0]["snippet"]
    assert lineage["events"][0]["op"] == "upsert"
    assert lineage["events"][0]["topic"].endswith(".records")
    assert lineage["chunks_now"] == [hits[0]["chunk_id"]]

    publish(served, {"source_id": "e2e/quillon", "op": "delete"})
    until(lambda: not [h for h in _search(served, QUERY) if h["source_id"] == "e2e/quillon"],
          what="the record to leave search")
    with served.client() as c:
        after = c.post("/v1/ask", json={"question": "How many herons does the Quillon "
                                                    "lighthouse keeper feed?"}).json()
        lineage = c.get("/v1/lineage/e2e/quillon").json()
    assert all(cit["source_id"] != "e2e/quillon" for cit in after["citations"])
    assert [e["op"] for e in lineage["events"]] == ["upsert", "delete"]
    assert lineage["chunks_now"] == []


def test_ask_streams_deltas_then_the_answer(served: Served) -> None:
    publish(served, {"source_id": "e2e/stream", "content": "Marnick bakes rye bread at dawn."})
    until(lambda: _search(served, "Marnick rye bread"), what="the record")
    events = []
    with served.client() as c, c.stream("POST", "/v1/ask", json={
            "question": "What rye bread does Marnick bake at dawn?", "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert parsed[0]["type"] == "delta"
    final = parsed[-1]
    assert final["type"] == "answer", final
    # What was streamed adds up to the final answer (an OpenAI-style client shows only that).
    streamed = "".join(p["text"] for p in parsed if p["type"] == "delta")
    assert streamed.strip() and streamed.strip() in final["text"]
    if not final["abstained"]:  # the hash embedder's scores sit near the relevance threshold
        assert final["citations"][0]["source_id"] == "e2e/stream"


def test_unknown_source_and_bad_filter_are_clean_errors(served: Served) -> None:
    with served.client() as c:
        missing = c.get("/v1/lineage/no/such/source")
        bad = c.get("/v1/search", params={"q": "x", "filter": "colour=red"})
        big_k = c.get("/v1/search", params={"q": "x", "k": 10_000})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert bad.status_code == 400 and "colour" in bad.json()["error"]["message"]
    assert big_k.status_code == 400 and big_k.json()["error"]["code"] == "bad_request"


def test_status_recent_ingests_and_metrics(served: Served) -> None:
    publish(served, {"source_id": "e2e/metrics", "content": "Tobin repairs clocks in Ulm."})
    # this record itself, not any hit: the index already holds other tests' records
    until(lambda: any(h["source_id"] == "e2e/metrics"
                      for h in _search(served, "Tobin clocks Ulm")), what="the record")
    with served.client() as c:
        status = c.get("/v1/status").json()
        text = c.get("/metrics").text
        ready = c.get("/readyz")
    assert status["index_chunks"] >= 1
    assert "e2e/metrics" in [r["source_id"] for r in status["recent"]]
    assert status["adapter_version"] is None and status["dlq_count"] >= 0
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert 'kinject_http_request_duration_seconds_count{method="GET",route="/v1/search"' in text
    assert "kinject_index_chunks " in text
    assert 'kinject_ingest_lag{partition="0"} 0.0' in text
    assert f"kinject_dlq_messages {float(status['dlq_count'])}" in text
    assert 'kinject_adapter_info{version="base"} 1.0' in text


def test_a_bad_record_lands_in_the_dlq(served: Served) -> None:
    publish(served, {"source_id": "e2e/bad.pdf", "kind": "pdf",
                     "content_b64": "bm90IGEgcGRm"})  # "not a pdf"
    with served.client("admin") as c:
        letters = until(
            lambda: [d for d in c.get("/v1/dlq").json()["letters"] if d["key"] == "e2e/bad.pdf"]
            and c.get("/v1/dlq").json()["letters"], what="the dead letter")
    assert "e2e/bad.pdf" in [d["key"] for d in letters]
    with httpx.Client(base_url=served.url) as c:
        assert c.get("/v1/status").json()["dlq_count"] >= len(letters) >= 1
