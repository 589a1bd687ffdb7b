"""Adapter versions: list, show, activate, roll back, fetch as an archive (the registry
through the facade).

Reads are open like every read, except what a version was trained on: its lineage (source
ids, deleted ones included on a tainted version) and its training config (paths) go to admin
keys only; readers get how many sources it learnt from. Changing what serves, and a version's
bytes (its archive), need an admin key. A version is named
by its id or a unique prefix of 6+ characters, and only ever matched against the registry's
own version names: anything else is a 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import StreamingResponse

from kinject.api.auth import role_allows
from kinject.api.deps import Admin, Reader, ServiceDep
from kinject.api.schemas import (
    ERRORS,
    ActivationOut,
    AdapterOut,
    AdaptersOut,
    AdapterSummary,
    finite,
)
from kinject.app.values import MEDIA_TYPE, SHA_HEADER

router = APIRouter(tags=["adapters"], responses=ERRORS)

BASE = "base"
VersionArg = Annotated[str, Path(min_length=1, max_length=128,
                                 description="a version id or a unique prefix (6+ characters)")]


def _summary(a: dict[str, Any]) -> AdapterSummary:
    return AdapterSummary(version=a["version"], status=a["status"], active=a["active"],
                          parent=a["parent"], base_model=a["base_model"],
                          created_at=a["created_at"], corpus_cycle=a["corpus_cycle"],
                          sources=len(a["lineage"]), metrics=finite(a["metrics"]))


@router.get("/v1/adapters", response_model=AdaptersOut)
def list_adapters(svc: ServiceDep, who: Reader) -> AdaptersOut:
    """Every adapter version, oldest first, and the one serving now."""
    adapters = svc.adapters()
    active = next((a["version"] for a in adapters if a["active"]), None)
    return AdaptersOut(active=active, adapters=[_summary(a) for a in adapters])


@router.get("/v1/adapters/{version}", response_model=AdapterOut)
def show_adapter(version: VersionArg, svc: ServiceDep, who: Reader) -> AdapterOut:
    """One version: metrics, the gate's report, and (admin keys only) its lineage and
    training config."""
    a = svc.adapter(version)
    admin = who.role is not None and role_allows(who.role, "admin")
    return AdapterOut(**_summary(a).model_dump(),
                      lineage=list(a["lineage"]) if admin else None,
                      ancestors=a["ancestors"], base_model_hash=a["base_model_hash"],
                      corpus_manifest=a["corpus_manifest"],
                      train_config=finite(a["train_config"]) if admin else None,
                      report=finite(a["report"]))


@router.get("/v1/adapters/{version}/archive", response_class=StreamingResponse,
            responses={200: {"content": {MEDIA_TYPE: {}},
                             "description": "a tar of the version's weights, PEFT config and "
                             "manifest; the weights' sha256 in X-Kinject-Sha256"}})
def archive(version: VersionArg, svc: ServiceDep, who: Admin) -> StreamingResponse:
    """The version's files as one tar, streamed: how a replica with a registry of its own
    fetches a promoted version (finetune.publish_url). Admin keys only: the weights hold the
    knowledge. The replica checks the weights against the sha256 of the promotion event."""
    arc = svc.adapter_archive(version)
    return StreamingResponse(arc.chunks(), media_type=MEDIA_TYPE, headers={
        "Content-Length": str(arc.size), SHA_HEADER: arc.version,
        "Content-Disposition": f'attachment; filename="kinject-adapter-{arc.version}.tar"'})


@router.post("/v1/adapters/rollback", response_model=ActivationOut)
def rollback(svc: ServiceDep, who: Admin) -> ActivationOut:
    """Serve the version that served before the current one (the base model at most);
    every replica follows."""
    return ActivationOut(**svc.rollback())


@router.post("/v1/adapters/{version}/activate", response_model=ActivationOut)
def activate(version: VersionArg, svc: ServiceDep, who: Admin) -> ActivationOut:
    """Serve ``version`` now (``base``: no adapter); every replica follows. A tainted version
    (trained on deleted data) is refused."""
    return ActivationOut(**svc.activate(None if version == BASE else version))
