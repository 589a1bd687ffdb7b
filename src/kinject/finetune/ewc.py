"""Online EWC over a LoRA adapter's parameters (Schwarz et al. 2018, "online EWC").

After each cycle the diagonal of the empirical Fisher (mean squared per-example gradient of
the loss) is estimated on that cycle's data and merged into a running Fisher,
``F <- gamma * F + F_cycle``, with the parameters ``theta_prev`` at the end of the cycle. The
next cycle adds ``(lambda / 2) * sum(F * (theta - theta_prev) ** 2)`` to its loss.

The Fisher is used scaled to mean 1 (``F / mean(F)``), so ``lambda`` does not depend on the
scale of the loss or the size of the adapter: ``lambda = 1`` weighs an average parameter's
squared drift like an L2 penalty of strength 1.

Saved and loaded as one safetensors file (``fisher.<name>``, ``theta.<name>`` tensors, and
the cycle count and gamma in its metadata). Never pickled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def param_key(name: str) -> str:
    """A parameter's name without the wrappers that differ between runs (DDP's ``module.``,
    PEFT's ``base_model.model.``)."""
    for prefix in ("module.", "base_model.model."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name


@dataclass
class EwcState:
    """The running Fisher diagonal and the parameters it is anchored at (CPU tensors)."""

    fisher: dict[str, torch.Tensor] = field(default_factory=dict)
    theta: dict[str, torch.Tensor] = field(default_factory=dict)
    cycles: int = 0
    gamma: float = 1.0

    def __post_init__(self) -> None:
        if set(self.fisher) != set(self.theta):
            raise ValueError("fisher and theta must name the same parameters")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")

    @property
    def empty(self) -> bool:
        return not self.fisher

    def merge(self, fisher_cycle: dict[str, torch.Tensor], theta: dict[str, torch.Tensor],
              gamma: float | None = None) -> EwcState:
        """A new state: ``gamma * F + F_cycle``, anchored at ``theta`` (this cycle's end)."""
        g = self.gamma if gamma is None else gamma
        merged = {}
        for name, f in fisher_cycle.items():
            old = self.fisher.get(name)
            f = f.detach().float().cpu()
            merged[name] = f if old is None or old.shape != f.shape else g * old + f
        return EwcState(merged, {k: theta[k].detach().float().cpu().clone() for k in merged},
                        self.cycles + 1, g)

    def save(self, path: Path) -> Path:
        from safetensors.torch import save_file

        tensors = {f"fisher.{k}": v.contiguous() for k, v in self.fisher.items()}
        tensors.update({f"theta.{k}": v.contiguous() for k, v in self.theta.items()})
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"cycles": str(self.cycles),
                                               "gamma": repr(self.gamma)})
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> EwcState:
        from safetensors import safe_open

        fisher: dict[str, torch.Tensor] = {}
        theta: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                kind, _, name = key.partition(".")
                (fisher if kind == "fisher" else theta)[name] = f.get_tensor(key)
        return cls(fisher, theta, int(meta.get("cycles", "1")), float(meta.get("gamma", "1.0")))


class EwcPenalty:
    """``(lambda / 2) * sum(F * (theta - theta_prev) ** 2)`` over the live parameters.

    Built once per training run: the Fisher (scaled to mean 1) and the anchor are moved to
    the parameters' device and paired with them, so a step costs a few fused tensor ops
    per parameter tensor and no Python loop over elements.
    """

    def __init__(self, state: EwcState, named_params: Iterable[tuple[str, torch.Tensor]],
                 lam: float) -> None:
        import torch

        self.lam = float(lam)
        live = {param_key(n): p for n, p in named_params if p.requires_grad}
        names = [n for n in state.fisher if n in live and live[n].shape == state.fisher[n].shape]
        missing = len(state.fisher) - len(names)
        if missing:
            log.warning("EWC: %d of %d anchored parameters are not in this adapter (another "
                        "target set?); they are not held", missing, len(state.fisher))
        total = sum(float(state.fisher[n].sum()) for n in names)
        count = sum(state.fisher[n].numel() for n in names)
        scale = count / total if total > 0 else 0.0
        self.params = [live[n] for n in names]
        self.fisher = [(state.fisher[n] * scale).to(live[n].device, torch.float32)
                       for n in names]
        self.theta = [state.theta[n].to(live[n].device, torch.float32) for n in names]

    @property
    def active(self) -> bool:
        return self.lam > 0 and bool(self.params)

    def __call__(self) -> torch.Tensor:
        import torch

        if not self.params:
            return torch.zeros(())
        diffs = torch._foreach_sub([p.float() for p in self.params], self.theta)
        sq = torch._foreach_mul(diffs, diffs)
        weighted = torch._foreach_mul(sq, self.fisher)
        total = torch.stack([w.sum() for w in weighted]).sum()
        return 0.5 * self.lam * total


def estimate_fisher(model: torch.nn.Module, batches: Iterable[dict[str, torch.Tensor]]
                    ) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher of the trainable parameters: the mean over ``batches``
    (one example each) of the squared gradient of the loss."""
    import torch

    params = {param_key(n): p for n, p in model.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = 0
    was_training = model.training
    model.eval()  # dropout off: the Fisher of the model as it will serve
    try:
        for batch in batches:
            model.zero_grad(set_to_none=True)
            out = model(**batch)
            out.loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    sums[n].add_(p.grad.detach().float().pow(2))
            count += 1
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return {n: (s / max(count, 1)).cpu() for n, s in sums.items()}
