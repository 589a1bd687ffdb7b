"""Prometheus metrics: request latency by route, and the service's figures on each scrape."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kinject.app import KinjectService

log = logging.getLogger(__name__)

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServiceCollector(Collector):
    """Asks the service for its figures when Prometheus scrapes."""

    def __init__(self, service: KinjectService) -> None:
        self.service = service

    def collect(self) -> Iterator[Any]:
        try:
            stats = self.service.stats()
        except Exception as exc:  # a scrape must not fail because one figure is missing
            log.warning("metrics: service figures unavailable: %s", exc)
            return
        size = GaugeMetricFamily("kinject_index_chunks", "chunks in this replica's index")
        size.add_metric([], stats["index_chunks"])
        yield size
        lag = GaugeMetricFamily("kinject_ingest_lag", "records the ingest group has not "
                                "committed, per partition of the records topic",
                                labels=["partition"])
        for part, n in sorted((stats.get("ingest_lag") or {}).items()):
            lag.add_metric([str(part)], n)
        yield lag
        chunks = GaugeMetricFamily("kinject_index_lag", "chunk updates this replica has not "
                                   "applied, per partition of the chunks topic",
                                   labels=["partition"])
        for part, n in sorted((stats.get("chunks_lag") or {}).items()):
            chunks.add_metric([str(part)], n)
        yield chunks
        if stats.get("corpus") is not None:
            corpus = GaugeMetricFamily("kinject_corpus_examples",
                                       "training examples in the fine-tuning corpus")
            corpus.add_metric([], stats["corpus"]["examples"])
            yield corpus
        corpus_lag = GaugeMetricFamily("kinject_corpus_lag", "chunk events the corpus group "
                                       "has not committed, per partition of the chunks topic",
                                       labels=["partition"])
        for part, n in sorted((stats.get("corpus_lag") or {}).items()):
            corpus_lag.add_metric([str(part)], n)
        yield corpus_lag
        if stats.get("dlq_count") is not None:
            dlq = GaugeMetricFamily("kinject_dlq_messages", "messages in the dead-letter topic")
            dlq.add_metric([], stats["dlq_count"])
            yield dlq
        keeper = self.service.outbox_keeper_state()
        if keeper is not None:
            up = GaugeMetricFamily("kinject_outbox_keeper_up", "1 while the thread that "
                                   "delivers accepted records runs, else 0")
            up.add_metric([], 1 if keeper["running"] else 0)
            yield up
            waiting = GaugeMetricFamily("kinject_outbox_records", "accepted records in the "
                                        "outbox not yet confirmed, after the keeper's last round")
            waiting.add_metric([], keeper["pending"])
            yield waiting
        info = InfoMetricFamily("kinject_adapter", "the active adapter version")
        info.add_metric([], {"version": stats.get("adapter_version") or "base"})
        yield info


class Metrics:
    """The registry of one app and its request histogram."""

    def __init__(self, service: KinjectService) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "kinject_http_request_duration_seconds", "HTTP request latency by route",
            ["method", "route", "status"], buckets=_BUCKETS, registry=self.registry,
        )
        self.registry.register(ServiceCollector(service))


class LatencyMiddleware:
    """Times every HTTP request (to the end of the body, streams included) by route template,
    so /v1/lineage/a and /v1/lineage/b share one series."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.metrics.latency.labels(scope.get("method", "?"), path,
                                        str(status["code"])).observe(time.perf_counter() - start)
