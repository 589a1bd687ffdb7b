"""GET /v1/search and POST /v1/ask (with ``stream: true`` as server-sent events)."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from kinject.api.deps import ApiSettingsDep, Reader, ServiceDep
from kinject.api.errors import ApiError
from kinject.api.schemas import (
    ERRORS,
    AnswerOut,
    AskIn,
    CitationOut,
    HitOut,
    ImageHitOut,
    ImageQueryIn,
    ImageSearchOut,
    SearchOut,
)
from kinject.app.values import SearchFilters
from kinject.config import ApiSettings
from kinject.errors import KinjectError
from kinject.types import Answer

router = APIRouter(tags=["search"], responses=ERRORS)

SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
          "description": "JSON body, or server-sent events when stream is true"},
}


def answer_out(answer: Answer) -> AnswerOut:
    return AnswerOut(
        text=answer.text,
        citations=[CitationOut(n=c.n, source_id=c.source_id, chunk_id=c.chunk_id,
                               score=c.score, snippet=c.snippet, start_s=c.start_s,
                               end_s=c.end_s, page=c.page) for c in answer.citations],
        images=list(answer.images),
        adapter_version=answer.adapter_version,
        route=answer.route,
        abstained=answer.abstained,
        timings={k: float(v) for k, v in answer.timings.items()},
    )


def check_k(k: int | None, api: ApiSettings) -> None:
    if k is not None and k > api.max_k:
        raise ApiError(400, "bad_request", f"k={k} is over the limit of {api.max_k}")


def check_question(question: str, api: ApiSettings) -> str:
    question = question.strip()
    if not question:
        raise ApiError(400, "bad_request", "the question is empty")
    if len(question) > api.max_question_chars:
        raise ApiError(413, "too_large", f"the question has {len(question)} characters; the "
                       f"limit is {api.max_question_chars}")
    return question


def sse(data: str) -> str:
    return f"data: {data}\n\n"


@router.get("/v1/search", response_model=SearchOut)
def search(
    svc: ServiceDep,
    api: ApiSettingsDep,
    who: Reader,
    q: Annotated[str, Query(min_length=1, description="the query")],
    k: Annotated[int, Query(ge=1, description="hits to return")] = 5,
    filter: Annotated[list[str] | None, Query(
        description="key=value, repeatable: kind, lang, source (id prefix), since, until, tag"
    )] = None,
    mode: Annotated[Literal["hybrid", "vector", "bm25"] | None, Query(
        description="default: the server's index.search_mode")] = None,
) -> SearchOut:
    """Ranked chunks for a query (vector + BM25 fused by default), with metadata filters."""
    check_k(k, api)
    query = check_question(q, api)
    filters = SearchFilters.parse(filter) if filter else None
    t0 = time.perf_counter()
    hits = svc.search(query, k, filters=filters, mode=mode)
    took = (time.perf_counter() - t0) * 1000
    return SearchOut(query=query, k=k, took_ms=took,
                     hits=[HitOut(chunk_id=h.chunk_id, source_id=h.source_id, text=h.text,
                                  score=h.score, meta=dict(h.meta)) for h in hits])


def _image_hits(hits: list[Any], k: int, t0: float) -> ImageSearchOut:
    return ImageSearchOut(k=k, took_ms=(time.perf_counter() - t0) * 1000, hits=[
        ImageHitOut(image_id=h.image_id, source_id=h.source_id, caption=h.caption,
                    ocr_text=h.ocr_text, score=h.score,
                    thumbnail_b64=(base64.b64encode(h.thumbnail).decode()
                                   if h.thumbnail else None))
        for h in hits])


@router.get("/v1/search/images", response_model=ImageSearchOut)
def search_images(
    svc: ServiceDep,
    api: ApiSettingsDep,
    who: Reader,
    q: Annotated[str, Query(min_length=1, description="what the images show")],
    k: Annotated[int, Query(ge=1, description="images to return")] = 5,
) -> ImageSearchOut:
    """Images for a text: through CLIP when it is configured, else through the captions and
    OCR text of the images."""
    check_k(k, api)
    query = check_question(q, api)
    t0 = time.perf_counter()
    return _image_hits(svc.search_images(query_text=query, k=k), k, t0)


@router.get("/v1/images/{image_id}/thumbnail", response_class=Response, responses={
    200: {"content": {"image/jpeg": {}}, "description": "the image's JPEG thumbnail"}})
def image_thumbnail(image_id: str, svc: ServiceDep, who: Reader) -> Response:
    """The JPEG thumbnail of an image (its id: ``meta.image_id`` of a search hit, an entry of
    an answer's ``images``). The CLIP image index keeps the thumbnails: without it, 404 says
    so, as the page shows beside an image's caption."""
    if svc.images is None:
        raise ApiError(404, "not_found", f"no thumbnail of image {image_id}: this server keeps "
                       "image thumbnails only in the CLIP image index, which is off (set "
                       "KINJECT_MODELS__CLIP_CHECKPOINT, see `kinject doctor`); the image's "
                       "caption and OCR text are searched all the same")
    data = svc.images.thumbnail(image_id)
    if data is None:
        raise ApiError(404, "not_found", f"no image {image_id} in the image index")
    # an image id is the hash of its source id and bytes: what it names never changes
    return Response(data, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=86400"})


@router.post("/v1/search/images", response_model=ImageSearchOut)
def search_images_like(body: ImageQueryIn, svc: ServiceDep, api: ApiSettingsDep,
                       who: Reader) -> ImageSearchOut:
    """Images like the one given (needs the CLIP image index)."""
    check_k(body.k, api)
    if svc.images is None:
        # a capability this server was not configured with: the client must not retry as is
        raise ApiError(400, "bad_request", "searching by image needs the CLIP image index: "
                       "set KINJECT_MODELS__CLIP_CHECKPOINT (see `kinject doctor`)")
    try:
        data = base64.b64decode(body.image_b64, validate=True)
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"image_b64 is not base64: {exc}") from exc
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Exception as exc:  # PIL raises several kinds for bytes that are no image
        raise ApiError(400, "bad_request", f"image_b64 is not an image PIL can read: {exc}"
                       ) from exc
    t0 = time.perf_counter()
    return _image_hits(svc.search_images(image_bytes=data, k=body.k), body.k, t0)


@router.post("/v1/ask", response_model=AnswerOut, responses=SSE_RESPONSE)
async def ask(body: AskIn, svc: ServiceDep, api: ApiSettingsDep, who: Reader) -> Any:
    """Answer a question from the knowledge base, citing the passages used.

    With ``stream: true`` the answer arrives as server-sent events: ``{"type": "delta",
    "text": ...}`` pieces as they are generated, then ``{"type": "answer", ...}`` with the
    final text and citations, then ``[DONE]``.
    """
    check_k(body.k, api)
    question = check_question(body.question, api)
    filters = SearchFilters.parse(body.filters) if body.filters else None
    kwargs: dict[str, Any] = {"filters": filters}
    if body.route is not None:
        kwargs["route"] = body.route
    if body.adapter is not None:
        kwargs["model"] = body.adapter  # matched against the registry's versions only
    if not body.stream:
        answer = await run_in_threadpool(svc.ask, question, body.k, **kwargs)
        return answer_out(answer)
    # Errors in the question (bad route, no index) surface before the stream starts.
    # In a worker thread: it loads the model a request names (seconds) before it returns.
    pieces = await run_in_threadpool(lambda: svc.ask_stream(question, body.k, **kwargs))
    first = await run_in_threadpool(next, pieces, None)

    def events() -> Iterator[str]:
        item: Any = first
        while item is not None:
            if isinstance(item, Answer):
                payload = {"type": "answer", **answer_out(item).model_dump()}
                yield sse(json.dumps(payload, ensure_ascii=False))
            elif item:
                yield sse(json.dumps({"type": "delta", "text": item}, ensure_ascii=False))
            try:
                item = next(pieces, None)
            except KinjectError as exc:  # the stream has started: report in-band
                yield sse(json.dumps({"type": "error", "error": {"code": "unavailable",
                                                                 "message": str(exc)}}))
                break
        yield sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
