"""``TrainConfig`` (what shapes a LoRA training run) and ``TrainResult`` (what one returns)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from kinject.config import FinetuneSettings
from kinject.finetune.ewc import EwcState
from kinject.prompting import CLOSED_BOOK_SYSTEM_PROMPT, SYSTEM_PROMPT

# The one source of the training defaults (a plain model: no environment is read here).
_FT = FinetuneSettings()


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run; saved inside every checkpoint and result.
    The defaults are ``Settings.finetune``'s (config/finetune.py), where each is justified."""

    r: int = _FT.lora_r
    alpha: int = _FT.lora_alpha
    dropout: float = _FT.lora_dropout
    target_modules: tuple[str, ...] | str = tuple(_FT.lora_targets)  # or "all-linear"
    lr: float = _FT.lr
    epochs: int = _FT.epochs
    batch_size: int = _FT.batch_size
    grad_accum: int = _FT.grad_accum
    max_seq_len: int = _FT.max_seq_len
    ewc_lambda: float = _FT.ewc_lambda
    ewc_gamma: float = _FT.ewc_gamma  # online EWC: the running Fisher decays by this per cycle
    # examples the Fisher is estimated on (0: no EWC state)
    fisher_samples: int = _FT.fisher_samples
    replay_ratio: float = _FT.replay_ratio
    general_ratio: float = _FT.general_ratio
    # KL(base || model) per general-text token, see kinject.finetune.kl
    kl_weight: float = _FT.kl_weight
    # the KL's teacher ("base" or "previous": the init adapter) and rows ("general" or
    # "general+replay"), see kinject.finetune.kl
    distill_teacher: str = _FT.distill_teacher
    distill_on: str = _FT.distill_on
    patience: int = _FT.patience
    # optimizer steps between held-out evaluations (also every epoch)
    eval_every: int = _FT.eval_every
    checkpoint_every: int = _FT.checkpoint_every  # optimizer steps between checkpoints
    warmup_steps: int = 10
    weight_decay: float = 0.0
    # Micro-batches of examples of similar length (shuffled windows, sorted inside): a batch
    # is padded to its longest example, and short questions beside long RAFT prompts would
    # cost about twice the compute in padding.
    group_by_length: bool = True
    max_grad_norm: float = 1.0
    seed: int = _FT.seed
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
        if self.distill_teacher not in ("base", "previous"):
            raise ValueError("distill_teacher must be 'base' or 'previous', got "
                             f"{self.distill_teacher!r}")
        if self.distill_on not in ("general", "general+replay"):
            raise ValueError("distill_on must be 'general' or 'general+replay', got "
                             f"{self.distill_on!r}")
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
        replay_ratio, general_ratio = ft.mix_ratios()  # data_mix, when set, decides them
        return cls(r=ft.lora_r, alpha=ft.lora_alpha, dropout=ft.lora_dropout,
                   target_modules="all-linear" if targets == ["all-linear"] else tuple(targets),
                   lr=ft.lr, epochs=ft.epochs, batch_size=ft.batch_size,
                   grad_accum=ft.grad_accum, max_seq_len=ft.max_seq_len,
                   ewc_lambda=ft.ewc_lambda, ewc_gamma=ft.ewc_gamma,
                   fisher_samples=ft.fisher_samples, replay_ratio=replay_ratio,
                   general_ratio=general_ratio, kl_weight=ft.kl_weight,
                   distill_teacher=ft.distill_teacher, distill_on=ft.distill_on,
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
