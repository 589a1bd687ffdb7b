"""Checkpoint I/O of a training run: the adapter, the best weights so far, AdamW's state, the
RNG and the loop position (safetensors + JSON, no pickle), written to a temp folder and renamed
into place, so a run that crashed resumes from the last complete checkpoint. The effective
config and a fingerprint of the run's inputs are saved inside: a checkpoint made for other
inputs or settings is ignored."""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from kinject.finetune.train_config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """Where a training run is: what a checkpoint restores."""

    step: int = 0
    epoch: int = 0
    group: int = 0  # optimizer steps done in the current epoch
    best: float = math.inf
    bad: int = 0
    stopped_early: bool = False
    tokens: int = 0
    first_held_out: float | None = None
    resumed_from: int | None = None


def adapter_weights(model: Any) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().clone() for k, v in get_peft_model_state_dict(model).items()}


def set_adapter_weights(model: Any, weights: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, weights)


def save_adapter(model: Any, target: Path) -> None:
    """PEFT's save_pretrained (safetensors), written beside and renamed into place."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def save_checkpoint(ckpt: Path, fingerprint: str, cfg: TrainConfig, state: LoopState,
                     model: Any, optimizer: Any, best: dict[str, torch.Tensor] | None,
                     acc: Any) -> None:
    import torch
    from safetensors.torch import save_file

    acc.wait_for_everyone()
    if acc.is_main_process:
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in adapter_weights(model).items()},
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


def load_checkpoint(ckpt: Path, fingerprint: str, model: Any, optimizer: Any
                     ) -> tuple[LoopState, dict[str, torch.Tensor] | None] | None:
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
    set_adapter_weights(model, load_file(str(ckpt / "adapter.safetensors")))
    tensors = load_file(str(ckpt / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    _load_optimizer_tensors(optimizer, tensors, saved["param_groups"])
    best = (load_file(str(ckpt / "best.safetensors"))
            if (ckpt / "best.safetensors").is_file() else None)
    loop = dict(saved["loop"])
    loop["best"] = math.inf if loop.get("best") is None else loop["best"]
    return LoopState(**loop), best


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


def trim_metrics(path: Path, step: int) -> None:
    """After a resume, the lines past the checkpoint are done again: drop the old ones."""
    if not path.is_file():
        return
    if step == 0:
        path.unlink()
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
