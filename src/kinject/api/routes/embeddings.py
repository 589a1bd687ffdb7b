"""OpenAI-compatible ``POST /v1/embeddings``: the index's own text embedder, so a client
can embed with exactly the vectors kinject searches with (model ``kinject-embed``)."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from kinject.api.deps import Reader, ServiceDep
from kinject.api.errors import ApiError
from kinject.api.openai_compat import bad
from kinject.api.routes.chat import EMBED
from kinject.api.schemas import (
    ERRORS,
    EmbeddingOut,
    EmbeddingsIn,
    EmbeddingsOut,
    EmbeddingsUsage,
)

router = APIRouter(tags=["openai"], responses=ERRORS)

MAX_INPUTS = 2048  # as OpenAI


@router.post("/v1/embeddings", response_model=EmbeddingsOut)
async def embeddings(body: EmbeddingsIn, svc: ServiceDep, who: Reader) -> Any:
    """Embed a text or a list of texts with the index's text embedder (unit-length vectors;
    ``encoding_format: base64`` gives little-endian float32 bytes, as OpenAI's)."""
    if body.model != EMBED:
        raise ApiError(404, "not_found", f"model {body.model!r} does not exist; the "
                       f"embedding model is {EMBED!r} (the index's embedder)")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    if not texts:
        raise bad("input", "give a text or a list of texts")
    if len(texts) > MAX_INPUTS:
        raise bad("input", f"at most {MAX_INPUTS} texts a request, got {len(texts)}")
    if any(not t.strip() for t in texts):
        raise bad("input", "a text must not be empty")
    vectors, used = await run_in_threadpool(svc.embed, texts)
    dim = int(vectors.shape[1])
    if body.dimensions is not None and body.dimensions != dim:
        raise bad("dimensions", f"the embedder gives {dim} dimensions, got {body.dimensions}")
    data = []
    for i, v in enumerate(vectors):
        vec: list[float] | str = (
            base64.b64encode(v.astype("<f4").tobytes()).decode("ascii")
            if body.encoding_format == "base64" else [float(x) for x in v])
        data.append(EmbeddingOut(index=i, embedding=vec))
    return EmbeddingsOut(data=data, model=EMBED,
                         usage=EmbeddingsUsage(prompt_tokens=used, total_tokens=used))
