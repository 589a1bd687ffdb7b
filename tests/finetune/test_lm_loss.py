"""The training step's loss without the full logits (finetune/lm_loss.py, TrainRun.step):
the same loss and gradients as the full-logits computation, for less memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _trainer_helpers import TEXTS, examples_of, make_sharp_lm

from kinject.finetune import train_run
from kinject.finetune.batches import collate
from kinject.finetune.kl import teacher_kl
from kinject.finetune.lm_loss import output_layer
from kinject.finetune.train_run import split_rows
from kinject.finetune.trainer import LoraTrainer, TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")

GENERAL = [
    "Water boils at one hundred degrees Celsius at sea level.",
    "The Marrow Institute was founded in 1987 and answers questions.",
    "马罗研究所成立于1987年。",
]


@pytest.fixture(scope="module")
def sharp_lm_dir(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sharp_lm(tiny_lm_dir, tmp_path_factory.mktemp("sharp-lm"))


def _run(model_dir: Path, out: Path, kl_weight: float = 1.0) -> Any:
    """A prepared run (no dropout, so two computations see the same model) whose adapter
    has moved away from the base model, so the KL term and its gradient are not zero."""
    import torch

    cfg = TrainConfig(target_modules="all-linear", dropout=0.0, batch_size=8, max_seq_len=64,
                      kl_weight=kl_weight, fisher_samples=0, epochs=1, eval_every=0,
                      checkpoint_every=0, device="cpu")
    examples = examples_of(TEXTS)
    run, _ = LoraTrainer(cfg)._prepare(model_dir, examples, examples[:4], out, None, None, [],
                                       GENERAL, None)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in run.unwrapped.named_parameters():
            if p.requires_grad and "lora_B" in name:
                p.normal_(0.0, 0.5)
    run.model.train()
    return run


def _reference(run: Any, group: list[list[Any]]) -> tuple[float, dict[str, Any]]:
    """The loss and gradients as the step computed them before: the model's own loss over
    the full logits, and ``teacher_kl`` on the full logits, per micro-batch."""
    model = run.unwrapped
    lm_total = 0.0
    for items in group:
        batch = collate(items, run.pad_id)
        rows = [j for j, e in enumerate(items) if id(e) in run.kl_ids]
        out = model(**batch)
        loss = out.loss / len(group)
        if rows:
            kl, _ = teacher_kl(model, out.logits, batch["input_ids"], batch["attention_mask"],
                               rows, run.teacher)
            learnt = (batch["labels"][:, 1:] != -100).sum().clamp(min=1)
            loss = loss + run.cfg.kl_weight * kl / learnt / len(group)
        loss.backward()
        lm_total += float(out.loss.detach()) / len(group)
    return lm_total, _grads(run)


def _grads(run: Any) -> dict[str, Any]:
    grads = {n: p.grad.detach().clone() for n, p in run.unwrapped.named_parameters()
             if p.requires_grad and p.grad is not None}
    run.unwrapped.zero_grad(set_to_none=True)
    return grads


def _group(run: Any) -> list[list[Any]]:
    """Two micro-batches: learnt examples of every form with general-text (KL) rows."""
    train, general = run.train_enc, run.general_enc
    return [[train[0], general[0], train[3], train[5], general[1]],
            [train[1], general[2], train[2]]]


def _assert_same(ref: dict[str, Any], new: dict[str, Any]) -> None:
    import torch

    assert set(ref) == set(new) and ref
    for name, g in ref.items():
        assert torch.allclose(new[name], g, rtol=1e-4, atol=1e-5), name


@pytest.mark.parametrize("part_tokens", [0, 40])
def test_step_gradients_match_the_full_logits_loss(
        sharp_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        part_tokens: int) -> None:
    """The output layer on the picked positions only, in chunks, and (40) the micro-batch
    run in parts of a few rows: the same loss and gradients as the full-logits step."""
    run = _run(sharp_lm_dir, tmp_path / "run")
    assert run.head is not None  # the hidden-state path is the one measured
    group = _group(run)
    if part_tokens:
        assert len(split_rows(group[0], part_tokens)) > 1
    monkeypatch.setattr(train_run, "CPU_PART_TOKENS", part_tokens)
    monkeypatch.setattr("kinject.finetune.lm_loss.CHUNK", 7)  # several chunks a part
    ref_loss, ref = _reference(run, group)
    loss, _, _, kl_sum, kl_tokens = run.accumulate(group)
    new = _grads(run)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert kl_sum > 0 and kl_tokens > 0
    _assert_same(ref, new)


def test_the_full_logits_path_still_gives_the_same_step(sharp_lm_dir: Path,
                                                        tmp_path: Path) -> None:
    """A model whose logits are not its output layer of its last hidden state keeps the
    full-logits loss; computed that way the step is the reference's too."""
    run = _run(sharp_lm_dir, tmp_path / "run")
    run.head = None
    group = _group(run)
    ref_loss, ref = _reference(run, group)
    loss, *_ = run.accumulate(group)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    _assert_same(ref, _grads(run))


def test_held_out_loss_is_the_same_without_the_full_logits(sharp_lm_dir: Path,
                                                           tmp_path: Path) -> None:
    run = _run(sharp_lm_dir, tmp_path / "run")
    fast = run.held_out_loss()
    run.head = None
    assert fast == pytest.approx(run.held_out_loss(), rel=1e-5)


def test_a_model_that_soft_caps_its_logits_keeps_the_full_logits() -> None:
    """Gemma 2 soft-caps its logits after the output layer: the output layer of its hidden
    states is not its logits, and the check says so (a Llama's is)."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    small = {"vocab_size": 97, "hidden_size": 32, "intermediate_size": 64,
             "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
             "head_dim": 8}
    gemma = Gemma2ForCausalLM(Gemma2Config(**small, final_logit_softcapping=0.5))
    assert output_layer(gemma) is None
    llama = LlamaForCausalLM(LlamaConfig(**small))
    assert output_layer(llama) is llama.lm_head


def test_split_rows_keeps_order_and_budget() -> None:
    from kinject.finetune.batches import Encoded

    items = [Encoded([1] * n, [1] * n) for n in (10, 30, 5, 20, 20, 50)]
    parts = split_rows(items, 60)
    assert [e for p in parts for e in p] == items
    assert all(len(p) == 1 or len(p) * max(len(e.input_ids) for e in p) <= 60 for p in parts)
    assert split_rows(items, 0) == [items]


_PEAK = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from kinject.finetune.trainer import LoraTrainer, TrainConfig
    from kinject.types import TrainingExample
    model_dir, out = Path(sys.argv[1]), Path(sys.argv[2])

    def passage(i, tag):
        return TrainingExample(example_id=f"{tag}{i}", chunk_id="c", source_id="s",
                               prompt="", completion="word " * 400, form="passage")

    cfg = TrainConfig(target_modules="all-linear", batch_size=8, max_seq_len=256,
                      fisher_samples=0, epochs=1, eval_every=0, checkpoint_every=0,
                      kl_weight=1.0, device="cpu")
    run, _ = LoraTrainer(cfg)._prepare(model_dir, [passage(i, "t") for i in range(6)], [],
                                       out, None, None, [], ["word " * 400] * 2, None)
    run.model.train()

    def hwm():
        return int(next(l for l in open("/proc/self/status")
                        if l.startswith("VmHWM")).split()[1]) * 1024

    def rise(mode):
        # each mode in a child forked from the prepared run (one load, one preparation),
        # its peak reset to where it starts: what one step adds in a fresh process
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := the current resident size
            if mode == "full":  # the step as it was: full logits, the batch whole
                from kinject.finetune import train_run
                run.head = None
                train_run.CPU_PART_TOKENS = 0
            before = hwm()
            run.step([run.train_enc[:6] + run.general_enc[:2]], end_of_epoch=False)
            os.write(write, str(hwm() - before).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as f:
            got = f.read()
        assert os.waitpid(pid, 0)[1] == 0 and got, mode
        return int(got)

    print(json.dumps({mode: rise(mode) for mode in ("full", "picked")}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_step_with_a_large_vocabulary_stays_far_below_the_full_logits_peak(
        tmp_path: Path) -> None:
    """A 49152-token vocabulary (SmolLM2's) at 8 x 256 tokens with KL rows: the full logits
    are 400 MB a tensor and the old step held several at once (1.5 GB over the loaded
    model, measured); without them one step rises by 0.3 GB."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "word": 3}
    vocab.update({f"t{i}": i for i in range(4, 49152)})
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>",
                                  eos_token="</s>", pad_token="</s>")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=32,
                                         intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2))
    model_dir = tmp_path / "wide-vocab"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    script = tmp_path / "peak.py"
    script.write_text(_PEAK, encoding="utf-8")
    src = str(Path(train_run.__file__).resolve().parents[2])

    proc = subprocess.run([sys.executable, str(script), str(model_dir), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, check=True,
                          env={"PYTHONPATH": src, "OMP_NUM_THREADS": "1",
                               "PATH": "/usr/bin:/bin"})
    rises = json.loads(proc.stdout.strip().splitlines()[-1])
    full, picked = int(rises["full"]), int(rises["picked"])
    assert full > 1_000_000_000, rises  # the old step's cost (1.6 GB measured): guards it
    assert picked < 600_000_000, rises  # 0.35 GB measured


def test_a_part_with_nothing_to_learn_still_backpropagates() -> None:
    """A one-token passage alone in its CPU part has no position to learn from: its loss is
    zero, and the step must still run backward (it raised 'element 0 of tensors does not
    require grad' and failed the cycle)."""
    import torch

    from kinject.finetune.lm_loss import chunked_terms, pick

    layer = torch.nn.Linear(8, 8)
    head = torch.nn.Linear(8, 16, bias=False)
    hidden = layer(torch.randn(1, 1, 8))  # one row of one token: nothing after it to predict
    labels = torch.tensor([[5]])
    picked = pick(hidden, labels, torch.ones_like(labels), [])
    ce, kl = chunked_terms(head, picked)
    (ce + kl).backward()
    assert float(ce) == 0.0 and float(kl) == 0.0
    assert layer.weight.grad is not None and not layer.weight.grad.any()
