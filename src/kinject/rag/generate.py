"""Greedy generation with a chat-templated causal LM (the base model plus an adapter later)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def generate_chat(loaded: Any, messages: list[dict[str, str]], max_new_tokens: int) -> str:
    """Run one greedy chat completion and return the new text only."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    enc = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    enc = {k: v.to(loaded.device) for k, v in enc.items()}
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id)
    text: str = tok.decode(out[0][enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return text.strip()
