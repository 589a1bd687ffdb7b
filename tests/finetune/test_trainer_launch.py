"""The same training under `accelerate launch` with two CPU processes."""

import json
from pathlib import Path

import pytest
from _trainer_helpers import TEXTS, examples_of

from kinject.finetune.launch import launch_command, read_examples, run_launched, write_job
from kinject.finetune.trainer import TrainConfig


def test_a_job_file_round_trips_its_examples(tmp_path: Path) -> None:
    examples = examples_of(TEXTS)
    job = write_job(tmp_path / "job", base_model_dir=tmp_path / "base", out_dir=tmp_path / "out",
                    config=TrainConfig(epochs=1), train=examples, held_out=examples[:3],
                    general=["Water boils at one hundred degrees."])
    body = json.loads(job.read_text())
    assert read_examples(Path(body["train"])) == examples
    assert TrainConfig.from_dict(body["config"]) == TrainConfig(epochs=1)
    cmd = launch_command(job, 2)
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"] and "--num_processes" in cmd
    assert cmd[-3:] == ["kinject.finetune.launch", "--config", str(job)]


@pytest.mark.slow
def test_two_cpu_processes_train_one_adapter(tiny_lm_dir: Path, tmp_path: Path) -> None:
    examples = examples_of(TEXTS)
    cfg = TrainConfig(r=4, alpha=8, target_modules="all-linear", epochs=1, batch_size=4,
                      max_seq_len=96, fisher_samples=4, eval_every=2, checkpoint_every=2,
                      device="cpu")
    job = write_job(tmp_path / "job", base_model_dir=tiny_lm_dir, out_dir=tmp_path / "out",
                    config=cfg, train=examples, held_out=examples[:6])
    result = run_launched(job, num_processes=2, timeout_s=540,
                          env={"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert result["metrics"]["world_size"] == 2
    # each optimizer step took a batch on each process: half the single-process steps
    assert result["steps"] == -(-len(examples) // (2 * cfg.batch_size))
    adapter = Path(result["adapter_dir"])
    assert (adapter / "adapter_model.safetensors").is_file()
    assert (tmp_path / "out" / "ewc_state.safetensors").is_file()
    lines = (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()
    assert len([ln for ln in lines if '"kind": "step"' in ln]) == result["steps"]  # one writer
