"""What the OpenAI-compatible routes share: the request's decoding options, ``stop`` and
``max_tokens`` applied to an answer (whole or streamed), token counts by the generator's
tokenizer, and a conversation's question with its context.

How requests are read (the servers people already use differ; kinject follows vLLM):

- Unknown fields are ignored, as vLLM does (clients send provider-specific extras), and
  logged at debug level. Every OpenAI field that changes the output is either honoured or
  refused with a 400 that names it; none is dropped silently.
- ``stop`` (a string or up to 4), ``max_tokens`` / ``max_completion_tokens``: honoured on
  every answer. The text ends before the first stop string (``finish_reason: "stop"``) or
  after ``max_tokens`` tokens of the generator's tokenizer (``finish_reason: "length"``),
  as vLLM cuts its detokenised text; streamed text never shows what the cut removes.
- ``temperature``, ``top_p``, ``seed``: honoured where the generator writes the answer
  (routes ``both`` and ``adapter``, rag mode ``free``); ``temperature`` 0 (or none) is greedy
  decoding, the default. A quoted answer (span and read modes) is the reader's choice of
  passage text and is the same at any temperature.
- ``n``: only 1 (400 otherwise). ``tools``, ``functions``, ``response_format`` other than
  text, ``logprobs``, ``logit_bias``, non-zero penalties, audio output: 400.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kinject.api.errors import ApiError
from kinject.app.values import Sampling
from kinject.protocols import Tokenizer

log = logging.getLogger(__name__)

MAX_STOPS = 4  # as OpenAI


def bad(field: str, message: str) -> ApiError:
    return ApiError(400, "bad_request", f"{field}: {message}")


def stops_of(stop: str | list[str] | None) -> list[str]:
    """The request's stop strings (400 for more than four or an empty one)."""
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOPS:
        raise bad("stop", f"at most {MAX_STOPS} stop sequences, got {len(stops)}")
    if any(not s for s in stops):
        raise bad("stop", "a stop sequence must not be empty")
    return stops


def sampling_of(temperature: float | None, top_p: float | None,
                seed: int | None) -> Sampling | None:
    """Sampled decoding for ``temperature`` > 0; None (greedy) for 0 or none. ``top_p``
    and ``seed`` alone do not make a sample (as with OpenAI's temperature 0)."""
    if temperature is not None and not 0 <= temperature <= 2:
        raise bad("temperature", f"must be between 0 and 2, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise bad("top_p", f"must be in (0, 1], got {top_p}")
    if not temperature:
        return None
    return Sampling(temperature=temperature, top_p=1.0 if top_p is None else top_p, seed=seed)


def refuse_unsupported(body: Any) -> None:
    """400 for an OpenAI option kinject cannot honour, set to other than its default."""
    if body.n is not None and body.n != 1:
        raise bad("n", f"kinject gives one answer per request; n must be 1, got {body.n}")
    for name in ("frequency_penalty", "presence_penalty"):
        value = getattr(body, name, None)
        if value not in (None, 0, 0.0):
            raise bad(name, "not supported (must be 0 or absent)")
    if getattr(body, "logit_bias", None):
        raise bad("logit_bias", "not supported")
    if getattr(body, "logprobs", None) or getattr(body, "top_logprobs", None):
        raise bad("logprobs", "not supported")
    if getattr(body, "tools", None) or getattr(body, "functions", None):
        raise bad("tools", "kinject answers from its knowledge base and calls no tools")
    choice = getattr(body, "tool_choice", None)
    if choice not in (None, "none", "auto"):
        raise bad("tool_choice", "kinject calls no tools")
    fmt = getattr(body, "response_format", None)
    if fmt and (fmt.get("type") if isinstance(fmt, dict) else None) not in (None, "text"):
        raise bad("response_format", "only {'type': 'text'} is supported")
    modalities = getattr(body, "modalities", None)
    if modalities and any(m != "text" for m in modalities):
        raise bad("modalities", "only text is supported")
    extra = sorted((getattr(body, "model_extra", None) or {}).keys())
    if extra:
        log.debug("ignoring fields kinject does not know: %s", ", ".join(extra))


def count_tokens(tokenizer: Tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False)) if text else 0


def conversation_tokens(tokenizer: Tokenizer, messages: Sequence[dict[str, str]]) -> int:
    """Tokens of a conversation as the model reads one: its chat template applied when it
    has one, else the messages' texts."""
    if tokenizer.chat_template:
        try:
            enc = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                                tokenize=True, return_dict=True)
            ids = enc["input_ids"]
            return len(ids[0] if ids and isinstance(ids[0], list) else ids)
        except Exception as exc:  # a template that refuses these roles: count the texts
            log.debug("chat template failed on the request (%s); counting texts", exc)
    return sum(count_tokens(tokenizer, m["content"]) for m in messages)


@dataclass
class Cut:
    """Applies ``stop`` and ``max_tokens`` to an answer's text as it grows.

    :meth:`update` takes the whole text so far and returns what may be shown now: the text
    before the first stop string, at most ``max_tokens`` tokens, less any tail that could
    still turn into a stop string. ``reason`` becomes "stop" or "length" once the text is
    cut; nothing after that is shown.
    """

    tokenizer: Tokenizer
    stops: list[str]
    max_tokens: int | None
    reason: str | None = None
    _shown: str = field(default="", init=False)

    def update(self, text: str, final: bool = False) -> str:
        if self.reason is not None:
            return self._shown
        cut = len(text)
        for s in self.stops:
            at = text.find(s)
            if 0 <= at < cut:
                cut = at
        if cut < len(text):
            text, self.reason = text[:cut], "stop"
        elif not final:
            # hold back a tail that is the start of a stop string: it may complete later
            for s in self.stops:
                for n in range(min(len(s) - 1, len(text)), 0, -1):
                    if text.endswith(s[:n]):
                        cut = min(cut, len(text) - n)
                        break
        if self.max_tokens is not None:
            ids = self.tokenizer.encode(text[:cut] if self.reason is None else text,
                                        add_special_tokens=False)
            if len(ids) > self.max_tokens:
                text = self.tokenizer.decode(ids[: self.max_tokens],
                                             skip_special_tokens=True).replace("\ufffd", "")
                self.reason, cut = "length", len(text)
        shown = text if self.reason is not None else text[:cut]
        self._shown = shown
        return shown


def conversation(turns: Sequence[tuple[str, str]], limit: int) -> tuple[str, tuple[str, ...]]:
    """The question a conversation asks now and its context: the earlier user turns.

    ``turns``: (role, text) in order, the last being the user's question. The reader reads
    the question as asked now; the context (the two latest earlier user turns at most, most
    recent last, as far as ``limit`` characters allow with the question: the oldest go
    first) joins it for retrieval, and names what a follow-up ("When was it founded?")
    asks about when the question names nothing (rag/followups.py). The assistant's turns are
    left out: they are kinject's own answers, and a reader given them would quote them back.

    The earlier turns used to be joined to the question for reading too: the reader then
    answered the first question it saw ("Who is the safety officer?\nAnd when is the
    emergency drill?" answered about the officer). bench/chat_followup.py measures both.
    """
    users = [text.strip() for role, text in turns if role == "user" and text.strip()]
    if not users:
        raise bad("messages", "no user message to answer")
    question, context = users[-1], list[str]()
    size = len(question)
    for earlier in reversed(users[:-1][-2:]):  # the two latest earlier turns at most
        size += len(earlier) + 1
        if size > limit:
            break
        context.insert(0, earlier)
    return question, tuple(context)


def standalone_question(turns: Sequence[tuple[str, str]], limit: int) -> str:
    """The conversation's context and question joined in one text, as retrieval reads them.

    bench/followup.py (112 follow-ups, en + zh, default index, k=4): the right passage first
    0.14 -> 0.64, among the hits 0.46 -> 0.99 (the question asked whole: 0.66, 0.99); a
    whole question after a turn about another entity: 0.40 and 0.94 (alone 0.66, 0.99).
    """
    question, context = conversation(turns, limit)
    return "\n".join((*context, question))
