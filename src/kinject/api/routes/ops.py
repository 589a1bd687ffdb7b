"""Operations: lineage, dead letters, health, readiness, metrics, and the page's status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from kinject.api.deps import Admin, Reader, ServiceDep
from kinject.api.schemas import (
    ERRORS,
    DeadLetterOut,
    HealthOut,
    LineageOut,
    ReadyOut,
    StatusOut,
)

router = APIRouter(tags=["operations"], responses=ERRORS)


@router.get("/v1/lineage/{source_id:path}", response_model=LineageOut)
def lineage(source_id: str, svc: ServiceDep, who: Reader) -> LineageOut:
    """A source's road: the Kafka positions it arrived at and the chunks it became."""
    return LineageOut(**svc.lineage(source_id))


@router.get("/v1/dlq", response_model=DeadLetterOut)
def dead_letters(svc: ServiceDep, who: Admin,
                 limit: Annotated[int, Query(ge=1, le=1000)] = 50) -> DeadLetterOut:
    """The latest dead letters (records that failed), with stage and reason, from kinject's
    durable store (they outlive a broker restart)."""
    return DeadLetterOut(count=svc.dead_letter_count(), letters=svc.dead_letters(limit))


@router.get("/v1/status", response_model=StatusOut)
def status(svc: ServiceDep, who: Reader,
           recent: Annotated[int, Query(ge=0, le=100)] = 10) -> StatusOut:
    """What the web page shows: index size, active adapter, dlq count, recent ingests, the
    fine-tuning corpus and how far its materialisers are behind."""
    stats = svc.stats()
    lag, corpus_lag = stats.get("ingest_lag"), stats.get("corpus_lag")
    return StatusOut(index_chunks=stats["index_chunks"], adapter_version=stats["adapter_version"],
                     dlq_count=stats["dlq_count"],
                     ingest_lag=None if lag is None else {str(p): n for p, n in lag.items()},
                     recent=svc.recent(recent), corpus=stats.get("corpus"),
                     corpus_lag=None if corpus_lag is None else {
                         str(p): n for p, n in corpus_lag.items()},
                     thumbnails=svc.images is not None)


@router.get("/healthz", response_model=HealthOut)
async def healthz() -> HealthOut:
    """The process is up (liveness). Async, so it answers even while every worker thread
    is busy; the broker's state is /readyz's business."""
    return HealthOut()


@router.get("/readyz", response_model=ReadyOut,
            responses={503: {"model": ReadyOut, "description": "not ready yet"}})
async def readyz(svc: ServiceDep) -> JSONResponse:
    """Ready when the models are loaded, the index has caught up with kinject.chunks and the
    embedded broker (where this process runs one) is up; an external broker's errors are
    listed in the checks only (search and ask go on from the local index)."""
    state = await run_in_threadpool(svc.ready)
    return JSONResponse(state, status_code=200 if state["ready"] else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
                             "description": "Prometheus text format"}})
async def metrics(request: Request) -> Response:
    """Prometheus metrics: request latency by route, ingest lag, index size, dlq, adapter."""
    registry = request.app.state.metrics.registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
