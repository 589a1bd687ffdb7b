"""Fine-tuning jobs over HTTP: start a cycle (it runs in the background in this process,
through finetune.jobs like ``kinject finetune run``), list jobs, follow one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from kinject.api.deps import Admin, Reader, ServiceDep
from kinject.api.schemas import ERRORS, ErrorOut, JobOut, JobsOut, finite

router = APIRouter(tags=["fine-tuning"], responses=ERRORS)

_BUSY: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorOut, "description": "a fine-tuning cycle is running already"}}


def job_out(job: dict[str, Any]) -> JobOut:
    result = job.get("result") or {}
    return JobOut(id=job["id"], kind=job["kind"], status=job["status"], stage=job["stage"],
                  progress=min(max(float(job["progress"]), 0.0), 1.0),
                  created_at=job["created_at"], started_at=job["started_at"],
                  finished_at=job["finished_at"], error=job["error"],
                  outcome=result.get("status"), version=result.get("version"),
                  parent=result.get("parent"), corpus_cycle=result.get("corpus_cycle"),
                  train_examples=result.get("train_examples"),
                  metrics=finite(result.get("metrics") or {}),
                  report=finite(result.get("report") or {}))


@router.post("/v1/finetune/jobs", response_model=JobOut, status_code=202, responses=_BUSY)
def start_job(svc: ServiceDep, who: Admin, response: Response) -> JobOut:
    """Start one fine-tuning cycle in the background: train on what arrived since the
    serving adapter, run the gate, promote or reject. Follow it at the ``Location`` given."""
    job = job_out(svc.start_finetune_job())
    response.headers["Location"] = f"/v1/finetune/jobs/{job.id}"
    return job


@router.get("/v1/finetune/jobs", response_model=JobsOut)
def list_jobs(svc: ServiceDep, who: Reader,
              limit: Annotated[int, Query(ge=1, le=100)] = 20) -> JobsOut:
    """The latest fine-tuning jobs, newest first."""
    return JobsOut(jobs=[job_out(j) for j in svc.finetune_jobs(limit)])


@router.get("/v1/finetune/jobs/{job_id}", response_model=JobOut)
def show_job(job_id: Annotated[str, Path(min_length=1, max_length=64)], svc: ServiceDep,
             who: Reader) -> JobOut:
    """A job's status, stage, progress (0-1) and, once finished, its metrics and gate
    report."""
    return job_out(svc.finetune_job(job_id))
