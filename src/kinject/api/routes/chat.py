"""OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models``.

Any OpenAI client works: point its base URL at ``http://host:port/v1``. The last user
message is the question; the answer is kinject's grounded answer with its ``[n]`` markers,
and the passages cited travel in the extra ``citations`` field. Model names:

``kinject``              the base model with the active adapter (the ``auto`` route)
``kinject-base``         the base model, no adapter
``kinject@<version>``    a named adapter version (an id or a unique prefix; not tainted),
                         answering on the ``both`` route: from the passages read with the
                         adapter, or closed book from its weights when none is relevant

A version is only ever matched against the registry's own version names (a name such as
``kinject@../x`` is an unknown model: 404). The extra ``route`` field picks another route.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from kinject.api.deps import ApiSettingsDep, Reader, ServiceDep
from kinject.api.errors import ApiError
from kinject.api.routes.search import SSE_RESPONSE, answer_out, check_question, sse
from kinject.api.schemas import (
    ERRORS,
    ChatChoice,
    ChatChoiceMessage,
    ChatIn,
    ChatMessage,
    ChatOut,
    ModelOut,
    ModelsOut,
    Usage,
)
from kinject.errors import KinjectError
from kinject.service import KinjectService
from kinject.types import Answer

router = APIRouter(tags=["openai"], responses=ERRORS)

BASE = "kinject-base"
DEFAULT = "kinject"
_STARTED = int(time.time())


def model_ids(svc: KinjectService) -> list[str]:
    """``kinject``, ``kinject-base``, then ``kinject@<version>`` for every servable version
    (the active one first)."""
    active = svc.adapter_version()
    versions = svc.adapter_versions()
    ordered = ([active] if active else []) + [v for v in versions if v != active]
    return [DEFAULT, BASE] + [f"{DEFAULT}@{v}" for v in ordered]


def _model_arg(model: str) -> str | None:
    """The facade's ``model`` for a model name: None (active), "base" or a version."""
    if model == DEFAULT:
        return None
    if model == BASE:
        return "base"
    prefix = f"{DEFAULT}@"
    if model.startswith(prefix) and len(model) > len(prefix):
        return model[len(prefix):]
    raise ApiError(404, "not_found", f"model {model!r} does not exist; models are "
                   f"{DEFAULT!r}, {BASE!r} and {prefix}<adapter version> (GET /v1/models)")


def _text(message: ChatMessage) -> str:
    if isinstance(message.content, str):
        return message.content
    parts = message.content or []
    return " ".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


def _question(messages: list[ChatMessage]) -> str:
    for message in reversed(messages):
        if message.role == "user":
            return _text(message)
    raise ApiError(400, "bad_request", "no user message to answer")


def _words(text: str) -> int:
    return len(text.split())


@router.get("/v1/models", response_model=ModelsOut)
def list_models(svc: ServiceDep, who: Reader) -> ModelsOut:
    """The model names /v1/chat/completions accepts."""
    return ModelsOut(data=[ModelOut(id=m, created=_STARTED) for m in model_ids(svc)])


@router.post("/v1/chat/completions", response_model=ChatOut, responses=SSE_RESPONSE)
async def chat_completions(body: ChatIn, svc: ServiceDep, api: ApiSettingsDep,
                           who: Reader) -> Any:
    """Answer the last user message (OpenAI chat-completions format; ``stream: true`` sends
    ``chat.completion.chunk`` events and ``data: [DONE]``)."""
    question = check_question(_question(body.messages), api)
    model = _model_arg(body.model)
    kwargs: dict[str, Any] = {"model": model, "route": body.route or (
        "auto" if model in (None, "base") else "both")}
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if not body.stream:
        answer = await run_in_threadpool(svc.ask, question, None, **kwargs)
        completion = _words(answer.text)
        prompt = _words(question) + sum(_words(c.snippet) for c in answer.citations)
        return ChatOut(
            id=cid, created=created, model=body.model,
            choices=[ChatChoice(index=0, message=ChatChoiceMessage(content=answer.text),
                                finish_reason="stop")],
            usage=Usage(prompt_tokens=prompt, completion_tokens=completion,
                        total_tokens=prompt + completion),
            citations=answer_out(answer).citations,
        )
    pieces = svc.ask_stream(question, None, **kwargs)
    first = await run_in_threadpool(next, pieces, None)

    def chunk(delta: dict[str, Any], finish: str | None = None,
              extra: dict[str, Any] | None = None) -> str:
        body_: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created,
                                 "model": body.model, "choices": [
                                     {"index": 0, "delta": delta, "finish_reason": finish}]}
        body_.update(extra or {})
        return sse(json.dumps(body_, ensure_ascii=False))

    def events() -> Iterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        item: Any = first
        streamed = ""
        while item is not None:
            if isinstance(item, Answer):
                # The final text may differ from what streamed (an ungrounded free answer is
                # replaced by its source sentence): send what is missing, then the citations.
                if item.text != streamed:
                    tail = item.text[len(streamed):] if item.text.startswith(streamed) else (
                        "\n" + item.text)
                    yield chunk({"content": tail})
                cites = [c.model_dump() for c in answer_out(item).citations]
                yield chunk({}, "stop", {"citations": cites})
            elif item:
                streamed += item
                yield chunk({"content": item})
            try:
                item = next(pieces, None)
            except KinjectError as exc:
                yield sse(json.dumps({"error": {"code": "unavailable", "message": str(exc)}}))
                break
        yield sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})
