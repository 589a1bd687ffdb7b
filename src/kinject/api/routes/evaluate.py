"""POST /v1/eval: run an uploaded question set (JSONL) and return the report (admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from kinject.api.deps import Admin, ApiSettingsDep, ServiceDep
from kinject.api.errors import ApiError
from kinject.api.routes.search import check_k
from kinject.api.schemas import ERRORS, EvalReportOut, RouteName
from kinject.eval.dataset import EvalSetError, parse_lines
from kinject.eval.runner import FacadeAsker, Target, evaluate, model_arg

router = APIRouter(tags=["eval"], responses=ERRORS)

_JSONL = {"schema": {"type": "string"}}
_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/x-ndjson": _JSONL,
    "application/jsonl": _JSONL,
    "text/plain": _JSONL,
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {"file": {"type": "string", "format": "binary",
                                "description": "the question set (JSONL)"}}}},
}}}


async def _read_capped(request: Request, cap: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``cap`` bytes (before it is read
    whole when it says its length)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise ApiError(413, "too_large", f"the question set has {declared} bytes; the limit "
                       f"is {cap} (KINJECT_API__MAX_EVAL_BYTES)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ApiError(413, "too_large", f"the question set is over the limit of {cap} "
                           "bytes (KINJECT_API__MAX_EVAL_BYTES)")
        chunks.append(chunk)
    return b"".join(chunks)


async def _file_part(request: Request, raw: bytes) -> bytes:
    """The ``file`` part of a multipart body already read (and capped) as ``raw``."""
    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except (StarletteHTTPException, AssertionError, ValueError) as exc:
        raise ApiError(400, "bad_request", f"the multipart body cannot be read: {exc}"
                       ) from exc
    part = form.get("file")
    if part is None:
        raise ApiError(400, "bad_request", "the multipart body has no 'file' part")
    return part.encode() if isinstance(part, str) else await part.read()


@router.post("/v1/eval", response_model=EvalReportOut, openapi_extra=_BODY)
async def run_eval(
    request: Request,
    svc: ServiceDep,
    api: ApiSettingsDep,
    who: Admin,
    route: Annotated[RouteName, Query(description="the route every question takes")] = "rag",
    adapter: Annotated[str | None, Query(
        min_length=1, max_length=128,
        description="an adapter version (id or unique prefix) or 'base'; default: the version "
                    "serving now")] = None,
    k: Annotated[int | None, Query(ge=1, description="passages retrieved per question")
                 ] = None,
) -> Any:
    """Run a question set and return its report (the JSON that `kinject eval` writes).

    The set is the body (JSONL: one object a line with ``question``, ``reference`` (``""``
    or null where the right answer is to abstain), optional ``sources`` and ``language``),
    or the ``file`` part of a multipart form. A set with a bad row is refused whole (400,
    naming each bad line). Limits: ``api.max_eval_bytes`` and ``api.max_eval_questions``.
    """
    check_k(k, api)
    raw = await _read_capped(request, api.max_eval_bytes)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        raw = await _file_part(request, raw)
    try:
        text = raw.decode("utf-8-sig")  # a BOM (Windows editors) is not part of row 1
    except UnicodeDecodeError as exc:
        raise ApiError(400, "bad_request", f"the question set is not UTF-8: {exc}") from exc
    try:
        items = parse_lines(text.split("\n"), "body")  # not splitlines: see load_set
    except EvalSetError as exc:
        raise ApiError(400, "bad_request", str(exc)) from exc
    if len(items) > api.max_eval_questions:
        raise ApiError(413, "too_large", f"the set has {len(items)} questions; the limit is "
                       f"{api.max_eval_questions} (KINJECT_API__MAX_EVAL_QUESTIONS; larger "
                       "sets: `kinject eval --url`)")
    for item in items:
        if len(item.question) > api.max_question_chars:
            raise ApiError(413, "too_large", f"line {item.line}: the question has "
                           f"{len(item.question)} characters; the limit is "
                           f"{api.max_question_chars}")
    target = Target(route, model_arg(adapter))
    return await run_in_threadpool(evaluate, "upload", items, [target],
                                   lambda t: FacadeAsker(svc, t, k))
