"""Request and response bodies of the HTTP API (they make its OpenAPI schema)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kinject.types import KINDS

RouteName = Literal["rag", "adapter", "both", "auto"]


class ErrorDetail(BaseModel):
    code: str = Field(description="stable: bad_request, unauthorized, forbidden, not_found, "
                                  "conflict, too_large, unavailable, internal")
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


# Error responses every route may give; FastAPI's own 422 body is replaced by ErrorOut.
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": what}
    for code, what in (
        (400, "bad request"),
        (401, "missing or unknown API key"),
        (403, "the key's role may not do this"),
        (404, "not found"),
        (413, "request too large"),
        (422, "invalid request"),
        (429, "too many failed API key checks from this client (see Retry-After)"),
        (500, "internal error"),
        (503, "a part kinject needs is unavailable"),
    )
}


# -- records --------------------------------------------------------------------------------
class RecordIn(BaseModel):
    """One record, as on kinject.records (a ``uri`` is not accepted over HTTP)."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["upsert", "delete"] = "upsert"
    source_id: str = Field(min_length=1, max_length=1024)
    kind: Literal[KINDS] | None = None  # type: ignore[valid-type]
    content: str | None = Field(default=None, description="text content")
    content_b64: str | None = Field(default=None, description="binary content, base64")
    meta: dict[str, Any] = Field(default_factory=dict)
    ts: float | None = None


class RecordsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    records: list[RecordIn] = Field(min_length=1)


class AcceptedRecord(BaseModel):
    id: str = Field(description="the record's id in the durable outbox")
    source_id: str
    op: str


class RecordsAccepted(BaseModel):
    accepted: int
    topic: str
    records: list[AcceptedRecord]


# -- search and ask -------------------------------------------------------------------------
class HitOut(BaseModel):
    chunk_id: str
    source_id: str
    text: str
    score: float
    meta: dict[str, Any] = Field(default_factory=dict)


class SearchOut(BaseModel):
    query: str
    k: int
    hits: list[HitOut]
    took_ms: float


class ImageHitOut(BaseModel):
    image_id: str
    source_id: str
    caption: str
    ocr_text: str
    score: float
    # a JPEG thumbnail (base64) when the CLIP index keeps one
    thumbnail_b64: str | None = None


class ImageSearchOut(BaseModel):
    k: int
    hits: list[ImageHitOut]
    took_ms: float


class ImageQueryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image_b64: str = Field(min_length=1, description="the image's bytes, base64")
    k: int = Field(default=5, ge=1)


class AskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    k: int | None = Field(default=None, ge=1)
    filters: list[str] = Field(default_factory=list,
                               description="key=value: kind, lang, source, since, until, tag")
    route: RouteName | None = Field(
        default=None, description="rag (passages), adapter (closed book: the adapter's own "
        "knowledge), both (passages read with the adapter; closed book when none is "
        "relevant), auto (the default)")
    adapter: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="answer with this adapter version (an id or a unique prefix) or 'base' "
        "(no adapter); default: the version serving now")
    stream: bool = Field(default=False, description="answer as server-sent events")


class CitationOut(BaseModel):
    n: int
    source_id: str
    chunk_id: str
    score: float
    snippet: str
    start_s: float | None = Field(
        default=None, description="audio: where in the recording the cited speech starts, "
        "in seconds from its start (with end_s); null for other sources")
    end_s: float | None = Field(
        default=None, description="audio: where in the recording the cited speech ends, "
        "in seconds from its start")
    page: int | None = Field(default=None,
                             description="PDF: the 1-based page the cited text is on")


class AnswerOut(BaseModel):
    text: str
    citations: list[CitationOut]
    images: list[str] = Field(default_factory=list)
    adapter_version: str | None = None
    route: str
    abstained: bool = False
    timings: dict[str, float] = Field(default_factory=dict)


# -- OpenAI-compatible chat -----------------------------------------------------------------
class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = Field(default=False, description="send a last chunk with the "
                                "usage of the whole answer (its choices empty)")


class OpenAIOptions(BaseModel):
    """The options chat and completions requests share (api/openai_compat.py says how each
    is honoured). Unknown fields are ignored, as vLLM does."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="kinject, kinject-base or kinject@<version>")
    route: RouteName | None = Field(
        default=None, description="kinject: as on /v1/ask; default both for "
        "kinject@<version> (closed book when no passage is relevant), else auto")
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(
        default=None, description="up to 4 strings; the answer ends before the first")
    max_tokens: int | None = Field(default=None, ge=1, description="tokens of the answer "
                                   "at most (the generator's tokenizer)")
    temperature: float | None = Field(
        default=None, description="0 or none: greedy; above 0 samples where the generator "
        "writes the answer (routes both/adapter, rag mode free)")
    top_p: float | None = None
    seed: int | None = Field(default=None, description="makes a sampled answer repeatable")
    n: int | None = Field(default=None, description="must be 1")
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | int | None = None
    user: str | None = None


class ChatIn(OpenAIOptions):
    """The OpenAI chat-completions request. The conversation's user turns make the question
    standalone (api/openai_compat.py); the answer is kinject's grounded answer."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1,
                                              description="the newer name of max_tokens")
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    functions: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None


class CompletionIn(OpenAIOptions):
    """The OpenAI (legacy) completions request: each prompt is a question, answered as by
    /v1/chat/completions; one choice per prompt."""

    prompt: str | list[str] = Field(description="a question, or several (one choice each)")
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str
    logprobs: None = None


class CompletionOut(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
    citations: list[list[CitationOut]] = Field(
        default_factory=list, description="kinject: the passages each choice cites")


class EmbeddingsIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, description="kinject-embed (the index's embedder)")
    input: str | list[str] = Field(description="a text or a list of texts")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, description="must be the embedder's own")
    user: str | None = None


class EmbeddingOut(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian "
                                         "float32")


class EmbeddingsUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: EmbeddingsUsage


class ChatChoiceMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: ChatChoiceMessage
    finish_reason: str


class ChatOut(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    citations: list[CitationOut] = Field(default_factory=list,
                                         description="kinject: the passages the answer cites")


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kinject"


class ModelsOut(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


# -- operations -----------------------------------------------------------------------------
class LineageOut(BaseModel):
    source_id: str
    events: list[dict[str, Any]]
    chunks_now: list[str]


class DeadLetterOut(BaseModel):
    count: int
    letters: list[dict[str, Any]]


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyOut(BaseModel):
    ready: bool
    checks: dict[str, Any]


class CorpusOut(BaseModel):
    examples: int = Field(description="training examples in the fine-tuning corpus")
    sources: int = Field(description="sources they come from")
    cycle: int = Field(description="the corpus cycle examples arriving now belong to")
    pending: int = Field(description="examples the next fine-tuning cycle will train on")


class StatusOut(BaseModel):
    index_chunks: int
    adapter_version: str | None
    dlq_count: int | None
    ingest_lag: dict[str, int] | None
    recent: list[dict[str, Any]]
    corpus: CorpusOut | None = Field(
        default=None, description="the data dir's fine-tuning corpus; null while empty")
    corpus_lag: dict[str, int] | None = Field(
        default=None, description="chunk events the corpus materialisers of this data dir's "
        "store (group <prefix>-corpus-<store id>) have not taken in, per partition of the "
        "chunks topic")


# -- adapters and fine-tuning jobs ----------------------------------------------------------
class AdapterSummary(BaseModel):
    """One adapter version as listed (GET /v1/adapters/{version} has the rest)."""

    version: str = Field(description="sha256 of the adapter's weights")
    status: str = Field(description="candidate, promoted, rejected or tainted")
    active: bool = Field(description="whether this version serves now")
    parent: str | None = None
    base_model: str
    created_at: float
    corpus_cycle: int = Field(description="the corpus cycle it was trained through")
    sources: int = Field(description="how many sources its weights learnt from")
    metrics: dict[str, float | None] = Field(default_factory=dict)


class AdapterOut(AdapterSummary):
    """One adapter version: its gate report and, for admin keys, its lineage and training
    config (which sources, deleted ones included, it was trained on; local paths)."""

    lineage: list[str] | None = Field(
        default=None, description="the source ids its weights learnt from (admin keys only; "
        "null for others, `sources` counts them)")
    ancestors: list[str] = Field(description="its parent, the parent's parent, ...")
    base_model_hash: str = ""
    corpus_manifest: str = ""
    train_config: dict[str, Any] | None = Field(
        default=None, description="the cycle's training config (admin keys only)")
    report: dict[str, Any] = Field(default_factory=dict, description="the gate's report")


class AdaptersOut(BaseModel):
    active: str | None = Field(description="the version serving now; null: the base model")
    adapters: list[AdapterSummary] = Field(description="oldest first")


class ActivationOut(BaseModel):
    """A change of the serving adapter; null versions mean the base model."""

    version: str | None
    previous: str | None
    reason: str
    at: float


class JobOut(BaseModel):
    """A fine-tuning job: one cycle (corpus -> LoRA training -> gate -> promote or reject)."""

    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "skipped", "failed"]
    stage: str = Field(description="starting, paraphrasing, training, gate, then the outcome")
    progress: float = Field(ge=0.0, le=1.0)
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    outcome: Literal["promoted", "rejected", "skipped"] | None = Field(
        default=None, description="what the cycle decided, once it has finished")
    version: str | None = Field(default=None, description="the adapter version it trained")
    parent: str | None = None
    corpus_cycle: int | None = None
    train_examples: int | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    report: dict[str, Any] = Field(default_factory=dict, description="the gate's report")


class JobsOut(BaseModel):
    jobs: list[JobOut] = Field(description="newest first")


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float (a diverged loss, an overflowing perplexity)
    turned into None: JSON has no such numbers, and the response must still be sent."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


class EvalReportOut(BaseModel):
    """What POST /v1/eval returns: the report `kinject eval` writes as report.json."""

    set: str
    n: int = Field(description="questions in the set")
    runs: list[dict[str, Any]] = Field(
        description="one per target: target, aggregate (means, abstention, latency p50/p95), "
                    "by_language and items (answer, citations and metrics per question)")
    gate: dict[str, Any]
    comparison: dict[str, Any] | None = None
