"""The training script ``accelerate launch`` runs: one cycle described by a job file.

::

    python -m kinject.finetune.launch --config job.json                 # one process
    accelerate launch --num_processes 2 --cpu -m kinject.finetune.launch --config job.json

Both run the same :class:`~kinject.finetune.trainer.LoraTrainer` loop (it is written against
accelerate's ``Accelerator``); with several processes each takes a share of every batch and
the gradients are averaged. The job file is JSON: the base model folder, the output folder,
the training config, the examples (JSON lines files), and optionally the adapter and EWC
state to start from. The main process writes ``<out_dir>/result.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kinject.finetune.ewc import EwcState
from kinject.finetune.trainer import LoraTrainer, TrainConfig, TrainingFailed, TrainResult
from kinject.types import TrainingExample

log = logging.getLogger(__name__)


def write_examples(path: Path, examples: Sequence[TrainingExample]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for e in examples:
            f.write(json.dumps(asdict(e), ensure_ascii=False) + "\n")
    return path


def read_examples(path: Path) -> list[TrainingExample]:
    with path.open(encoding="utf-8") as f:
        return [TrainingExample(**json.loads(line)) for line in f if line.strip()]


def write_job(job_dir: Path, *, base_model_dir: Path, out_dir: Path, config: TrainConfig,
              train: Sequence[TrainingExample], held_out: Sequence[TrainingExample] = (),
              replay: Sequence[TrainingExample] = (), general: Sequence[str] = (),
              init_adapter: Path | None = None, ewc_path: Path | None = None) -> Path:
    """Write a job (its examples as JSON lines beside it); returns the job file."""
    job_dir.mkdir(parents=True, exist_ok=True)
    job = {
        "base_model_dir": str(base_model_dir),
        "out_dir": str(out_dir),
        "config": config.to_dict(),
        "train": str(write_examples(job_dir / "train.jsonl", train)),
        "held_out": str(write_examples(job_dir / "held_out.jsonl", held_out)),
        "replay": str(write_examples(job_dir / "replay.jsonl", replay)),
        "general": list(general),
        "init_adapter": str(init_adapter) if init_adapter else None,
        "ewc": str(ewc_path) if ewc_path else None,
    }
    path = job_dir / "job.json"
    path.write_text(json.dumps(job, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def run_job(job_path: Path) -> TrainResult:
    job: dict[str, Any] = json.loads(Path(job_path).read_text(encoding="utf-8"))
    ewc = EwcState.load(Path(job["ewc"])) if job.get("ewc") else None
    trainer = LoraTrainer(TrainConfig.from_dict(job["config"]))
    return trainer.train(
        Path(job["base_model_dir"]),
        read_examples(Path(job["train"])),
        read_examples(Path(job["held_out"])),
        Path(job["out_dir"]),
        init_adapter=Path(job["init_adapter"]) if job.get("init_adapter") else None,
        ewc=ewc,
        replay=read_examples(Path(job["replay"])),
        general=job.get("general") or (),
    )


def launch_command(job_path: Path, num_processes: int = 2, cpu: bool = True) -> list[str]:
    """The ``accelerate launch`` command line for a job."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--num_processes", str(num_processes), "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no"]
    if num_processes > 1:
        # accelerate's --cpu launcher starts one process unless MPI is installed; its
        # torch.distributed launcher starts them all, and the trainer's Accelerator(cpu=True)
        # then joins them with the gloo backend.
        cmd.append("--multi_gpu")
    elif cpu:
        cmd.append("--cpu")
    return [*cmd, "-m", "kinject.finetune.launch", "--config", str(job_path)]


def run_launched(job_path: Path, num_processes: int = 2, cpu: bool = True,
                 timeout_s: float | None = None, env: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    """Run a job under ``accelerate launch`` and return its ``result.json``."""
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    run_env = {**os.environ, **(env or {})}
    if cpu:  # the trainer's device "auto" then picks the CPU even where a GPU is present
        run_env.update(ACCELERATE_USE_CPU="true", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(launch_command(job_path, num_processes, cpu), env=run_env,
                          capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise TrainingFailed(f"accelerate launch exited with {proc.returncode}: "
                             f"{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads((Path(job["out_dir"]) / "result.json").read_text())
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kinject.finetune.launch",
                                     description="Run one kinject fine-tuning job.")
    parser.add_argument("--config", required=True, type=Path, help="the job file (JSON)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    result = run_job(args.config)
    log.info("trained %d steps in %.1f s: adapter in %s", result.steps, result.seconds,
             result.adapter_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
