"""POST /v1/records: publish records to kinject.records through the durable outbox."""

from __future__ import annotations

import json

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from kinject.api.deps import ApiSettingsDep, ServiceDep, Writer
from kinject.api.errors import ApiError
from kinject.api.schemas import ERRORS, AcceptedRecord, RecordsAccepted, RecordsIn
from kinject.app.publishing import decode_record
from kinject.app.values import Topics

router = APIRouter(tags=["records"], responses=ERRORS)


@router.post("/v1/records", status_code=202, response_model=RecordsAccepted)
async def publish_records(body: RecordsIn, svc: ServiceDep, api: ApiSettingsDep,
                          who: Writer) -> RecordsAccepted:
    """Accept records (upserts or deletes) for ingestion; 202 once they are durable locally.

    They reach the index when an ingest worker has processed them (usually within a second).
    """
    if len(body.records) > api.max_records_per_request:
        raise ApiError(413, "too_large", f"{len(body.records)} records in one request; the "
                       f"limit is {api.max_records_per_request}")
    # The same validation as a record read from Kafka (one payload field, base64, kind).
    records = [decode_record(json.dumps(r.model_dump(exclude_none=True)).encode("utf-8"), None)
               for r in body.records]
    ids = await run_in_threadpool(svc.publish, records)
    return RecordsAccepted(
        accepted=len(ids),
        topic=Topics.from_settings(svc.settings.kafka).records,
        records=[AcceptedRecord(id=i, source_id=r.source_id, op=r.op)
                 for i, r in zip(ids, records, strict=True)],
    )
