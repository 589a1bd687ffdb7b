"""A KL penalty towards the base model's next-token distribution, on general text.

On the general-text rows of a micro-batch the trainer adds
``kl_weight * KL(p_base || p_model)`` per token to the language-model loss: the adapter may
learn new facts, but on ordinary text it should predict what the base model predicts. The
base model's distribution comes from the same weights with the LoRA adapter switched off
(PEFT's ``disable_adapter``), so no second copy of the model is held. An untrained adapter
(LoRA's B matrices start at zero) is the base model, so the term starts at zero and grows
only as far as training moves the model away from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def base_kl(model: Any, logits: torch.Tensor, input_ids: torch.Tensor,
            attention_mask: torch.Tensor, rows: Sequence[int]) -> tuple[torch.Tensor, int]:
    """Summed KL(base || model) over the next-token predictions of ``rows`` of a
    right-padded batch, and how many predictions that is.

    ``model``: the (unwrapped) PEFT model whose forward gave ``logits``; ``logits`` keep
    their graph, so the sum's gradient reaches the adapter.
    """
    import torch

    idx = torch.as_tensor(list(rows), device=logits.device, dtype=torch.long)
    ids, mask = input_ids[idx], attention_mask[idx]
    with torch.no_grad(), model.disable_adapter():
        base_logits = model(input_ids=ids, attention_mask=mask).logits
    # position t predicts token t+1: count it where token t+1 is text, not padding
    valid = mask[:, 1:].bool()
    student = logits[idx][:, :-1][valid].float().log_softmax(-1)
    teacher = base_logits[:, :-1][valid].float().log_softmax(-1)
    kl = torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="sum")
    return kl, int(valid.sum())
