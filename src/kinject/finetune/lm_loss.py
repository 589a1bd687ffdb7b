"""The language-model loss and the KL term of a training step, computed without the
batch x sequence x vocabulary logits.

A causal LM's forward pass ends in its output layer (``lm_head``): for SmolLM2 at 8 x 256
tokens that is 49152 logits a position, 400 MB in float32, and the loss, its log-softmax and
their gradients hold several such tensors at once; the KL term's teacher pass and its
log-softmaxes hold more. Most positions do not even need them (a question-answer example
learns its answer only; padding nothing). Here the model runs up to its final hidden states,
the positions that carry a label or the KL term are picked out, and the output layer,
cross-entropy and KL run on chunks of ``CHUNK`` of them under activation checkpointing: only
the picked hidden states are kept for the backward pass, which recomputes one chunk's logits
at a time. The sums are those of the full-logits computation (up to float rounding).

This needs the model's logits to be its output layer applied to its last hidden state
(``hidden_states[-1]``), with an output layer that is a plain ``torch.nn.Linear`` (no
adapter on it: the teacher shares it). :func:`output_layer` checks that once on the model
itself (it would fail on a model that scales or soft-caps its logits) and says None
otherwise; the caller then keeps the full-logits computation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CHUNK = 256  # positions per output-layer chunk: 256 x 49152 float32 logits is 48 MB
IGNORE = -100


def output_layer(model: Any) -> Any | None:
    """``model``'s output layer when its logits are that layer of its last hidden state
    (checked on a few tokens, in eval mode, without gradients); None otherwise."""
    import torch

    try:
        head = model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if type(head) is not torch.nn.Linear:
        return None
    device = head.weight.device
    n = int(head.weight.shape[0])
    ids = torch.tensor([[i % n for i in (1, 7, 42, 300, 9)]], device=device)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=1,
                        output_hidden_states=True)
            mine = head(out.hidden_states[-1][:, -1:]).float()
            theirs = out.logits.float()
            ok = mine.shape == theirs.shape and bool(
                torch.allclose(mine, theirs, rtol=1e-4, atol=1e-4))
    except (TypeError, ValueError, AttributeError, IndexError, RuntimeError):
        ok = False
    finally:
        model.train(training)
    return head if ok else None


@dataclass
class Picked:
    """The positions of a right-padded batch that need logits, flattened row by row:
    their hidden states, the CE target of each (``IGNORE``: none) and whether each gets
    the KL term."""

    hidden: torch.Tensor  # (n, hidden)
    targets: torch.Tensor  # (n,)
    is_kl: torch.Tensor  # (n,) bool


def pick(hidden: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor,
         kl_rows: list[int]) -> Picked:
    """Position t predicts token t+1: it is picked when token t+1 is learnt (label), or is
    text (not padding) in a KL row."""
    import torch

    learnt = labels[:, 1:] != IGNORE
    kl = torch.zeros_like(learnt)
    if kl_rows:
        rows = torch.as_tensor(kl_rows, device=labels.device, dtype=torch.long)
        kl[rows] = attention_mask[rows, 1:].bool()
    sel = learnt | kl
    return Picked(hidden[:, :-1][sel], labels[:, 1:][sel], kl[sel])


def _chunk_terms(head: Any, hidden: torch.Tensor, targets: torch.Tensor, is_kl: torch.Tensor,
                 teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed CE, summed KL(teacher || model)) over one chunk of picked positions;
    ``teacher``: the teacher's final hidden states at the chunk's KL positions."""
    import torch

    logp = head(hidden).float().log_softmax(-1)
    ce = torch.nn.functional.nll_loss(logp, targets, ignore_index=IGNORE, reduction="sum")
    if teacher.shape[0] == 0:
        return ce, logp.new_zeros(())
    with torch.no_grad():
        target = head(teacher).float().log_softmax(-1)
    kl = torch.nn.functional.kl_div(logp[is_kl], target, log_target=True, reduction="sum")
    return ce, kl


def chunked_terms(head: Any, picked: Picked, teacher: torch.Tensor | None = None,
                  chunk: int = CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed CE over the learnt positions, summed KL over the KL positions) of ``picked``;
    ``teacher``: the teacher's final hidden states at the KL positions, in order (None: no
    KL term). With gradients on, each chunk is checkpointed: its logits are recomputed in
    the backward pass instead of kept."""
    import torch
    from torch.utils.checkpoint import checkpoint

    h = picked.hidden
    # Zero, but on the model's graph: a part with no learnt and no KL position (a one-token
    # passage alone in its part) must still backpropagate, with zero gradients (and, across
    # processes, reach the gradient sync), as the full-logits cross-entropy did.
    zero = h.sum().float() * 0.0
    ce_total, kl_total = zero, zero
    if teacher is None:
        teacher = h.new_zeros((0, h.shape[-1]))
    # where each chunk's KL positions start in ``teacher``
    kl_before = torch.cumsum(picked.is_kl.long(), 0).tolist() if picked.is_kl.numel() else []
    grad = torch.is_grad_enabled() and h.requires_grad
    fn: Callable[..., tuple[torch.Tensor, torch.Tensor]] = _chunk_terms
    for start in range(0, h.shape[0], chunk):
        end = min(start + chunk, h.shape[0])
        t0 = kl_before[start - 1] if start else 0
        t1 = kl_before[end - 1]
        args = (head, h[start:end], picked.targets[start:end], picked.is_kl[start:end],
                teacher[t0:t1])
        if grad:
            ce, kl = checkpoint(fn, *args, use_reentrant=False)
        else:
            ce, kl = fn(*args)
        ce_total = ce_total + ce
        kl_total = kl_total + kl
    return ce_total, kl_total


def final_hidden(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
                 ) -> torch.Tensor:
    """``model``'s last hidden states (batch, seq, hidden); it computes the logits of the
    last position only."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1,
                output_hidden_states=True)
    hidden: torch.Tensor = out.hidden_states[-1]
    return hidden
