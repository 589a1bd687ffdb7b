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

from kinject.finetune.batches import Encoded, collate
from kinject.finetune.checkpoint import LoopState
from kinject.finetune.kl import teacher_kl

if TYPE_CHECKING:
    import torch

    from kinject.finetune.ewc import EwcPenalty
    from kinject.finetune.train_config import TrainConfig


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

    def step(self, group: list[list[Encoded]], *, end_of_epoch: bool) -> StepStats:
        """Forward and backward over ``group``'s micro-batches (gradients synced on the last
        only), then one optimizer step."""
        cfg, acc, model = self.cfg, self.acc, self.model
        t0 = time.perf_counter()
        loss_sum, pen_value, tokens = 0.0, 0.0, 0
        kl_sum, kl_tokens = 0.0, 0
        for i, items in enumerate(group):
            batch = {k: v.to(acc.device) for k, v in collate(items, self.pad_id).items()}
            rows = [j for j, e in enumerate(items) if id(e) in self.kl_ids]
            last = i == len(group) - 1
            with (nullcontext() if last else acc.no_sync(model)), acc.autocast():
                out = model(**batch)
                lm_loss = out.loss / len(group)
                loss = lm_loss
                if rows:
                    kl, n_kl = teacher_kl(self.unwrapped, out.logits, batch["input_ids"],
                                          batch["attention_mask"], rows, self.teacher)
                    # per token, on the LM loss's scale (its mean over learnt tokens)
                    learnt = (batch["labels"][:, 1:] != -100).sum().clamp(min=1)
                    loss = loss + cfg.kl_weight * kl / learnt / len(group)
                    kl_sum += float(kl.detach())
                    kl_tokens += n_kl
                if last and self.penalty is not None:
                    pen = self.penalty()
                    loss = loss + pen
                    pen_value = float(pen.detach())
            acc.backward(loss)
            # this is a CPU-GPU sync point, once per micro-batch
            loss_sum += float(lm_loss.detach())
            tokens += int(batch["attention_mask"].sum())
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
                logits = model(input_ids=batch["input_ids"],
                               attention_mask=batch["attention_mask"]).logits
                labels = batch["labels"][:, 1:]
                loss_sum += torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                    ignore_index=-100, reduction="sum").double()
                count += (labels != -100).sum().double()
        loss_sum, count = acc.reduce(loss_sum, "sum"), acc.reduce(count, "sum")
        self.model.train()
        return float(loss_sum / count.clamp(min=1))


def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up, then linear decay to a tenth of ``lr``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(total - cfg.warmup_steps, 1)
    done = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.lr * (1.0 - 0.9 * done)
