"""OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models``.

Any OpenAI client works: point its base URL at ``http://host:port/v1``. The last user
message is the question; the answer is kinject's grounded answer with its ``[n]`` markers,
and the passages cited travel in the extra ``citations`` field. Model names:

``kinject``              the base model with the active adapter (the ``auto`` route)
``kinject-base``         retrieval with the base model, no adapter (served while no adapter
                         is active, or when the generator can switch per request)
``kinject@<version>``    a named adapter version (the one being served)
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
    active = svc.adapter_version()
    ids = [DEFAULT, BASE]
    if active:
        ids.append(f"{DEFAULT}@{active}")
    return ids


def _route_for(model: str, svc: KinjectService) -> str | None:
    """The route a model name asks for; raises not_found for a model kinject cannot serve."""
    active = svc.adapter_version()
    if model == DEFAULT:
        return None
    if model == BASE and active is None:
        return "rag"
    if model.startswith(f"{DEFAULT}@") and active and model[len(DEFAULT) + 1:] == active:
        return None
    if model == BASE or model.startswith(f"{DEFAULT}@"):
        known = svc.adapter_versions()
        wanted = model.partition("@")[2] or "the base model"
        why = ("is not the adapter being served" if wanted in known else "is not in the "
               "adapter registry") if model != BASE else "cannot be served beside an active adapter"
        raise ApiError(404, "not_found", f"model {model!r}: {wanted} {why}; serving "
                       f"{', '.join(model_ids(svc))}")
    raise ApiError(404, "not_found", f"model {model!r} does not exist; models: "
                   f"{', '.join(model_ids(svc))}")


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
    route = _route_for(body.model, svc)
    kwargs: dict[str, Any] = {} if route is None else {"route": route}
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
