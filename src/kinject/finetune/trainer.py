"""LoraTrainer: one fine-tuning cycle of a PEFT LoRA adapter, with online EWC and replay.

One readable loop, driven by accelerate's ``Accelerator`` so the same code runs in one
process (CPU by default, CUDA with bf16 when present) and under
``accelerate launch --num_processes 2 --cpu`` (see :mod:`kinject.finetune.launch`).

- Data per epoch: this cycle's examples, plus ``replay_ratio * len(train)`` examples drawn
  from the replay list and ``general_ratio * len(train)`` general texts, shuffled by
  ``(seed, epoch)``; every rank takes its share of the micro-batches.
- Loss: the answer tokens only for question-answer, cloze and RAFT examples (the prompt is
  masked), the whole text for passages; on general-text rows (and replay rows, by
  ``distill_on``), ``kl_weight`` times the KL divergence from the teacher's next-token
  distribution per token (the base model, or by ``distill_teacher`` the adapter the cycle
  starts from; :mod:`kinject.finetune.kl`); plus the EWC penalty once per optimizer step.
  Computed from the final hidden states of the positions that need logits, a chunk at a
  time (:mod:`kinject.finetune.lm_loss`), and on a CPU a micro-batch in parts of a few rows
  (``train_run.CPU_PART_TOKENS``): the same loss and gradients for a fraction of the memory.
- Early stopping on the held-out loss (``patience`` evaluations); the best adapter comes out.
  A step is ``TrainRun.step`` (finetune/train_run.py); evaluation, early stopping, checkpoints,
  the metrics log (``out_dir/metrics.jsonl``) and progress are callbacks (train_callbacks.py).
- Checkpoints (finetune/checkpoint.py) every ``checkpoint_every`` steps hold the adapter,
  optimizer, RNG and loop position (written to a temp folder and renamed): a crashed run
  resumes from the last one when called again with the same inputs. ``should_stop`` is
  asked before every step and Fisher sample: yes checkpoints and raises ``Cancelled``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kinject.errors import Cancelled, KinjectError
from kinject.finetune.batches import Encoded, collate, encode
from kinject.finetune.checkpoint import (
    LoopState,
    load_checkpoint,
    save_adapter,
    set_adapter_weights,
    trim_metrics,
)
from kinject.finetune.corpus import CorpusStore
from kinject.finetune.ewc import EwcPenalty, EwcState, estimate_fisher, param_key
from kinject.finetune.example_files import Augment, augment_once, read_examples, write_examples
from kinject.finetune.kl import TEACHER
from kinject.finetune.lm_loss import output_layer
from kinject.finetune.train_callbacks import (
    Callback,
    Checkpoints,
    EarlyStopping,
    MetricsLog,
    Progress,
    ProgressReport,
)
from kinject.finetune.train_config import TrainConfig, TrainResult
from kinject.finetune.train_run import TrainRun
from kinject.hf import model_loading, transformers_ready
from kinject.types import TrainingExample, content_hash

log = logging.getLogger(__name__)

__all__ = ["Augment", "LoraTrainer", "TrainConfig", "TrainResult", "TrainingFailed",
           "read_examples", "write_examples"]

ADAPTER_DIR = "adapter"
AUGMENTED_FILE = "augmented.jsonl"  # the examples ``augment`` added (see LoraTrainer.train)
EWC_FILE = "ewc_state.safetensors"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"


class TrainingFailed(KinjectError):
    """A training cycle could not run (bad inputs, a model that cannot be loaded)."""

    code = "training_failed"


class LoraTrainer:
    def __init__(self, config: TrainConfig | None = None) -> None:
        self.config = config or TrainConfig()

    # -- the run --------------------------------------------------------------------------
    def train(
        self,
        base_model_dir: Path,
        train: Sequence[TrainingExample],
        held_out: Sequence[TrainingExample],
        out_dir: Path,
        init_adapter: Path | None = None,
        ewc: EwcState | None = None,
        replay: Sequence[TrainingExample] = (),
        general: Sequence[str] = (),
        progress: Progress | None = None,
        augment: Augment | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Train one cycle. ``augment`` (optional) is lent the loaded tokenizer and model
        and returns more training examples (LM paraphrases): the model is loaded once for
        both; the main process calls it and writes ``out_dir/augmented.jsonl``, which every
        rank reads. ``should_stop``: see the module docstring (one process only: ranks of a
        launched run would each have to agree, so ``kinject.finetune.launch`` omits it)."""
        started = time.perf_counter()
        run, n_augmented = self._prepare(Path(base_model_dir), train, held_out, Path(out_dir),
                                         init_adapter, ewc, replay, general, augment)
        cfg, state, acc = self.config, run.state, run.acc
        callbacks: list[Callback] = [
            EarlyStopping(), MetricsLog(run.out_dir / METRICS_FILE if acc.is_main_process
                                        else None), Checkpoints(run.out_dir / CHECKPOINT_DIR)]
        if progress is not None:
            callbacks.append(ProgressReport(progress))

        def check() -> bool:  # True: go on; once should_stop says yes: checkpoint, Cancelled
            if should_stop is None or not should_stop():
                return True
            for cb in callbacks:
                cb.on_cancel(run)
            kept = " (checkpointed)" if cfg.checkpoint_every and state.step > 0 else ""
            raise Cancelled(f"training stopped at step {state.step} of {run.total_steps}{kept}")

        run.model.train()
        while state.epoch < cfg.epochs and not state.stopped_early:
            groups = self._epoch_groups(state.epoch, run.train_enc, run.replay_enc,
                                        run.general_enc, acc.num_processes, acc.process_index)
            for g in range(state.group, len(groups)):
                check()
                step = run.step(groups[g], end_of_epoch=g == len(groups) - 1)
                state.group = g + 1
                for cb in callbacks:
                    cb.on_batch_end(run, step)
                if run.held_enc and ((cfg.eval_every and state.step % cfg.eval_every == 0)
                                     or step.end_of_epoch):
                    held_out_loss = run.held_out_loss()
                    for cb in callbacks:
                        cb.on_eval(run, held_out_loss)
                if step.end_of_epoch:
                    state.epoch, state.group = state.epoch + 1, 0
                for cb in callbacks:
                    cb.on_step_end(run, step)
                if state.stopped_early:
                    break

        if run.best_weights is not None:
            set_adapter_weights(run.unwrapped, run.best_weights)
        run.unwrapped.eval()
        check()
        new_ewc = self._next_ewc(run.unwrapped, run.train_enc, run.pad_id, acc, ewc, progress,
                                 check)
        return self._finish(run, new_ewc, started, n_augmented, len(replay), len(general))

    def _prepare(self, base_model_dir: Path, train: Sequence[TrainingExample],
                 held_out: Sequence[TrainingExample], out_dir: Path,
                 init_adapter: Path | None, ewc: EwcState | None,
                 replay: Sequence[TrainingExample], general: Sequence[str],
                 augment: Augment | None) -> tuple[TrainRun, int]:
        """Load the model, encode the data, resume from a checkpoint made for the same
        inputs; returns the run (its model not yet in training mode) and how many examples
        ``augment`` added."""
        import torch

        cfg = self.config
        if not train:
            raise TrainingFailed("nothing to train on: the training set is empty")
        acc = _accelerator(cfg)
        if acc.is_main_process:
            out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        tok, model = self._load(base_model_dir, init_adapter, acc)
        augmented: list[TrainingExample] = []
        if augment is not None:
            have = {e.example_id for e in train}
            augmented = [e for e in augment_once(augment, tok, model, out_dir / AUGMENTED_FILE, acc)
                         if e.example_id not in have]
            train = [*train, *augmented]
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)

        def enc(e: TrainingExample) -> Encoded:
            return encode(tok, e, cfg.max_seq_len, cfg.qa_system, cfg.raft_system)

        general_enc = [enc(_general_example(t)) for t in general]
        fingerprint = content_hash(
            json.dumps(cfg.to_dict(), sort_keys=True), str(base_model_dir.resolve()),
            str(init_adapter or ""), CorpusStore.manifest(train), CorpusStore.manifest(held_out),
            CorpusStore.manifest(replay), *general, str(ewc.cycles if ewc else -1),
            str(acc.num_processes))
        state, best_weights = LoopState(), None
        resumed = load_checkpoint(out_dir / CHECKPOINT_DIR, fingerprint, model, optimizer)
        if resumed is not None:
            state, best_weights = resumed
            state.resumed_from = state.step
            log.info("resuming training from the checkpoint at step %d", state.step)
        if acc.is_main_process:
            trim_metrics(out_dir / METRICS_FILE, state.step)
        acc.wait_for_everyone()
        model, optimizer = acc.prepare(model, optimizer)
        unwrapped = acc.unwrap_model(model)
        penalty = None
        if ewc is not None and not ewc.empty and cfg.ewc_lambda > 0:
            penalty = EwcPenalty(ewc, unwrapped.named_parameters(), cfg.ewc_lambda)
        train_enc, replay_enc = [enc(e) for e in train], [enc(e) for e in replay]
        per_epoch = self._groups_per_epoch(len(train_enc), len(replay_enc), len(general_enc),
                                           acc.num_processes)
        run = TrainRun(
            cfg=cfg, acc=acc, model=model, unwrapped=unwrapped, optimizer=optimizer,
            trainable=trainable, pad_id=tok.pad_token_id, train_enc=train_enc,
            replay_enc=replay_enc, general_enc=general_enc,
            held_enc=[enc(e) for e in held_out],
            # general-text rows (and replay, by distill_on) get the KL term (the very objects)
            kl_ids=({id(e) for e in general_enc}
                    | ({id(e) for e in replay_enc} if cfg.distill_on == "general+replay"
                       else set())) if cfg.kl_weight > 0 else set(),
            teacher=TEACHER if TEACHER in unwrapped.peft_config else None,
            penalty=penalty, total_steps=cfg.epochs * per_epoch, fingerprint=fingerprint,
            out_dir=out_dir, state=state, best_weights=best_weights,
            head=output_layer(unwrapped))
        return run, len(augmented)

    def _finish(self, run: TrainRun, new_ewc: EwcState, started: float, n_augmented: int,
                n_replay: int, n_general: int) -> TrainResult:
        """Save the adapter, the EWC state and ``result.json``; drop the checkpoint."""
        cfg, state, acc, out_dir = self.config, run.state, run.acc, run.out_dir
        n_train = len(run.train_enc)
        adapter_dir = out_dir / ADAPTER_DIR
        ewc_path = out_dir / EWC_FILE
        seconds = time.perf_counter() - started
        train_seconds = sum(run.step_times)
        metrics: dict[str, Any] = {
            "steps": state.step,
            "total_steps": run.total_steps,
            "epochs_run": state.epoch,
            "stopped_early": state.stopped_early,
            "held_out_loss_first": state.first_held_out,
            "held_out_loss_best": None if math.isinf(state.best) else state.best,
            "tokens": state.tokens,
            "train_examples": n_train,
            "augmented_examples": n_augmented,
            "examples_per_epoch": n_train + self._n_replay(n_train, n_replay)
            + self._n_general(n_train, n_general),
            "replay_available": n_replay,
            "general_available": n_general,
            "resumed_from_step": state.resumed_from,
            "ewc_cycles": new_ewc.cycles,
            "world_size": acc.num_processes,
            "device": str(acc.device),
        }
        result = TrainResult(
            adapter_dir=adapter_dir, metrics=metrics, ewc=new_ewc, steps=state.step,
            seconds=seconds,
            tokens_per_s=state.tokens / train_seconds if train_seconds > 0 else 0.0,
            step_time_s=statistics.median(run.step_times) if run.step_times else 0.0,
            ewc_path=ewc_path if not new_ewc.empty else None, config=cfg.to_dict())
        if run.teacher is not None:  # save the trained adapter only
            run.unwrapped.delete_adapter(run.teacher)
            run.teacher = None
        if acc.is_main_process:
            save_adapter(run.unwrapped, adapter_dir)
            if not new_ewc.empty:
                new_ewc.save(ewc_path)
            (out_dir / "result.json").write_text(json.dumps(
                {"adapter_dir": str(adapter_dir), "metrics": metrics, "steps": state.step,
                 "seconds": seconds, "tokens_per_s": result.tokens_per_s,
                 "step_time_s": result.step_time_s, "config": cfg.to_dict(),
                 "ewc_path": str(result.ewc_path) if result.ewc_path else None},
                indent=2), encoding="utf-8")
            shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
        acc.wait_for_everyone()
        return result

    def _load(self, base_model_dir: Path, init_adapter: Path | None, acc: Any) -> tuple[Any, Any]:
        transformers_ready()  # before its own imports: loaders in other threads race on them
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from kinject.models import select_dtype

        cfg = self.config
        if not (base_model_dir / "config.json").is_file():
            raise TrainingFailed(f"{base_model_dir} is not a transformers model folder "
                                 "(no config.json)")
        tok = AutoTokenizer.from_pretrained(base_model_dir)
        tok.pad_token = tok.pad_token or tok.eos_token
        dtype = select_dtype(acc.device.type, cfg.dtype)
        with model_loading():  # serving may load a model in another thread meanwhile
            base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=dtype)
            base.config.use_cache = False
            resumed = (None if init_adapter is None else
                       PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True))
        if resumed is not None:
            model = resumed
            if cfg.distill_teacher == "previous" and cfg.kl_weight > 0:
                # the adapter the cycle starts from, frozen, as the KL's teacher
                model.load_adapter(str(init_adapter), adapter_name=TEACHER, is_trainable=False)
                model.set_adapter("default")
        else:
            lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=(t if isinstance(t := cfg.target_modules, str)
                                              else list(t)),
                              task_type="CAUSAL_LM")
            model = get_peft_model(base, lora)
        return tok, model

    def _groups_per_epoch(self, n_train: int, n_replay: int, n_general: int, world: int) -> int:
        cfg = self.config
        n = n_train + self._n_replay(n_train, n_replay) + self._n_general(n_train, n_general)
        micro = math.ceil(n / cfg.batch_size)
        return math.ceil(micro / (world * cfg.grad_accum))

    def _n_replay(self, n_train: int, n_replay: int) -> int:
        return min(n_replay, round(self.config.replay_ratio * n_train))

    def _n_general(self, n_train: int, n_general: int) -> int:
        return round(self.config.general_ratio * n_train) if n_general else 0

    def _epoch_groups(self, epoch: int, train: list[Encoded], replay: list[Encoded],
                      general: list[Encoded], world: int, rank: int
                      ) -> list[list[list[Encoded]]]:
        """This rank's optimizer steps of an epoch: lists of micro-batches (same count on
        every rank, so collective calls line up)."""
        cfg = self.config
        rng = random.Random(f"{cfg.seed}:{epoch}")
        items = list(train)
        items += rng.sample(replay, self._n_replay(len(train), len(replay)))
        items += [general[rng.randrange(len(general))]
                  for _ in range(self._n_general(len(train), len(general)))]
        rng.shuffle(items)
        micro = _micro_batches(items, cfg.batch_size, rng, cfg.group_by_length)
        per_epoch = math.ceil(len(micro) / (world * cfg.grad_accum))
        need = per_epoch * world * cfg.grad_accum
        micro += [micro[i % len(micro)] for i in range(need - len(micro))]  # wrap around
        mine = micro[rank::world]
        return [mine[i:i + cfg.grad_accum] for i in range(0, len(mine), cfg.grad_accum)]

    def _next_ewc(self, model: Any, train: list[Encoded], pad_id: int, acc: Any,
                  prior: EwcState | None, progress: Progress | None,
                  check: Callable[[], bool] = lambda: True) -> EwcState:
        """This cycle's Fisher, merged into the running one and anchored here."""
        cfg = self.config
        base = prior if prior is not None else EwcState(gamma=cfg.ewc_gamma)
        if cfg.fisher_samples == 0:
            return base
        if progress is not None:
            progress({"phase": "fisher", "samples": min(cfg.fisher_samples, len(train))})
        rng = random.Random(f"{cfg.seed}:fisher")
        sample = rng.sample(train, min(cfg.fisher_samples, len(train)))
        mine = sample[acc.process_index::acc.num_processes]
        batches = ({k: v.to(acc.device) for k, v in collate([e], pad_id).items()} for e in mine
                   if check())  # a stop raises before the next sample
        with acc.autocast():
            fisher = estimate_fisher(model, batches)
        if acc.num_processes > 1:  # mean per rank -> global mean
            for name, f in fisher.items():
                total = acc.reduce(f.to(acc.device) * len(mine), "sum")
                fisher[name] = (total / len(sample)).cpu()
        theta = {param_key(n): p.detach().cpu() for n, p in model.named_parameters()
                 if p.requires_grad}
        return base.merge(fisher, theta, cfg.ewc_gamma)


# -- helpers --------------------------------------------------------------------------------
def _accelerator(cfg: TrainConfig) -> Any:
    from accelerate import Accelerator

    from kinject.models import select_device, select_dtype

    device = select_device(cfg.device)
    mixed = "no"
    if device == "cuda":
        dtype = select_dtype(device, cfg.dtype)
        import torch

        mixed = "bf16" if dtype == torch.bfloat16 else "fp16" if dtype == torch.float16 else "no"
    return Accelerator(cpu=device == "cpu", mixed_precision=mixed)


def _general_example(text: str) -> TrainingExample:
    return TrainingExample(example_id=content_hash("general", text), chunk_id="general",
                           source_id="general", prompt="", completion=text, form="passage")


def _micro_batches(items: list[Encoded], size: int, rng: random.Random, by_length: bool,
                   window: int = 16) -> list[list[Encoded]]:
    """``items`` (already shuffled) cut into micro-batches of ``size``. ``by_length``: each
    window of ``window * size`` items is sorted by length before it is cut, then the batches
    are shuffled, so a batch holds examples of similar length (little padding) while the
    order stays random. The number of batches is the same either way."""
    if by_length:
        span = window * size
        items = [e for i in range(0, len(items), span)
                 for e in sorted(items[i:i + span], key=lambda e: len(e.input_ids))]
    micro = [items[i:i + size] for i in range(0, len(items), size)]
    if by_length:
        rng.shuffle(micro)
    return micro
