"""OpenAI-compatible ``POST /v1/chat/completions`` and ``GET /v1/models``.

Any OpenAI client works: point its base URL at ``http://host:port/v1`` (any API key will
do where reads need none). The conversation's question (its last user message; the earlier
user turns help find what a follow-up asks about) is answered with kinject's grounded
answer with its ``[n]`` markers, and the passages cited travel in the extra ``citations``
field. How each OpenAI option is honoured: api/openai_compat.py. Model names:

``kinject``              the base model with the active adapter (the ``auto`` route)
``kinject-base``         the base model, no adapter
``kinject@<version>``    a named adapter version (an id or a unique prefix; not tainted),
                         answering on the ``both`` route: from the passages read with the
                         adapter, or closed book from its weights when none is relevant
``kinject-embed``        listed for /v1/embeddings (the index's text embedder)

A version is only ever matched against the registry's own version names (a name such as
``kinject@../x`` is an unknown model: 404). The extra ``route`` field picks another route.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from kinject.api.deps import ApiSettingsDep, Reader, ServiceDep
from kinject.api.errors import ApiError
from kinject.api.openai_compat import (
    Cut,
    conversation,
    conversation_tokens,
    count_tokens,
    refuse_unsupported,
    sampling_of,
    stops_of,
)
from kinject.api.routes.search import SSE_RESPONSE, answer_out, check_question, sse
from kinject.api.schemas import (
    ERRORS,
    ChatChoice,
    ChatChoiceMessage,
    ChatIn,
    ChatMessage,
    ChatOut,
    CitationOut,
    ModelOut,
    ModelsOut,
    OpenAIOptions,
    Usage,
)
from kinject.app import KinjectService
from kinject.config import ApiSettings
from kinject.errors import KinjectError
from kinject.protocols import Tokenizer
from kinject.types import Answer

router = APIRouter(tags=["openai"], responses=ERRORS)

BASE = "kinject-base"
DEFAULT = "kinject"
EMBED = "kinject-embed"  # /v1/embeddings: the index's text embedder
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


@dataclass
class AnswerJob:
    """One question to answer, with what the request asked of its answer's text."""

    question: str
    kwargs: dict[str, Any]
    stops: list[str]
    max_tokens: int | None
    include_usage: bool
    prompt: list[dict[str, str]]  # what the client sent, for its token count


def prepare(body: OpenAIOptions, question: str, prompt: list[dict[str, str]],
            max_tokens: int | None, api: ApiSettings) -> AnswerJob:
    """Check a request's options and turn it into the facade's arguments (400s here)."""
    refuse_unsupported(body)
    model = _model_arg(body.model)
    kwargs: dict[str, Any] = {
        "model": model,
        "route": body.route or ("auto" if model in (None, "base") else "both"),
        "sampling": sampling_of(body.temperature, body.top_p, body.seed)}
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return AnswerJob(check_question(question, api), kwargs, stops_of(body.stop), max_tokens,
                   include_usage, prompt)


@dataclass
class Final:
    """An answer as the client gets it: its text after stop/max_tokens, why it ended, what
    it cites and its token usage."""

    text: str
    finish_reason: str
    citations: list[CitationOut]
    usage: Usage


def _usage(tok: Tokenizer, job: AnswerJob, text: str, answer: Answer) -> Usage:
    # The prompt: the client's messages and the passages the answer cites.
    prompt = conversation_tokens(tok, job.prompt) + sum(
        count_tokens(tok, c.snippet) for c in answer.citations)
    completion = count_tokens(tok, text)
    return Usage(prompt_tokens=prompt, completion_tokens=completion,
                 total_tokens=prompt + completion)


def answer_whole(svc: KinjectService, job: AnswerJob) -> Final:
    """Answer ``job`` in one piece (in a worker thread)."""
    answer = svc.ask(job.question, None, **job.kwargs)
    tok = svc.tokenizer()
    cut = Cut(tok, job.stops, job.max_tokens)
    text = cut.update(answer.text, final=True)
    return Final(text, cut.reason or "stop", answer_out(answer).citations,
                 _usage(tok, job, text, answer))


def open_stream(svc: KinjectService, job: AnswerJob) -> Iterator[str | Final | KinjectError]:
    """Start streaming ``job``'s answer (call in a worker thread): the first piece is made
    here, so an unknown model or a failing model load is still an HTTP error. The iterator
    gives the text to show in pieces (after stop/max_tokens), then the Final, or a
    KinjectError that ended the stream."""
    pieces = svc.ask_stream(job.question, None, **job.kwargs)
    first = next(pieces, None)
    return _stream(svc, job, pieces, first)


def _stream(svc: KinjectService, job: AnswerJob, pieces: Iterator[str | Answer],
            first: str | Answer | None) -> Iterator[str | Final | KinjectError]:
    tok = svc.tokenizer()
    cut = Cut(tok, job.stops, job.max_tokens)
    item, full, shown = first, "", ""
    while item is not None:
        if isinstance(item, Answer):
            # The final text may differ from what streamed (an ungrounded free answer is
            # replaced by its source sentence): what is missing is sent as well.
            # A closed-book answer is its streamed text trimmed: nothing is missing then.
            core = full.strip()
            if item.text.startswith(full):
                full += item.text[len(full):]
            elif core and item.text.startswith(core):
                full += item.text[len(core):]
            elif item.text != full:
                full += "\n" + item.text
            now = cut.update(full, final=True)
            if now.startswith(shown) and len(now) > len(shown):
                yield now[len(shown):]
                shown = now
            yield Final(shown, cut.reason or "stop", answer_out(item).citations,
                        _usage(tok, job, shown, item))
        elif item:
            full += item
            now = cut.update(full)
            # Past a stop or max_tokens the rest is drained, not shown: the final Answer
            # still comes (its citations), and the generation ends within its own budget.
            if now.startswith(shown) and len(now) > len(shown):
                yield now[len(shown):]
                shown = now
        try:
            item = next(pieces, None)
        except KinjectError as exc:
            yield exc
            break


@router.get("/v1/models", response_model=ModelsOut)
def list_models(svc: ServiceDep, who: Reader) -> ModelsOut:
    """The model names /v1/chat/completions and /v1/completions accept, then the embedding
    model of /v1/embeddings."""
    return ModelsOut(data=[ModelOut(id=m, created=_STARTED)
                           for m in [*model_ids(svc), EMBED]])


def sse_json(body: dict[str, Any]) -> str:
    return sse(json.dumps(body, ensure_ascii=False))


def stream_response(events: Iterator[str]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


@router.post("/v1/chat/completions", response_model=ChatOut, responses=SSE_RESPONSE)
async def chat_completions(body: ChatIn, svc: ServiceDep, api: ApiSettingsDep,
                           who: Reader) -> Any:
    """Answer the conversation's question (OpenAI chat-completions format; ``stream: true``
    sends ``chat.completion.chunk`` events and ``data: [DONE]``; with
    ``stream_options.include_usage`` a last chunk carries the usage). The last user turn is
    the question read; earlier ones find what a follow-up asks about (options: see
    api/openai_compat.py)."""
    turns = [(m.role, _text(m)) for m in body.messages]
    prompt = [{"role": r, "content": t} for r, t in turns]
    question, context = conversation(turns, api.max_question_chars)
    job = prepare(body, question, prompt, body.max_completion_tokens or body.max_tokens, api)
    job.kwargs["context"] = context
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    if not body.stream:
        final = await run_in_threadpool(answer_whole, svc, job)
        return ChatOut(
            id=cid, created=created, model=body.model,
            choices=[ChatChoice(index=0, message=ChatChoiceMessage(content=final.text),
                                finish_reason=final.finish_reason)],
            usage=final.usage, citations=final.citations)
    items = await run_in_threadpool(open_stream, svc, job)

    def chunk(delta: dict[str, Any], finish: str | None = None,
              extra: dict[str, Any] | None = None) -> str:
        out: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk",
                               "created": created, "model": body.model, "choices": [
                                   {"index": 0, "delta": delta, "finish_reason": finish}]}
        if job.include_usage:
            out["usage"] = None
        out.update(extra or {})
        return sse_json(out)

    def events() -> Iterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        for item in items:
            if isinstance(item, Final):
                cites = [c.model_dump() for c in item.citations]
                yield chunk({}, item.finish_reason, {"citations": cites})
                if job.include_usage:
                    yield sse_json({"id": cid, "object": "chat.completion.chunk",
                                    "created": created, "model": body.model, "choices": [],
                                    "usage": item.usage.model_dump()})
            elif isinstance(item, KinjectError):
                yield sse_json({"error": {"code": "unavailable", "message": str(item)}})
            else:
                yield chunk({"content": item})
        yield sse("[DONE]")

    return stream_response(events())
