"""The LM that writes paraphrases: the few-shot chat that asks for one (:func:`messages`) and
:class:`LmParaphraser`, which samples them from a loaded model and leaves it as it found it."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

from kinject.finetune.paraphrase_config import ParaphraseConfig

log = logging.getLogger(__name__)

_INSTRUCTION = {
    "en": "Paraphrase: say the same thing with different wording and word order. Keep every "
          "name, number and date.",
    "zh": "改写：用不同的措辞和语序表达同样的意思，保留所有名字、数字和日期。",
}
# Two worked examples: with them the tiny model answers with one sentence, not a preamble.
_SHOTS = {
    "en": (("Mia Holt moved to Parma in 2004.", "In 2004, Mia Holt moved to Parma."),
           ("Kern Labs employs 120 engineers in Oslo.",
            "In Oslo, 120 engineers work for Kern Labs.")),
    "zh": (("王丽于2004年搬到了成都。", "2004年，王丽搬到了成都。"),
           ("星河公司在上海有120名工程师。", "在上海，星河公司拥有120名工程师。")),
}


def messages(sentence: str, lang: str) -> list[dict[str, str]]:
    """The chat that asks for a paraphrase of ``sentence``, in its language."""
    lang = "zh" if lang == "zh" else "en"
    out: list[dict[str, str]] = []
    for src, dst in _SHOTS[lang]:
        out += [{"role": "user", "content": f"{_INSTRUCTION[lang]}\n{src}"},
                {"role": "assistant", "content": dst}]
    return [*out, {"role": "user", "content": f"{_INSTRUCTION[lang]}\n{sentence}"}]


class LmParaphraser:
    """Paraphrases with a loaded causal LM (a PEFT model is used with its adapter disabled:
    the base model writes). Eval mode, no gradients, batched sampling from a fixed seed;
    the model's mode, cache setting, the tokenizer's padding side and torch's RNG are all
    restored afterwards, so a trainer can lend its model and go on as if nothing happened."""

    def __init__(self, tokenizer: Any, model: Any, config: ParaphraseConfig | None = None
                 ) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.config = config or ParaphraseConfig()

    def __call__(self, items: Sequence[tuple[str, str]], k: int) -> list[list[str]]:
        import torch

        tok, model, cfg = self.tokenizer, self.model, self.config
        if not items:
            return []
        was_training = model.training
        side, use_cache = tok.padding_side, getattr(model.config, "use_cache", True)
        disable = getattr(model, "disable_adapter", None)
        out: list[list[str]] = []
        t0 = time.perf_counter()
        try:
            model.eval()
            tok.padding_side = "left"
            model.config.use_cache = True
            device = next(model.parameters()).device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                    torch.no_grad(), (disable() if callable(disable) else nullcontext()):
                torch.manual_seed(cfg.seed)
                for start in range(0, len(items), cfg.batch_size):
                    out.extend(self._batch(items[start:start + cfg.batch_size], k, device))
        finally:
            model.train(was_training)
            tok.padding_side = side
            model.config.use_cache = use_cache
        log.info("paraphrased %d sentence(s) x %d in %.1f s", len(items), k,
                 time.perf_counter() - t0)
        return out

    def _batch(self, items: Sequence[tuple[str, str]], k: int, device: Any) -> list[list[str]]:
        tok, cfg = self.tokenizer, self.config
        prompts = [tok.apply_chat_template(messages(s, lang), tokenize=False,
                                           add_generation_prompt=True) for s, lang in items]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {key: v.to(device) for key, v in enc.items()}
        longest = max(len(tok(s, add_special_tokens=False)["input_ids"]) for s, _ in items)
        generated = self.model.generate(
            **enc, max_new_tokens=min(256, 2 * longest + 8), do_sample=True,
            temperature=cfg.temperature, top_p=cfg.top_p, num_return_sequences=k,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None
            else tok.eos_token_id)
        texts = tok.batch_decode(generated[:, enc["input_ids"].shape[1]:],
                                 skip_special_tokens=True)
        return [texts[i * k:(i + 1) * k] for i in range(len(items))]
