"""What one LoRA training run holds while its loop turns (``TrainRun``), and the two things
the loop asks of it: one optimizer step over a group of micro-batches, and the held-out loss.
The loop itself is ``LoraTrainer.train``; what happens around a step is its callbacks
(finetune/train_callbacks.py)."""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinject.finetune.batches import IGNORE, Encoded, collate
from kinject.finetune.checkpoint import LoopState
from kinject.finetune.kl import teacher_hidden, teacher_kl
from kinject.finetune.lm_loss import chunked_terms, final_hidden, pick

if TYPE_CHECKING:
    import torch

    from kinject.finetune.ewc import EwcPenalty
    from kinject.finetune.train_config import TrainConfig


# On a CPU a micro-batch is run in parts of at most this many (padded) tokens. With LoRA on
# every linear layer of SmolLM2 the activations kept for the backward pass of a whole 8 x 256
# batch peaked at 8.0 GB RSS (1.4 GB loaded); in parts of 512 tokens at 3.6 GB, in the same
# CPU time a step (23 s vs 21-23 s, one thread). On an accelerator the batch runs whole.
CPU_PART_TOKENS = 512


@dataclass(frozen=True)
class StepStats:
    """One optimizer step, as the metrics log and the progress callback report it."""

    loss: float  # the LM loss summed over the step's micro-batches
    ewc_penalty: float
    kl: float  # mean KL(teacher || model) per token of the KL rows (0: none or off)
    tokens: int  # over every rank
    seconds: float
    lr: float
    end_of_epoch: bool


@dataclass
class TrainRun:
    """The state of one run: the models, the encoded data, the loop position and the best
    weights so far. Callbacks read and change it."""

    cfg: TrainConfig
    acc: Any  # accelerate.Accelerator
    model: Any  # as accelerate prepared it: what steps
    unwrapped: Any  # the PEFT model inside: what evaluates and is saved
    optimizer: Any
    trainable: list[Any]  # the LoRA parameters (what the optimizer and the clipping see)
    pad_id: int
    train_enc: list[Encoded]
    replay_enc: list[Encoded]
    general_enc: list[Encoded]
    held_enc: list[Encoded]
    kl_ids: set[int]  # id() of the rows that get the KL term (general text, maybe replay)
    penalty: EwcPenalty | None
    total_steps: int
    fingerprint: str  # of the run's inputs: a checkpoint made for others is ignored
    out_dir: Path
    state: LoopState = field(default_factory=LoopState)
    best_weights: dict[str, torch.Tensor] | None = None
    teacher: str | None = None  # the KL's teacher adapter (None: the base model)
    step_times: list[float] = field(default_factory=list)
    # the output layer when the loss can run on hidden states (finetune/lm_loss.py), else
    # None: the full logits
    head: Any = None

    def step(self, group: list[list[Encoded]], *, end_of_epoch: bool) -> StepStats:
        """Forward and backward over ``group``'s micro-batches (gradients synced on the last
        only), then one optimizer step."""
        cfg, acc = self.cfg, self.acc
        t0 = time.perf_counter()
        loss_sum, pen_value, tokens, kl_sum, kl_tokens = self.accumulate(group)
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(self.trainable, cfg.max_grad_norm)
        lr = learning_rate(cfg, self.state.step, self.total_steps)
        for pg in self.optimizer.param_groups:
            pg["lr"] = lr
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.tokens += tokens * acc.num_processes
        dt = time.perf_counter() - t0
        self.step_times.append(dt)
        return StepStats(loss=loss_sum, ewc_penalty=pen_value,
                         kl=kl_sum / kl_tokens if kl_tokens else 0.0,
                         tokens=tokens * acc.num_processes, seconds=dt, lr=lr,
                         end_of_epoch=end_of_epoch)

    def accumulate(self, group: list[list[Encoded]]) -> tuple[float, float, int, float, int]:
        """The gradients of one optimizer step's loss over ``group``'s micro-batches, added
        to the parameters' ``.grad``; returns (LM loss, EWC penalty, tokens, summed KL, KL
        tokens).

        A micro-batch's loss is its mean CE over learnt tokens (plus ``kl_weight`` times its
        summed KL over the same count), divided by the number of micro-batches. On a CPU a
        micro-batch is run in parts of at most ``CPU_PART_TOKENS`` (padded) tokens, each part's
        sums divided by the whole micro-batch's count: the same loss and gradients (up to
        float rounding; LoRA dropout draws its masks part by part), with the activations of
        a part held instead of those of the whole batch."""
        cfg, acc, model = self.cfg, self.acc, self.model
        loss_sum, pen_value, tokens = 0.0, 0.0, 0
        kl_sum, kl_tokens = 0.0, 0
        budget = CPU_PART_TOKENS if acc.device.type == "cpu" else 0
        for i, items in enumerate(group):
            learnt = max(sum(_learnt_next(e) for e in items), 1)
            parts = split_rows(items, budget)
            for j, part in enumerate(parts):
                batch = {k: v.to(acc.device) for k, v in collate(part, self.pad_id).items()}
                rows = [r for r, e in enumerate(part) if id(e) in self.kl_ids]
                last = i == len(group) - 1 and j == len(parts) - 1
                with (nullcontext() if last else acc.no_sync(model)), acc.autocast():
                    ce, kl, n_kl = self._terms(batch, rows)
                    lm_loss = ce / learnt / len(group)
                    loss = lm_loss
                    if rows:
                        # per token, on the LM loss's scale (its mean over learnt tokens)
                        loss = loss + cfg.kl_weight * kl / learnt / len(group)
                        kl_sum += float(kl.detach())
                        kl_tokens += n_kl
                    if last and self.penalty is not None:
                        pen = self.penalty()
                        loss = loss + pen
                        pen_value = float(pen.detach())
                acc.backward(loss)
                # this is a CPU-GPU sync point, once per part
                loss_sum += float(lm_loss.detach())
                tokens += int(batch["attention_mask"].sum())
        return loss_sum, pen_value, tokens, kl_sum, kl_tokens

    def _terms(self, batch: dict[str, torch.Tensor], rows: list[int]
               ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(summed CE over the learnt tokens, summed KL over ``rows``' tokens, KL tokens)
        of one batch, with their graphs."""
        import torch

        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        if self.head is not None:  # the output layer on the positions that need it only
            hidden = final_hidden(self.model, ids, mask)
            picked = pick(hidden, labels, mask, rows)
            teacher = (teacher_hidden(self.unwrapped, ids, mask, rows, self.teacher)
                       if rows else None)
            ce, kl = chunked_terms(self.head, picked, teacher)
            return ce, kl, int(picked.is_kl.sum())
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
            ignore_index=IGNORE, reduction="sum")
        if not rows:
            return ce, ce.new_zeros(()), 0
        kl, n_kl = teacher_kl(self.unwrapped, logits, ids, mask, rows, self.teacher)
        return ce, kl, n_kl

    def held_out_loss(self) -> float:
        """Token-weighted mean loss on the held-out examples (each rank takes a share); the
        model is back in training mode afterwards."""
        import torch

        acc, model = self.acc, self.unwrapped
        model.eval()
        loss_sum = torch.zeros((), device=acc.device, dtype=torch.float64)
        count = torch.zeros((), device=acc.device, dtype=torch.float64)
        mine = self.held_enc[acc.process_index::acc.num_processes]
        bs = self.cfg.batch_size
        with torch.no_grad(), acc.autocast():
            for i in range(0, len(mine), bs):
                batch = {k: v.to(acc.device)
                         for k, v in collate(mine[i:i + bs], self.pad_id).items()}
                ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
                if self.head is not None:
                    ce, _ = chunked_terms(self.head, pick(final_hidden(model, ids, mask),
                                                          labels, mask, []))
                else:
                    logits = model(input_ids=ids, attention_mask=mask).logits
                    ce = torch.nn.functional.cross_entropy(
                        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                        labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum")
                loss_sum += ce.double()
                count += (labels[:, 1:] != IGNORE).sum().double()
        loss_sum, count = acc.reduce(loss_sum, "sum"), acc.reduce(count, "sum")
        self.model.train()
        return float(loss_sum / count.clamp(min=1))


def _learnt_next(e: Encoded) -> int:
    """The tokens of ``e`` the loss learns: labelled ones after the first position."""
    return sum(1 for t in e.labels[1:] if t != IGNORE)


def split_rows(items: list[Encoded], budget: int) -> list[list[Encoded]]:
    """``items`` cut, in order, into parts of at most ``budget`` padded tokens (rows x the
    longest row; at least one row a part); ``budget`` 0: one part."""
    if budget <= 0:
        return [items]
    parts: list[list[Encoded]] = []
    cur: list[Encoded] = []
    width = 0
    for e in items:
        w = max(width, len(e.input_ids))
        if cur and (len(cur) + 1) * w > budget:
            parts.append(cur)
            cur, w = [], len(e.input_ids)
        cur.append(e)
        width = w
    parts.append(cur)
    return parts


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up, then linear decay to a tenth of ``lr``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(total - cfg.warmup_steps, 1)
    done = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.lr * (1.0 - 0.9 * done)
