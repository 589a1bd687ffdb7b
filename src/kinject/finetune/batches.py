"""Examples -> token ids and labels, in the chat format the model is asked in.

A passage (empty prompt) is plain text and every token is learnt. A question-answer, cloze
or RAFT example is a chat turn: the prompt is rendered with the tokenizer's chat template and
masked (label -100), so the loss falls on the answer and the end of the turn only. The system
prompts are the ones the model is asked with at serving time (:mod:`kinject.prompting`):
closed-book questions with the closed-book prompt, RAFT examples with the RAG reader's.
:func:`chat_prompt` is the very text a closed-book evaluation must generate from, so training,
evaluation and serving agree token for token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kinject.prompting import CLOSED_BOOK_SYSTEM_PROMPT, SYSTEM_PROMPT
from kinject.types import TrainingExample

if TYPE_CHECKING:
    import torch

IGNORE = -100


def chat_messages(prompt: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    return [*messages, {"role": "user", "content": prompt}]


def chat_prompt(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """The prompt text (generation prompt included) a question is asked with."""
    if getattr(tokenizer, "chat_template", None):
        return str(tokenizer.apply_chat_template(chat_messages(prompt, system), tokenize=False,
                                                 add_generation_prompt=True))
    head = f"{system}\n\n" if system else ""
    return f"{head}Question: {prompt}\nAnswer: "


def render(tokenizer: Any, example: TrainingExample, qa_system: str = CLOSED_BOOK_SYSTEM_PROMPT,
           raft_system: str = SYSTEM_PROMPT) -> tuple[str, str]:
    """(masked prefix, learnt text) of an example. Questions are asked with ``qa_system``
    as the system prompt (none when empty), RAFT examples with ``raft_system``: set them to
    what the model is asked with at serving time."""
    eos = tokenizer.eos_token or ""
    if not example.prompt:
        return "", example.completion + eos
    system = (raft_system if example.form == "raft" else qa_system) or None
    prefix = chat_prompt(tokenizer, example.prompt, system)
    if getattr(tokenizer, "chat_template", None):
        messages = [*chat_messages(example.prompt, system),
                    {"role": "assistant", "content": example.completion}]
        full = str(tokenizer.apply_chat_template(messages, tokenize=False))
        if full.startswith(prefix) and len(full) > len(prefix):
            return prefix, full[len(prefix):]
    return prefix, example.completion + eos


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]

    @property
    def learnt(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


def encode(tokenizer: Any, example: TrainingExample, max_len: int,
           qa_system: str = CLOSED_BOOK_SYSTEM_PROMPT,
           raft_system: str = SYSTEM_PROMPT) -> Encoded:
    """Token ids and labels; a too-long example loses the start of its prompt, never its
    answer (and a too-long passage is cut at ``max_len``)."""
    prefix, target = render(tokenizer, example, qa_system, raft_system)
    if not example.prompt:  # a passage: the tokenizer adds what it adds to plain text (BOS)
        ids = list(tokenizer(target, add_special_tokens=True)["input_ids"])[:max_len]
        return Encoded(ids, list(ids))  # the model shifts labels: the first is never learnt
    # the chat template already holds any special tokens the model expects
    p_ids = list(tokenizer(prefix, add_special_tokens=False)["input_ids"])
    t_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
    t_ids = t_ids[: max(1, max_len // 2)] if len(p_ids) + len(t_ids) > max_len else t_ids
    room = max_len - len(t_ids)
    p_ids = p_ids[-room:] if room > 0 else []
    return Encoded(p_ids + t_ids, [IGNORE] * len(p_ids) + t_ids)


def collate(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors; padding is neither attended to nor learnt."""
    import torch

    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for i, e in enumerate(items):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
