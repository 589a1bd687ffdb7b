"""Closed-book evaluation of a base model with (or without) a LoRA adapter.

- ``exact_match``: case, width, whitespace and punctuation are normalised; a short generation
  that contains the answer counts (a tiny model says "Oslo." or "He was born in Oslo").
- ``ClosedBookEvaluator``: greedy answers to questions with no passages, the mean
  log-likelihood of the reference answers (a graded signal where accuracy is coarse), and
  perplexity on general text. One base model, many adapters loaded by name: the gate scores a
  candidate and the serving version without loading the base twice. ``should_stop``
  (optional) is asked before every batch of answers and every scored text: a yes raises
  ``Cancelled``, so a gate that a shutdown interrupts ends within one batch.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kinject.errors import Cancelled
from kinject.eval import metrics

log = logging.getLogger(__name__)

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class EvalQuestion:
    """A held-out question with its reference answer and the source it is about."""

    question: str
    answer: str
    source_id: str = ""
    cycle: int = 0

    def __post_init__(self) -> None:
        if not self.question.strip() or not self.answer.strip():
            raise ValueError(f"question and answer must be non-empty, got {self!r}")


def normalise(text: str) -> str:
    """NFKC, case folded, punctuation and symbols to spaces, whitespace collapsed (the same
    normalisation as ``kinject eval``'s metrics)."""
    return metrics.normalise(text)


def exact_match(prediction: str, answer: str, max_extra_words: int = 12) -> bool:
    """True when the normalised prediction is the answer, or a short text containing it
    (as whole words; for Chinese, as a substring once spaces are dropped)."""
    pred, ans = normalise(prediction), normalise(answer)
    if not ans:
        return False
    if pred == ans:
        return True
    if _CJK.search(ans):
        compact_pred, compact_ans = pred.replace(" ", ""), ans.replace(" ", "")
        return compact_ans in compact_pred and len(compact_pred) <= len(compact_ans) + 40
    # Articles do not decide a match ("Duskmoor Observatory" is "the Duskmoor Observatory"),
    # as in SQuAD's normalisation.
    pred, ans = (" ".join(_ARTICLES.sub(" ", f" {t} ").split()) for t in (pred, ans))
    if not ans:
        return False
    if len(pred.split()) > len(ans.split()) + max_extra_words:
        return False
    return bool(metrics.contains(pred, ans))


_ARTICLES = re.compile(r"(?<= )(?:a|an|the)(?= )")


def question_prompt(tokenizer: Any, question: str) -> str:
    """The closed-book prompt: the very text training rendered the question with
    (:func:`kinject.finetune.batches.chat_prompt` with the closed-book system prompt the RAG
    service's ``adapter`` route asks with), so all three agree token for token."""
    from kinject.finetune.batches import chat_prompt
    from kinject.prompting import CLOSED_BOOK_SYSTEM_PROMPT

    return chat_prompt(tokenizer, question, CLOSED_BOOK_SYSTEM_PROMPT)


@dataclass
class EvalResult:
    accuracy: float
    n: int
    predictions: list[tuple[str, str, str, bool]] = field(default_factory=list)

    def to_dict(self, examples: int = 5) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "n": self.n,
                "examples": [{"question": q, "answer": a, "prediction": p, "correct": ok}
                             for q, a, p, ok in self.predictions[:examples]]}


class ClosedBookEvaluator:
    """A base causal LM and any number of named adapters; ``use(name)`` selects one."""

    def __init__(self, base_model_dir: Path | str, *, device: str = "cpu",
                 prompt: Callable[[Any, str], str] = question_prompt,
                 max_new_tokens: int = 24, batch_size: int = 16,
                 should_stop: Callable[[], bool] | None = None) -> None:
        from kinject.hf import transformers_ready

        transformers_ready()
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = device
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.should_stop = should_stop
        self.tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        from kinject.hf import model_loading

        with model_loading():  # serving may load a model in another thread meanwhile
            self.model: Any = AutoModelForCausalLM.from_pretrained(str(base_model_dir))
        self.model.to(device)  # type: ignore[arg-type]
        self.model.eval()
        self._adapters: set[str] = set()
        self._peft = False

    def add_adapter(self, name: str, adapter_dir: Path | str) -> None:
        from kinject.hf import transformers_ready

        transformers_ready()
        from peft import PeftModel

        if name in self._adapters:
            return
        from kinject.hf import model_loading

        if not self._peft:
            with model_loading():
                self.model = PeftModel.from_pretrained(self.model, str(adapter_dir),
                                                       adapter_name=name)
            self._peft = True
        else:
            self.model.load_adapter(str(adapter_dir), adapter_name=name)
        self.model.to(self.device)
        self.model.eval()
        self._adapters.add(name)

    @contextmanager
    def use(self, name: str | None) -> Iterator[None]:
        """Score with adapter ``name``; None scores the base model alone."""
        if name is None:
            if self._peft:
                with self.model.disable_adapter():
                    yield
            else:
                yield
            return
        if name not in self._adapters:
            raise KeyError(f"adapter {name!r} is not loaded")
        self.model.set_adapter(name)
        yield

    def _check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Cancelled("evaluation stopped")

    # -- measures --------------------------------------------------------------------------
    def generate(self, questions: Sequence[str]) -> list[str]:
        import torch

        tok = self.tokenizer
        out: list[str] = []
        old_side = tok.padding_side
        tok.padding_side = "left"  # greedy batches need the prompts to end together
        try:
            for i in range(0, len(questions), self.batch_size):
                self._check()
                prompts = [self.prompt(tok, q) for q in questions[i:i + self.batch_size]]
                enc = tok(prompts, return_tensors="pt", padding=True,
                          add_special_tokens=False).to(self.device)
                with torch.inference_mode():
                    gen = self.model.generate(**enc, max_new_tokens=self.max_new_tokens,
                                              do_sample=False, pad_token_id=tok.pad_token_id)
                new = gen[:, enc["input_ids"].shape[1]:]
                out.extend(t.strip().split("\n")[0].strip()
                           for t in tok.batch_decode(new, skip_special_tokens=True))
        finally:
            tok.padding_side = old_side
        return out

    def accuracy(self, questions: Sequence[EvalQuestion]) -> EvalResult:
        if not questions:
            return EvalResult(accuracy=float("nan"), n=0)
        preds = self.generate([q.question for q in questions])
        rows = [(q.question, q.answer, p, exact_match(p, q.answer))
                for q, p in zip(questions, preds, strict=True)]
        return EvalResult(accuracy=sum(r[3] for r in rows) / len(rows), n=len(rows),
                          predictions=rows)

    def answer_nll(self, questions: Sequence[EvalQuestion]) -> float:
        """Mean negative log-likelihood per answer token of the reference answers."""
        if not questions:
            return float("nan")
        from kinject.finetune.batches import render
        from kinject.types import TrainingExample

        pairs = []
        for q in questions:
            if self.prompt is question_prompt:  # the trainer's rendering of a qa example
                ex = TrainingExample(example_id="eval", chunk_id="eval", source_id=q.source_id,
                                     prompt=q.question, completion=q.answer.strip(), form="qa")
                prefix, target = render(self.tokenizer, ex)
            else:
                prefix, target = self.prompt(self.tokenizer, q.question), " " + q.answer.strip()
            pairs.append((prefix, target))
        return self._completion_nll(pairs)

    def perplexity(self, texts: Sequence[str]) -> float:
        """exp(mean token NLL) over ``texts`` (token-weighted: a long text counts more)."""
        if not texts:
            return float("nan")
        return math.exp(self._completion_nll([("", t) for t in texts]))

    def text_nll(self, texts: Sequence[str]) -> list[tuple[float, int]]:
        """(summed NLL, tokens) per text: what :meth:`perplexity` adds up, text by text.
        One text at a time: on a CPU a padded batch measured slower, not faster."""
        return self._nll_parts([("", t) for t in texts])

    def _completion_nll(self, pairs: Sequence[tuple[str, str]]) -> float:
        parts = self._nll_parts(pairs)
        count = sum(n for _, n in parts)
        return sum(s for s, _ in parts) / count if count else float("nan")

    def _nll_parts(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[float, int]]:
        import torch

        tok = self.tokenizer
        out: list[tuple[float, int]] = []
        for prompt, completion in pairs:
            self._check()
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"] if prompt else []
            if not p_ids and tok.bos_token_id is not None:
                p_ids = [tok.bos_token_id]
            c_ids = tok(completion.lstrip() if not prompt else completion,
                        add_special_tokens=False)["input_ids"]
            if not c_ids:
                out.append((0.0, 0))
                continue
            ids = torch.tensor([p_ids + c_ids], device=self.device)
            with torch.inference_mode():
                logits = self.model(input_ids=ids).logits[0, :-1].float()
            targets = ids[0, 1:]
            nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
            part = nll[len(p_ids) - 1:]
            out.append((float(part.sum()), int(part.numel())))
        return out
