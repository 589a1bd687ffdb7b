"""OpenAI-compatible ``POST /v1/completions`` (the legacy text-completions API) for clients
that only speak it: each prompt is a question, answered as /v1/chat/completions answers a
one-message conversation, with the same models, options and extra ``citations``."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from kinject.api.deps import ApiSettingsDep, Reader, ServiceDep
from kinject.api.openai_compat import bad
from kinject.api.routes.chat import (
    Final,
    answer_whole,
    open_stream,
    prepare,
    sse_json,
    stream_response,
)
from kinject.api.routes.search import SSE_RESPONSE, sse
from kinject.api.schemas import ERRORS, CompletionChoice, CompletionIn, CompletionOut, Usage
from kinject.errors import KinjectError

router = APIRouter(tags=["openai"], responses=ERRORS)

MAX_PROMPTS = 16  # questions in one request; each is a full answer (retrieval + model)


@router.post("/v1/completions", response_model=CompletionOut, responses=SSE_RESPONSE)
async def completions(body: CompletionIn, svc: ServiceDep, api: ApiSettingsDep,
                      who: Reader) -> Any:
    """Answer each prompt as a question (OpenAI completions format; one choice per prompt;
    ``stream: true`` takes one prompt and sends ``text_completion`` chunks)."""
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts:
        raise bad("prompt", "give a question, or a list of questions")
    if len(prompts) > MAX_PROMPTS:
        raise bad("prompt", f"at most {MAX_PROMPTS} prompts a request, got {len(prompts)}")
    if body.suffix:
        raise bad("suffix", "not supported: kinject answers questions, it does not insert")
    if body.best_of not in (None, 1):
        raise bad("best_of", "must be 1")
    jobs = [prepare(body, p, [{"role": "user", "content": p}], body.max_tokens, api)
            for p in prompts]
    cid = f"cmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    lead = (lambda p: p) if body.echo else (lambda p: "")
    if not body.stream:
        # Concurrent questions share a model call when rag.batch_window_ms allows.
        finals: list[Final] = await asyncio.gather(
            *(run_in_threadpool(answer_whole, svc, job) for job in jobs))
        usage = Usage(prompt_tokens=sum(f.usage.prompt_tokens for f in finals),
                      completion_tokens=sum(f.usage.completion_tokens for f in finals),
                      total_tokens=sum(f.usage.total_tokens for f in finals))
        return CompletionOut(
            id=cid, created=created, model=body.model, usage=usage,
            choices=[CompletionChoice(index=i, text=lead(p) + f.text,
                                      finish_reason=f.finish_reason)
                     for i, (p, f) in enumerate(zip(prompts, finals, strict=True))],
            citations=[f.citations for f in finals])
    if len(jobs) != 1:
        raise bad("prompt", "a streamed completion takes one prompt")
    items = await run_in_threadpool(open_stream, svc, jobs[0])
    include_usage = jobs[0].include_usage

    def chunk(text: str, finish: str | None = None,
              extra: dict[str, Any] | None = None) -> str:
        out: dict[str, Any] = {"id": cid, "object": "text_completion", "created": created,
                               "model": body.model, "choices": [
                                   {"index": 0, "text": text, "logprobs": None,
                                    "finish_reason": finish}]}
        if include_usage:
            out["usage"] = None
        out.update(extra or {})
        return sse_json(out)

    def events() -> Iterator[str]:
        if body.echo:
            yield chunk(prompts[0])
        for item in items:
            if isinstance(item, Final):
                cites = [c.model_dump() for c in item.citations]
                yield chunk("", item.finish_reason, {"citations": cites})
                if include_usage:
                    yield sse_json({"id": cid, "object": "text_completion",
                                    "created": created, "model": body.model, "choices": [],
                                    "usage": item.usage.model_dump()})
            elif isinstance(item, KinjectError):
                yield sse_json({"error": {"code": "unavailable", "message": str(item)}})
            else:
                yield chunk(item)
        yield sse("[DONE]")

    return stream_response(events())
