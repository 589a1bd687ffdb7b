"""Bodies of the OpenAI-compatible routes: chat, completions, embeddings, models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from kinject.api.schemas.search import CitationOut, RouteName


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

