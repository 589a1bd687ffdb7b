"""What happens around a step of ``LoraTrainer.train``, as callbacks (minGPT style: hooks, not
trainer subclasses). The loop calls, in order:

- ``on_batch_end(run, step)`` after each optimizer step;
- ``on_eval(run, held_out_loss)`` after each held-out evaluation (every ``eval_every`` steps
  and at the end of every epoch, when there are held-out examples);
- ``on_step_end(run, step)`` once the loop position has moved on (the next epoch, if this
  step ended one): a checkpoint made here resumes after the step;
- ``on_cancel(run)`` when ``should_stop`` said yes, before the run raises Cancelled.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kinject.finetune.checkpoint import adapter_weights, save_checkpoint
from kinject.finetune.train_run import StepStats, TrainRun

log = logging.getLogger(__name__)

Progress = Callable[[dict[str, Any]], None]


class Callback:
    """A hook of the training loop; every method does nothing unless overridden."""

    def on_batch_end(self, run: TrainRun, step: StepStats) -> None:
        return None

    def on_eval(self, run: TrainRun, held_out_loss: float) -> None:
        return None

    def on_step_end(self, run: TrainRun, step: StepStats) -> None:
        return None

    def on_cancel(self, run: TrainRun) -> None:
        return None


class EarlyStopping(Callback):
    """Keep the weights of the best held-out loss; stop after ``patience`` evaluations
    without improvement. The best weights are what the run returns."""

    def on_eval(self, run: TrainRun, held_out_loss: float) -> None:
        state = run.state
        if state.first_held_out is None:
            state.first_held_out = held_out_loss
        if held_out_loss < state.best:
            state.best, state.bad = held_out_loss, 0
            run.best_weights = adapter_weights(run.unwrapped)
        else:
            state.bad += 1
            state.stopped_early = state.bad >= run.cfg.patience
        if state.stopped_early:
            log.info("early stop at step %d: held-out loss did not improve for %d "
                     "evaluations (best %.4f)", state.step, run.cfg.patience, state.best)


class Checkpoints(Callback):
    """A checkpoint every ``checkpoint_every`` optimizer steps, and one when the run is
    cancelled (a rerun with the same inputs resumes from it)."""

    def __init__(self, ckpt: Path) -> None:
        self.ckpt = ckpt

    def _save(self, run: TrainRun) -> None:
        save_checkpoint(self.ckpt, run.fingerprint, run.cfg, run.state, run.unwrapped,
                        run.optimizer, run.best_weights, run.acc)

    def on_step_end(self, run: TrainRun, step: StepStats) -> None:
        every = run.cfg.checkpoint_every
        if every and run.state.step % every == 0:
            self._save(run)

    def on_cancel(self, run: TrainRun) -> None:
        if run.cfg.checkpoint_every and run.state.step > 0:
            self._save(run)


class MetricsLog(Callback):
    """``out_dir/metrics.jsonl``: a JSON line per optimizer step and per evaluation (main
    process only: ``path`` None elsewhere)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def _write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def on_batch_end(self, run: TrainRun, step: StepStats) -> None:
        state = run.state
        self._write({"kind": "step", "step": state.step, "epoch": state.epoch,
                     "loss": step.loss, "ewc_penalty": step.ewc_penalty, "kl": step.kl,
                     "lr": step.lr, "tokens": step.tokens, "step_time_s": step.seconds,
                     "time": time.time()})

    def on_eval(self, run: TrainRun, held_out_loss: float) -> None:
        state = run.state
        self._write({"kind": "eval", "step": state.step, "epoch": state.epoch,
                     "held_out_loss": held_out_loss, "best": state.best, "bad": state.bad,
                     "time": time.time()})


class ProgressReport(Callback):
    """A ``{"phase": "train", ...}`` event per optimizer step for a progress bar or a job."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def on_step_end(self, run: TrainRun, step: StepStats) -> None:
        state = run.state
        self.progress({"phase": "train", "step": state.step, "total_steps": run.total_steps,
                       "epoch": state.epoch, "loss": step.loss,
                       "held_out_loss": None if math.isinf(state.best) else state.best})
