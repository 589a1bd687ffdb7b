"""A KL penalty towards a teacher's next-token distribution, on general text (and replay).

On the general-text rows of a micro-batch the trainer adds
``kl_weight * KL(p_base || p_model)`` per token to the language-model loss: the adapter may
learn new facts, but on ordinary text it should predict what the base model predicts. The
base model's distribution comes from the same weights with the LoRA adapter switched off
(PEFT's ``disable_adapter``), so no second copy of the model is held. An untrained adapter
(LoRA's B matrices start at zero) is the base model, so the term starts at zero and grows
only as far as training moves the model away from it.

Distillation (``finetune.distill_teacher = "previous"``): the teacher is the adapter the
cycle starts from (the previous serving adapter's newest untainted ancestor), loaded a second
time as a frozen PEFT adapter named ``TEACHER`` on the same base model and switched on for
the teacher's forward pass; ``finetune.distill_on = "general+replay"`` puts the term on the
replayed examples of earlier cycles too. The student starts as that adapter, so again the
term starts at zero.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TEACHER = "teacher"  # the PEFT adapter name the previous adapter is loaded under


@contextmanager
def teacher_weights(model: Any, teacher: str | None) -> Iterator[None]:
    """``model`` computing as the teacher: the base (``teacher`` None: adapter off) or the
    named frozen adapter, without dropout; the trained adapter, trainable, afterwards."""
    if teacher is None:
        with model.disable_adapter():
            yield
        return
    student, training = model.active_adapter, model.training
    model.eval()
    # inference_mode freezes every adapter while the teacher is active; setting the student
    # back makes its parameters trainable again (the optimizer holds the same tensors)
    model.base_model.set_adapter(teacher, inference_mode=True)
    try:
        yield
    finally:
        model.base_model.set_adapter(student)
        model.train(training)


def teacher_kl(model: Any, logits: torch.Tensor, input_ids: torch.Tensor,
               attention_mask: torch.Tensor, rows: Sequence[int],
               teacher: str | None = None) -> tuple[torch.Tensor, int]:
    """Summed KL(teacher || model) over the next-token predictions of ``rows`` of a
    right-padded batch, and how many predictions that is. ``teacher``: None for the base
    model, else the name of a frozen adapter loaded beside the trained one.

    ``model``: the (unwrapped) PEFT model whose forward gave ``logits``; ``logits`` keep
    their graph, so the sum's gradient reaches the adapter.
    """
    import torch

    idx = torch.as_tensor(list(rows), device=logits.device, dtype=torch.long)
    ids, mask = input_ids[idx], attention_mask[idx]
    with torch.no_grad(), teacher_weights(model, teacher):
        teacher_logits = model(input_ids=ids, attention_mask=mask).logits
    # position t predicts token t+1: count it where token t+1 is text, not padding
    valid = mask[:, 1:].bool()
    student = logits[idx][:, :-1][valid].float().log_softmax(-1)
    target = teacher_logits[:, :-1][valid].float().log_softmax(-1)
    kl = torch.nn.functional.kl_div(student, target, log_target=True, reduction="sum")
    return kl, int(valid.sum())


def teacher_hidden(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   rows: Sequence[int], teacher: str | None = None) -> torch.Tensor:
    """The teacher's final hidden states (no gradient) at the next-token predictions of
    ``rows`` that :func:`teacher_kl` counts, row by row in ascending row order: what
    :func:`kinject.finetune.lm_loss.chunked_terms` turns into the teacher's distribution a
    chunk at a time, instead of the teacher's full logits."""
    import torch

    from kinject.finetune.lm_loss import final_hidden

    idx = torch.as_tensor(sorted(rows), device=input_ids.device, dtype=torch.long)
    ids, mask = input_ids[idx], attention_mask[idx]
    with torch.no_grad(), teacher_weights(model, teacher):
        hidden = final_hidden(model, ids, mask)
    return hidden[:, :-1][mask[:, 1:].bool()]


def base_kl(model: Any, logits: torch.Tensor, input_ids: torch.Tensor,
            attention_mask: torch.Tensor, rows: Sequence[int]) -> tuple[torch.Tensor, int]:
    """``teacher_kl`` with the base model as the teacher."""
    return teacher_kl(model, logits, input_ids, attention_mask, rows, None)
