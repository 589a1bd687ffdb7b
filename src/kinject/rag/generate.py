"""Running the causal LM: greedy chat completions (one, a left-padded batch, or streamed)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from kinject.protocols import Generator, Tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Sampling:
    """Sampled decoding instead of greedy (a client's ``temperature``, ``top_p``, ``seed``).
    ``seed`` makes a sample repeatable: the same request with the same seed gives the same
    text."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 to sample, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def _decoding(sampling: Sampling | None) -> dict[str, Any]:
    """``generate`` keyword arguments for greedy decoding or ``sampling``. A seed seeds
    torch's global generator (``generate`` takes no generator of its own), so a seeded
    sample repeats exactly unless another sampled request draws from it at the same time."""
    if sampling is None:
        return {"do_sample": False}
    if sampling.seed is not None:
        import torch

        torch.manual_seed(sampling.seed)
    return {"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p,
            "top_k": 0}


def _prompt_ids(tok: Tokenizer, messages: Messages) -> list[int]:
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                  return_dict=True)
    ids = enc["input_ids"]
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def _end_ids(tok: Tokenizer) -> list[int]:
    """Token ids that close an assistant turn (the chat template's end, and EOS)."""
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    for name in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
        tid = tok.convert_tokens_to_ids(name)
        if isinstance(tid, int) and tid >= 0 and tid != tok.unk_token_id:
            ids.add(tid)
    return sorted(ids)


def generate_chat(loaded: Generator, messages: Messages, max_new_tokens: int,
                  sampling: Sampling | None = None) -> str:
    """Run one chat completion (greedy unless ``sampling``) and return the new text only."""
    return generate_batch(loaded, [messages], [max_new_tokens], sampling)[0]


def generate_batch(loaded: Generator, batch: Sequence[Messages], max_new_tokens: Sequence[int],
                   sampling: Sampling | None = None) -> list[str]:
    """Completions of several chats in one left-padded ``generate`` call (greedy unless
    ``sampling``)."""
    import torch

    if not batch:
        return []
    tok, model = loaded.tokenizer, loaded.model
    prompts = [_prompt_ids(tok, m) for m in batch]
    width = max(len(p) for p in prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.inference_mode():
        out = model.generate(input_ids=input_ids.to(loaded.device),
                             attention_mask=mask.to(loaded.device),
                             max_new_tokens=max(max_new_tokens), **_decoding(sampling),
                             pad_token_id=pad, eos_token_id=_end_ids(tok))
    texts = []
    for row, limit in zip(out, max_new_tokens, strict=True):
        new = row[width:width + limit]
        texts.append(tok.decode(new, skip_special_tokens=True).strip())
    return texts


def stream_chat(loaded: Generator, messages: Messages, max_new_tokens: int,
                sampling: Sampling | None = None) -> Iterator[str]:
    """Yield the completion's text as it is produced (generation runs in a thread; greedy
    unless ``sampling``). Closed before the end (a client went away), it tells the
    generation to stop at its next token and returns without waiting for it: it may be
    closed on a server's event loop, which must never wait for a model."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    tok, model = loaded.tokenizer, loaded.model
    ids = torch.tensor([_prompt_ids(tok, messages)], device=loaded.device)
    # transformers types its own tokenizers; a Tokenizer here is one of them
    streamer = TextIteratorStreamer(cast("PreTrainedTokenizerBase", tok), skip_prompt=True,
                                    skip_special_tokens=True, timeout=120.0)
    stop = threading.Event()

    class _Stopped(StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor,
                     **kwargs: Any) -> torch.BoolTensor:
            return cast("torch.BoolTensor", torch.full(
                (input_ids.shape[0],), stop.is_set(), dtype=torch.bool,
                device=input_ids.device))

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "max_new_tokens": max_new_tokens, **_decoding(sampling), "pad_token_id": pad,
              "eos_token_id": _end_ids(tok), "streamer": streamer,
              "stopping_criteria": StoppingCriteriaList([_Stopped()])}

    def run() -> None:
        with torch.inference_mode():
            model.generate(**kwargs)

    thread = threading.Thread(target=run, name="kinject-generate", daemon=True)
    thread.start()
    finished = False
    try:
        yield from streamer
        finished = True
    finally:
        if finished:
            thread.join()  # it has put its last piece: ending now
        else:
            stop.set()  # the thread ends at its next token, unwaited
