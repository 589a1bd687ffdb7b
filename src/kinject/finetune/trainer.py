"""LoraTrainer: one fine-tuning cycle of a PEFT LoRA adapter, with online EWC and replay.

One readable loop, driven by accelerate's ``Accelerator`` so the same code runs in one
process (CPU by default, CUDA with bf16 when present) and under
``accelerate launch --num_processes 2 --cpu`` (see :mod:`kinject.finetune.launch`).

- Data per epoch: this cycle's examples, plus ``replay_ratio * len(train)`` examples drawn
  from the replay list and ``general_ratio * len(train)`` general texts, shuffled by
  ``(seed, epoch)``; every rank takes its share of the micro-batches.
- Loss: the answer tokens only for question-answer, cloze and RAFT examples (the prompt is
  masked), the whole text for passages; on general-text rows, ``kl_weight`` times the KL
  divergence from the base model's next-token distribution per token
  (:mod:`kinject.finetune.kl`); plus the EWC penalty once per optimizer step.
- Early stopping on the held-out loss (``patience`` evaluations without improvement); the
  best adapter is what comes out.
- Checkpoints every ``checkpoint_every`` optimizer steps hold the adapter, the optimizer,
  the RNG and the loop position (safetensors + JSON, written to a temp folder and renamed):
  a run that crashed resumes from the last one when called again with the same inputs.
- ``out_dir/metrics.jsonl``: a JSON line per optimizer step and per evaluation.
- ``should_stop`` (optional) is asked before every optimizer step: when it says yes the run
  saves a checkpoint (when checkpoints are on) and raises ``Cancelled``, returning nothing.
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
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from kinject.errors import Cancelled, KinjectError
from kinject.finetune.batches import Encoded, collate, encode
from kinject.finetune.corpus import CorpusStore
from kinject.finetune.ewc import EwcPenalty, EwcState, estimate_fisher, param_key
from kinject.finetune.kl import base_kl
from kinject.prompting import CLOSED_BOOK_SYSTEM_PROMPT, SYSTEM_PROMPT
from kinject.types import TrainingExample, content_hash

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
AUGMENTED_FILE = "augmented.jsonl"  # the examples ``augment`` added (see LoraTrainer.train)
EWC_FILE = "ewc_state.safetensors"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
Progress = Callable[[dict[str, Any]], None]
# (tokenizer, model) -> extra training examples, see LoraTrainer.train
Augment = Callable[[Any, Any], Sequence[TrainingExample]]


class TrainingFailed(KinjectError):
    """A training cycle could not run (bad inputs, a model that cannot be loaded)."""

    code = "training_failed"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run; saved inside every checkpoint and result."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.1
    target_modules: tuple[str, ...] | str = ("q_proj", "v_proj")  # or "all-linear"
    lr: float = 1e-3
    epochs: int = 3
    batch_size: int = 8
    grad_accum: int = 1
    max_seq_len: int = 256
    ewc_lambda: float = 0.03
    ewc_gamma: float = 0.9  # online EWC: the running Fisher decays by this per cycle
    fisher_samples: int = 64  # examples the Fisher is estimated on (0: no EWC state)
    replay_ratio: float = 0.25
    general_ratio: float = 0.05
    kl_weight: float = 1.0  # KL(base || model) per general-text token, see kinject.finetune.kl
    patience: int = 3
    eval_every: int = 50  # optimizer steps between held-out evaluations (also every epoch)
    checkpoint_every: int = 50  # optimizer steps between checkpoints
    warmup_steps: int = 10
    weight_decay: float = 0.0
    # Micro-batches of examples of similar length (shuffled windows, sorted inside): a batch
    # is padded to its longest example, and short questions beside long RAFT prompts would
    # cost about twice the compute in padding.
    group_by_length: bool = True
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda
    dtype: str = "auto"  # auto, float32, bfloat16, float16
    # System prompts of question and RAFT examples: train in the prompt the model is asked in
    # (closed-book questions and the RAG reader, kinject.prompting). Empty: no system turn.
    qa_system: str = CLOSED_BOOK_SYSTEM_PROMPT
    raft_system: str = SYSTEM_PROMPT

    def __post_init__(self) -> None:
        ints = {"r": 1, "alpha": 1, "epochs": 1, "batch_size": 1, "grad_accum": 1,
                "max_seq_len": 8, "patience": 1, "eval_every": 0, "checkpoint_every": 0,
                "warmup_steps": 0, "fisher_samples": 0}
        for name, low in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name in ("dropout", "replay_ratio", "general_ratio"):
            value = getattr(self, name)
            if not 0.0 <= value <= (0.9 if name == "dropout" else 10.0):
                raise ValueError(f"{name} out of range: {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0.0 <= self.kl_weight <= 100.0:
            raise ValueError(f"kl_weight must be in [0, 100], got {self.kl_weight!r}")
        if self.ewc_lambda < 0:
            raise ValueError(f"ewc_lambda must be >= 0, got {self.ewc_lambda!r}")
        if not 0.0 < self.ewc_gamma <= 1.0:
            raise ValueError(f"ewc_gamma must be in (0, 1], got {self.ewc_gamma!r}")
        if isinstance(self.target_modules, str):
            if self.target_modules != "all-linear":
                raise ValueError("target_modules must be 'all-linear' or a list of module "
                                 f"names, got {self.target_modules!r}")
        else:
            mods = tuple(self.target_modules)
            if not mods or not all(isinstance(m, str) and m for m in mods):
                raise ValueError(f"target_modules must name modules, got {mods!r}")
            object.__setattr__(self, "target_modules", mods)
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ValueError(f"device must be auto, cpu, cuda or mps, got {self.device!r}")
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got "
                             f"{self.dtype!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not isinstance(self.target_modules, str):
            d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_settings(cls, ft: Any, device: str = "auto", dtype: str = "auto") -> TrainConfig:
        """From ``Settings.finetune`` (and ``Settings.models`` device and dtype)."""
        targets = list(ft.lora_targets)
        return cls(r=ft.lora_r, alpha=ft.lora_alpha, dropout=ft.lora_dropout,
                   target_modules="all-linear" if targets == ["all-linear"] else tuple(targets),
                   lr=ft.lr, epochs=ft.epochs, batch_size=ft.batch_size,
                   grad_accum=ft.grad_accum, max_seq_len=ft.max_seq_len,
                   ewc_lambda=ft.ewc_lambda, ewc_gamma=ft.ewc_gamma,
                   fisher_samples=ft.fisher_samples, replay_ratio=ft.replay_ratio,
                   general_ratio=ft.general_ratio, kl_weight=ft.kl_weight,
                   patience=ft.patience,
                   eval_every=ft.eval_every, checkpoint_every=ft.checkpoint_every,
                   seed=ft.seed, device=device, dtype=dtype)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(sorted(unknown))}")
        data = dict(data)
        if isinstance(data.get("target_modules"), list):
            data["target_modules"] = tuple(data["target_modules"])
        return cls(**data)


@dataclass
class TrainResult:
    adapter_dir: Path
    metrics: dict[str, Any]
    ewc: EwcState
    steps: int
    seconds: float
    tokens_per_s: float
    step_time_s: float  # median seconds per optimizer step
    ewc_path: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class _LoopState:
    step: int = 0
    epoch: int = 0
    group: int = 0  # optimizer steps done in the current epoch
    best: float = math.inf
    bad: int = 0
    stopped_early: bool = False
    tokens: int = 0
    first_held_out: float | None = None
    resumed_from: int | None = None


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
        before training starts and returns more training examples (LM paraphrases,
        :mod:`kinject.finetune.paraphrase`): the model is loaded once for both. Only the main
        process calls it; what it returns is written to ``out_dir/augmented.jsonl`` and every
        other process reads that file, so all ranks train on the same examples.
        ``should_stop`` is asked before every optimizer step and before the Fisher estimate;
        a yes raises ``Cancelled`` (one process only: ranks of a launched run would each
        have to agree, so ``kinject.finetune.launch`` does not pass it)."""
        import torch

        cfg = self.config
        if not train:
            raise TrainingFailed("nothing to train on: the training set is empty")
        started = time.perf_counter()
        out_dir = Path(out_dir)
        acc = _accelerator(cfg)
        main = acc.is_main_process
        if main:
            out_dir.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(cfg.seed)
        tok, model = self._load(Path(base_model_dir), init_adapter, acc)
        augmented: list[TrainingExample] = []
        if augment is not None:
            have = {e.example_id for e in train}
            augmented = [e for e in _augment(augment, tok, model, out_dir / AUGMENTED_FILE, acc)
                         if e.example_id not in have]
            train = [*train, *augmented]
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)

        def enc(e: TrainingExample) -> Encoded:
            return encode(tok, e, cfg.max_seq_len, cfg.qa_system, cfg.raft_system)

        train_enc = [enc(e) for e in train]
        replay_enc = [enc(e) for e in replay]
        general_enc = [enc(_general_example(t)) for t in general]
        # general-text rows of a micro-batch get the KL term (the very objects: see below)
        general_ids = {id(e) for e in general_enc} if cfg.kl_weight > 0 else set()
        held_enc = [enc(e) for e in held_out]
        fingerprint = content_hash(
            json.dumps(cfg.to_dict(), sort_keys=True), str(Path(base_model_dir).resolve()),
            str(init_adapter or ""), CorpusStore.manifest(train), CorpusStore.manifest(held_out),
            CorpusStore.manifest(replay), *general, str(ewc.cycles if ewc else -1),
            str(acc.num_processes))

        state = _LoopState()
        ckpt = out_dir / CHECKPOINT_DIR
        best_weights: dict[str, torch.Tensor] | None = None
        resumed = _load_checkpoint(ckpt, fingerprint, model, optimizer)
        if resumed is not None:
            state, best_weights = resumed
            state.resumed_from = state.step
            log.info("resuming training from the checkpoint at step %d", state.step)
        if main:
            _trim_metrics(out_dir / METRICS_FILE, state.step)
        acc.wait_for_everyone()

        model, optimizer = acc.prepare(model, optimizer)
        unwrapped = acc.unwrap_model(model)
        penalty = None
        if ewc is not None and not ewc.empty and cfg.ewc_lambda > 0:
            penalty = EwcPenalty(ewc, unwrapped.named_parameters(), cfg.ewc_lambda)
        pad_id = tok.pad_token_id
        per_epoch = self._groups_per_epoch(len(train_enc), len(replay_enc), len(general_enc),
                                           acc.num_processes)
        total_steps = cfg.epochs * per_epoch
        step_times: list[float] = []
        emit = _Emitter(out_dir / METRICS_FILE if main else None, progress, total_steps)

        def stop_here() -> NoReturn:
            if cfg.checkpoint_every and state.step > 0:  # a rerun resumes from here
                _save_checkpoint(ckpt, fingerprint, cfg, state, unwrapped, optimizer,
                                 best_weights, acc)
            raise Cancelled(f"training stopped at step {state.step} of {total_steps}")

        model.train()
        while state.epoch < cfg.epochs and not state.stopped_early:
            groups = self._epoch_groups(state.epoch, train_enc, replay_enc, general_enc,
                                        acc.num_processes, acc.process_index)
            for g in range(state.group, len(groups)):
                if should_stop is not None and should_stop():
                    stop_here()
                t0 = time.perf_counter()
                loss_sum, pen_value, tokens = 0.0, 0.0, 0
                kl_sum, kl_tokens = 0.0, 0
                group = groups[g]
                for i, items in enumerate(group):
                    batch = {k: v.to(acc.device) for k, v in collate(items, pad_id).items()}
                    rows = [j for j, e in enumerate(items) if id(e) in general_ids]
                    last = i == len(group) - 1
                    with (nullcontext() if last else acc.no_sync(model)), acc.autocast():
                        out = model(**batch)
                        lm_loss = out.loss / len(group)
                        loss = lm_loss
                        if rows:
                            kl, n_kl = base_kl(unwrapped, out.logits, batch["input_ids"],
                                               batch["attention_mask"], rows)
                            # per token, on the LM loss's scale (its mean over learnt tokens)
                            learnt = (batch["labels"][:, 1:] != -100).sum().clamp(min=1)
                            loss = loss + cfg.kl_weight * kl / learnt / len(group)
                            kl_sum += float(kl.detach())
                            kl_tokens += n_kl
                        if last and penalty is not None:
                            pen = penalty()
                            loss = loss + pen
                            pen_value = float(pen.detach())
                    acc.backward(loss)
                    # this is a CPU-GPU sync point, once per micro-batch
                    loss_sum += float(lm_loss.detach())
                    tokens += int(batch["attention_mask"].sum())
                if cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(trainable, cfg.max_grad_norm)
                for pg in optimizer.param_groups:
                    pg["lr"] = _lr(cfg, state.step, total_steps)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                state.group = g + 1
                state.tokens += tokens * acc.num_processes
                dt = time.perf_counter() - t0
                step_times.append(dt)
                emit.step(state, loss_sum, pen_value, tokens * acc.num_processes, dt,
                          _lr(cfg, state.step - 1, total_steps),
                          kl_sum / kl_tokens if kl_tokens else 0.0)
                end_of_epoch = g == len(groups) - 1
                if held_enc and ((cfg.eval_every and state.step % cfg.eval_every == 0)
                                 or end_of_epoch):
                    held = self._held_out_loss(unwrapped, held_enc, pad_id, acc)
                    model.train()
                    if state.first_held_out is None:
                        state.first_held_out = held
                    if held < state.best:
                        state.best, state.bad = held, 0
                        best_weights = _adapter_weights(unwrapped)
                    else:
                        state.bad += 1
                        state.stopped_early = state.bad >= cfg.patience
                    emit.eval(state, held)
                if end_of_epoch:
                    state.epoch, state.group = state.epoch + 1, 0
                if cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0:
                    _save_checkpoint(ckpt, fingerprint, cfg, state, unwrapped, optimizer,
                                     best_weights, acc)
                if progress is not None:
                    progress({"phase": "train", "step": state.step, "total_steps": total_steps,
                              "epoch": state.epoch, "loss": loss_sum,
                              "held_out_loss": None if math.isinf(state.best) else state.best})
                if state.stopped_early:
                    log.info("early stop at step %d: held-out loss did not improve for %d "
                             "evaluations (best %.4f)", state.step, cfg.patience, state.best)
                    break

        if best_weights is not None:
            _set_adapter_weights(unwrapped, best_weights)
        unwrapped.eval()
        if should_stop is not None and should_stop():
            stop_here()
        new_ewc = self._next_ewc(unwrapped, train_enc, pad_id, acc, ewc, progress)
        adapter_dir = out_dir / ADAPTER_DIR
        ewc_path = out_dir / EWC_FILE
        seconds = time.perf_counter() - started
        train_seconds = sum(step_times)
        metrics: dict[str, Any] = {
            "steps": state.step,
            "total_steps": total_steps,
            "epochs_run": state.epoch,
            "stopped_early": state.stopped_early,
            "held_out_loss_first": state.first_held_out,
            "held_out_loss_best": None if math.isinf(state.best) else state.best,
            "tokens": state.tokens,
            "train_examples": len(train),
            "augmented_examples": len(augmented),
            "examples_per_epoch": len(train) + self._n_replay(len(train), len(replay))
            + self._n_general(len(train), len(general)),
            "replay_available": len(replay),
            "general_available": len(general),
            "resumed_from_step": state.resumed_from,
            "ewc_cycles": new_ewc.cycles,
            "world_size": acc.num_processes,
            "device": str(acc.device),
        }
        result = TrainResult(
            adapter_dir=adapter_dir, metrics=metrics, ewc=new_ewc, steps=state.step,
            seconds=seconds,
            tokens_per_s=state.tokens / train_seconds if train_seconds > 0 else 0.0,
            step_time_s=statistics.median(step_times) if step_times else 0.0,
            ewc_path=ewc_path if not new_ewc.empty else None, config=cfg.to_dict())
        if main:
            _save_adapter(unwrapped, adapter_dir)
            if not new_ewc.empty:
                new_ewc.save(ewc_path)
            (out_dir / "result.json").write_text(json.dumps(
                {"adapter_dir": str(adapter_dir), "metrics": metrics, "steps": state.step,
                 "seconds": seconds, "tokens_per_s": result.tokens_per_s,
                 "step_time_s": result.step_time_s, "config": cfg.to_dict(),
                 "ewc_path": str(result.ewc_path) if result.ewc_path else None},
                indent=2), encoding="utf-8")
            shutil.rmtree(ckpt, ignore_errors=True)
        acc.wait_for_everyone()
        return result

    # -- parts ----------------------------------------------------------------------------
    def _load(self, base_model_dir: Path, init_adapter: Path | None, acc: Any) -> tuple[Any, Any]:
        from peft import LoraConfig, PeftModel, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from kinject.models import select_dtype

        cfg = self.config
        if not (base_model_dir / "config.json").is_file():
            raise TrainingFailed(f"{base_model_dir} is not a transformers model folder "
                                 "(no config.json)")
        tok = AutoTokenizer.from_pretrained(base_model_dir)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        dtype = select_dtype(acc.device.type, cfg.dtype)
        base = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=dtype)
        base.config.use_cache = False
        if init_adapter is not None:
            model = PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True)
        else:
            lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=(cfg.target_modules
                                              if isinstance(cfg.target_modules, str)
                                              else list(cfg.target_modules)),
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

    def _held_out_loss(self, model: Any, held: list[Encoded], pad_id: int, acc: Any) -> float:
        """Token-weighted mean loss on the held-out examples (each rank takes a share)."""
        import torch

        model.eval()
        loss_sum = torch.zeros((), device=acc.device, dtype=torch.float64)
        count = torch.zeros((), device=acc.device, dtype=torch.float64)
        mine = held[acc.process_index::acc.num_processes]
        bs = self.config.batch_size
        with torch.no_grad(), acc.autocast():
            for i in range(0, len(mine), bs):
                batch = {k: v.to(acc.device) for k, v in collate(mine[i:i + bs], pad_id).items()}
                logits = model(input_ids=batch["input_ids"],
                               attention_mask=batch["attention_mask"]).logits
                labels = batch["labels"][:, 1:]
                loss_sum += torch.nn.functional.cross_entropy(
                    logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                    ignore_index=-100, reduction="sum").double()
                count += (labels != -100).sum().double()
        loss_sum, count = acc.reduce(loss_sum, "sum"), acc.reduce(count, "sum")
        return float(loss_sum / count.clamp(min=1))

    def _next_ewc(self, model: Any, train: list[Encoded], pad_id: int, acc: Any,
                  prior: EwcState | None, progress: Progress | None) -> EwcState:
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
        batches = ({k: v.to(acc.device) for k, v in collate([e], pad_id).items()} for e in mine)
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
def write_examples(path: Path, examples: Sequence[TrainingExample]) -> Path:
    """Training examples as JSON lines (a job's inputs, what ``augment`` added)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(asdict(e), ensure_ascii=False) + "\n")
    return path


def read_examples(path: Path) -> list[TrainingExample]:
    with path.open(encoding="utf-8") as f:
        return [TrainingExample(**json.loads(line)) for line in f if line.strip()]


def _augment(augment: Augment, tok: Any, model: Any, path: Path, acc: Any
             ) -> list[TrainingExample]:
    """The examples ``augment`` adds, the same on every rank: the main process calls it and
    writes them to ``path``; the others wait and read that file (calling it themselves, they
    could sample other paraphrases, or none for a chunk deleted meanwhile, and their batches
    would no longer line up)."""
    if acc.is_main_process:
        write_examples(path, list(augment(tok, model)))
    acc.wait_for_everyone()
    return read_examples(path)


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


def _lr(cfg: TrainConfig, step: int, total: int) -> float:
    """Linear warm-up, then linear decay to a tenth of ``lr``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(total - cfg.warmup_steps, 1)
    done = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.lr * (1.0 - 0.9 * done)


def _adapter_weights(model: Any) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def _set_adapter_weights(model: Any, weights: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, weights)


def _save_adapter(model: Any, target: Path) -> None:
    """PEFT's save_pretrained (safetensors), written beside and renamed into place."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def _save_checkpoint(ckpt: Path, fingerprint: str, cfg: TrainConfig, state: _LoopState,
                     model: Any, optimizer: Any, best: dict[str, torch.Tensor] | None,
                     acc: Any) -> None:
    import torch
    from safetensors.torch import save_file

    acc.wait_for_everyone()
    if acc.is_main_process:
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in _adapter_weights(model).items()},
                  str(tmp / "adapter.safetensors"))
        if best is not None:
            save_file({k: v.contiguous() for k, v in best.items()}, str(tmp / "best.safetensors"))
        tensors, groups = _optimizer_tensors(optimizer)
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps({
            "fingerprint": fingerprint, "config": cfg.to_dict(), "param_groups": groups,
            "loop": {**asdict(state), "best": None if math.isinf(state.best) else state.best},
        }, indent=2), encoding="utf-8")
        old = ckpt.with_name(ckpt.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if ckpt.exists():
            ckpt.rename(old)
        tmp.rename(ckpt)
        shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def _load_checkpoint(ckpt: Path, fingerprint: str, model: Any, optimizer: Any
                     ) -> tuple[_LoopState, dict[str, torch.Tensor] | None] | None:
    import torch
    from safetensors.torch import load_file

    if not (ckpt / "state.json").is_file():
        old = ckpt.with_name(ckpt.name + ".old")  # a crash between the two renames
        if not (old / "state.json").is_file():
            return None
        ckpt = old
    saved = json.loads((ckpt / "state.json").read_text(encoding="utf-8"))
    if saved.get("fingerprint") != fingerprint:
        log.warning("ignoring the checkpoint in %s: it was made for other inputs or settings",
                    ckpt)
        return None
    _set_adapter_weights(model, load_file(str(ckpt / "adapter.safetensors")))
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    _load_optimizer_tensors(optimizer, tensors, saved["param_groups"])
    best = (load_file(str(ckpt / "best.safetensors"))
            if (ckpt / "best.safetensors").is_file() else None)
    loop = dict(saved["loop"])
    loop["best"] = math.inf if loop.get("best") is None else loop["best"]
    return _LoopState(**loop), best


def _optimizer_tensors(optimizer: Any) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """AdamW's state as flat tensors (safetensors) and its param groups as JSON: no pickle."""
    import torch

    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            t = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"state.{idx}.{key}"] = t.detach().cpu().contiguous()
    groups = [{k: v for k, v in g.items() if isinstance(v, int | float | bool | str | list
                                                        | tuple | type(None))}
              for g in sd["param_groups"]]
    return tensors, groups


def _load_optimizer_tensors(optimizer: Any, tensors: dict[str, torch.Tensor],
                            groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = t
    current = optimizer.state_dict()
    merged_groups = [{**cur, **{k: (tuple(v) if isinstance(v, list) and k == "betas" else v)
                                for k, v in saved.items()}}
                     for cur, saved in zip(current["param_groups"], groups, strict=True)]
    optimizer.load_state_dict({"state": state, "param_groups": merged_groups})


def _trim_metrics(path: Path, step: int) -> None:
    """After a resume, the lines past the checkpoint are done again: drop the old ones."""
    if not path.is_file():
        return
    if step == 0:
        path.unlink()
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


class _Emitter:
    """Metrics as JSON lines (main process only)."""

    def __init__(self, path: Path | None, progress: Progress | None, total: int) -> None:
        self.path = path
        self.total = total

    def _write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def step(self, state: _LoopState, loss: float, ewc: float, tokens: int, seconds: float,
             lr: float, kl: float = 0.0) -> None:
        # kl: mean KL(base || model) per general-text token of this step (0: none or off)
        self._write({"kind": "step", "step": state.step, "epoch": state.epoch, "loss": loss,
                     "ewc_penalty": ewc, "kl": kl, "lr": lr, "tokens": tokens,
                     "step_time_s": seconds, "time": time.time()})

    def eval(self, state: _LoopState, held: float) -> None:
        self._write({"kind": "eval", "step": state.step, "epoch": state.epoch,
                     "held_out_loss": held, "best": state.best, "bad": state.bad,
                     "time": time.time()})
