"""The training script ``accelerate launch`` runs: one cycle described by a job file.

::

    python -m kinject.finetune.launch --config job.json                 # one process
    accelerate launch --num_processes 2 --cpu -m kinject.finetune.launch --config job.json

Both run the same :class:`~kinject.finetune.trainer.LoraTrainer` loop (it is written against
accelerate's ``Accelerator``); with several processes each takes a share of every batch and
the gradients are averaged. The job file is JSON: the base model folder, the output folder,
the training config, the examples (JSON lines files), and optionally the adapter and EWC
state to start from, and which corpus chunks to paraphrase with the LM
(:class:`ParaphraseSpec`). The main process writes ``<out_dir>/result.json``.

LM paraphrases (``KINJECT_FINETUNE__LM_PARAPHRASES``) are not written into the job's
examples: the job carries where they come from, and :func:`run_job` hands the trainer the
same ``augment`` hook an in-process cycle does (:func:`~kinject.finetune.paraphrase.lm_augment`),
so there is one code path for the examples a cycle trains on. The main process writes the
paraphrases with the model it has loaded for training (on its GPU, once), caches them in the
corpus store, and saves what it added to ``<out_dir>/augmented.jsonl``, which the other
processes read (so the corpus file, like ``out_dir``, must be on a path every process
sees). Whatever keeps them from being written (no corpus, a tokenizer without a
chat template, settings asking for them but a job without the section) is logged as a warning.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinject.finetune.ewc import EwcState
from kinject.finetune.paraphrase import ParaphraseConfig
from kinject.finetune.trainer import (
    Augment,
    LoraTrainer,
    TrainConfig,
    TrainingFailed,
    TrainResult,
    read_examples,
    write_examples,
)
from kinject.types import TrainingExample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParaphraseSpec:
    """LM paraphrases for a job: the chunks that arrived in corpus cycles ``first_cycle`` to
    ``last_cycle`` of the corpus store at ``corpus`` (an in-process cycle paraphrases its new
    cycles), asked for as ``config`` says (``ParaphraseConfig.from_settings``)."""

    corpus: Path
    first_cycle: int
    last_cycle: int
    config: ParaphraseConfig

    def __post_init__(self) -> None:
        if not 1 <= self.first_cycle <= self.last_cycle:
            raise ValueError(f"need 1 <= first_cycle <= last_cycle, got {self.first_cycle!r}, "
                             f"{self.last_cycle!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"corpus": str(self.corpus), "first_cycle": self.first_cycle,
                "last_cycle": self.last_cycle, "config": self.config.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParaphraseSpec:
        return cls(Path(data["corpus"]), int(data["first_cycle"]), int(data["last_cycle"]),
                   ParaphraseConfig.from_dict(data["config"]))


def write_job(job_dir: Path, *, base_model_dir: Path, out_dir: Path, config: TrainConfig,
              train: Sequence[TrainingExample], held_out: Sequence[TrainingExample] = (),
              replay: Sequence[TrainingExample] = (), general: Sequence[str] = (),
              init_adapter: Path | None = None, ewc_path: Path | None = None,
              paraphrase: ParaphraseSpec | None = None) -> Path:
    """Write a job (its examples as JSON lines beside it); returns the job file. With
    ``paraphrase`` the job also trains on LM paraphrases of those chunks (see the module)."""
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
        "paraphrase": paraphrase.to_dict() if paraphrase is not None else None,
    }
    path = job_dir / "job.json"
    path.write_text(json.dumps(job, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def run_job(job_path: Path) -> TrainResult:
    """Train the job in this process (one of several under ``accelerate launch``)."""
    job: dict[str, Any] = json.loads(Path(job_path).read_text(encoding="utf-8"))
    ewc = EwcState.load(Path(job["ewc"])) if job.get("ewc") else None
    trainer = LoraTrainer(TrainConfig.from_dict(job["config"]))
    spec = ParaphraseSpec.from_dict(job["paraphrase"]) if job.get("paraphrase") else None
    with _paraphrases(spec) as augment:
        return trainer.train(
            Path(job["base_model_dir"]),
            read_examples(Path(job["train"])),
            read_examples(Path(job["held_out"])),
            Path(job["out_dir"]),
            init_adapter=Path(job["init_adapter"]) if job.get("init_adapter") else None,
            ewc=ewc,
            replay=read_examples(Path(job["replay"])),
            general=job.get("general") or (),
            augment=augment,
        )


@contextmanager
def _paraphrases(spec: ParaphraseSpec | None) -> Iterator[Augment | None]:
    """The trainer's ``augment`` hook for a job's paraphrase section (None: none asked for),
    with its corpus store open while training runs."""
    if spec is None or spec.config.per_sentence <= 0:
        yield None
        return
    if not spec.corpus.is_file():
        log.warning("the job asks for %d LM paraphrase(s) per sentence but its corpus %s does "
                    "not exist: training without LM paraphrases", spec.config.per_sentence,
                    spec.corpus)
        yield None
        return
    from kinject.finetune.corpus import CorpusStore
    from kinject.finetune.paraphrase import lm_augment

    with CorpusStore(spec.corpus) as corpus:
        chunks = corpus.chunks(cycles=range(spec.first_cycle, spec.last_cycle + 1))
        if not chunks:
            log.warning("the job asks for LM paraphrases of corpus cycles %d..%d but %s holds "
                        "no chunks of them: training without LM paraphrases", spec.first_cycle,
                        spec.last_cycle, spec.corpus)
        yield lm_augment(corpus, chunks, spec.config)


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
    _warn_unasked_paraphrases(args.config)
    try:
        result = run_job(args.config)
    finally:
        _end_process_group()
    log.info("trained %d steps in %.1f s: adapter in %s", result.steps, result.seconds,
             result.adapter_dir)
    return 0


def _end_process_group() -> None:
    """Take the process group down before the interpreter exits. Left to exit, each rank's
    gloo threads can outlive the other rank's sockets and abort the process (SIGABRT) after
    the work is done, which the launcher reports as a failed job."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _warn_unasked_paraphrases(job_path: Path) -> None:
    """Settings that ask for LM paraphrases do not reach a job file written without its
    paraphrase section: say so rather than train without them in silence."""
    from kinject.config import load_settings
    from kinject.errors import KinjectError

    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    if job.get("paraphrase") or os.environ.get("RANK", "0") != "0":  # once, not per process
        return
    try:
        wanted = load_settings(os.environ.get("KINJECT_CONFIG")).finetune.lm_paraphrases
    except KinjectError as exc:
        log.debug("no kinject settings to compare the job with: %s", exc)
        return
    if wanted > 0:
        log.warning("settings ask for %d LM paraphrase(s) per sentence but the job %s has no "
                    "paraphrase section (write_job(paraphrase=ParaphraseSpec(...))): training "
                    "without LM paraphrases", wanted, job_path)


if __name__ == "__main__":
    raise SystemExit(main())
