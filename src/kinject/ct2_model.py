"""One CTranslate2 INT8 model behind transformers' ``generate`` (``models.quantize=ct2-int8``).

:class:`Ct2Model` offers the part of transformers' ``generate`` that ``rag.generate`` calls
(left-padded ``input_ids`` + ``attention_mask``, greedy or sampled, ``eos_token_id``, a
``streamer``, ``stopping_criteria``), so the batch, streaming and adapter-routing code is the
same for both backends. The copies it is made from are managed by
:class:`kinject.generator_ct2.Ct2Generators`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinject.errors import ModelNotFound
from kinject.models import ct2_module

if TYPE_CHECKING:
    import torch

    from kinject.generator_ct2 import Ct2Generators


class Ct2Model:
    """One CTranslate2 INT8 model behind transformers' ``generate`` (the arguments kinject
    passes); ``version``: the adapter merged into it (None: the base model)."""

    # tokenizer: a transformers tokenizer (ids <-> the token strings CTranslate2 reads)
    def __init__(self, folder: Path, tokenizer: Any, device: str, threads: int,
                 version: str | None = None, copies: Ct2Generators | None = None) -> None:
        ct2 = ct2_module()
        compute = "int8" if device == "cpu" else "int8_float16"
        try:
            self.generator = ct2.Generator(str(folder), device=device, compute_type=compute,
                                           intra_threads=threads)
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelNotFound(f"cannot load the CTranslate2 generator {folder}: {exc}"
                                ) from exc
        self.folder = folder
        self.tokenizer = tokenizer
        self.device = device
        self.version = version
        # The base model's copy knows the adapters' copies (finetune/serving.py routes to them)
        self.copies = copies

    def __repr__(self) -> str:
        return f"Ct2Model({self.folder.name}, {self.device})"

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
                 max_new_tokens: int = 20, min_new_tokens: int = 0, do_sample: bool = False,
                 temperature: float = 1.0, top_p: float = 1.0, top_k: int = 50,
                 pad_token_id: int | None = None, eos_token_id: int | list[int] | None = None,
                 streamer: Any = None, stopping_criteria: Any = None) -> torch.Tensor:
        """Like transformers' ``generate``: each row of ``input_ids`` (left-padded, as
        ``attention_mask`` says) followed by its new tokens, the batch right-padded with
        ``pad_token_id``. A ``streamer`` (one row) gets the prompt, then each new token;
        ``stopping_criteria`` (transformers' callables, asked after each streamed token) end
        a stream early, as when its client went away."""
        import torch

        if do_sample and self.version is None and self.copies is not None:
            # CTranslate2's random generator is seeded once per thread: a request's seed
            # (Sampling.seed) could not repeat its sample. The torch model samples instead.
            sampled: torch.Tensor = self.copies.torch_model(sampling=True).generate(
                input_ids=input_ids, attention_mask=attention_mask,
                max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=True,
                temperature=temperature, top_p=top_p, top_k=top_k, pad_token_id=pad_token_id,
                eos_token_id=eos_token_id, streamer=streamer,
                stopping_criteria=stopping_criteria)
            return sampled
        tok = self.tokenizer
        rows = input_ids.tolist()
        if attention_mask is not None:
            rows = [[t for t, m in zip(r, ms, strict=True) if m]
                    for r, ms in zip(rows, attention_mask.tolist(), strict=True)]
        prompts = [list(tok.convert_ids_to_tokens(r)) for r in rows]
        ends = [eos_token_id] if isinstance(eos_token_id, int) else eos_token_id
        options: dict[str, Any] = {"max_length": max_new_tokens, "min_length": min_new_tokens,
                                   "end_token": list(ends) if ends else None,
                                   "sampling_topk": 1}
        if do_sample:  # an adapter's copy used without the switcher: not repeatable by seed
            options.update(sampling_topk=top_k, sampling_topp=top_p,
                           sampling_temperature=temperature)
        if streamer is not None:
            if len(prompts) != 1:
                raise ValueError(f"a streamer takes one prompt, got {len(prompts)}")
            new = [self._stream(prompts[0], rows[0], options, streamer, stopping_criteria)]
        else:
            results = self.generator.generate_batch(prompts, include_prompt_in_result=False,
                                                    **options)
            new = [list(r.sequences_ids[0]) for r in results]
        pad = pad_token_id if pad_token_id is not None else (tok.pad_token_id or 0)
        longest = max(len(n) for n in new)
        out = [list(row) + n + [pad] * (longest - len(n))
               for row, n in zip(input_ids.tolist(), new, strict=True)]
        return torch.tensor(out, dtype=torch.long, device=input_ids.device)

    def _stream(self, prompt: list[str], ids: Sequence[int], options: dict[str, Any],
                streamer: Any, stopping_criteria: Any = None) -> list[int]:
        import torch

        new: list[int] = []
        streamer.put(torch.tensor(ids))  # transformers' streamers take the prompt first
        try:
            for step in self.generator.generate_tokens(prompt, **options):
                new.append(step.token_id)
                streamer.put(torch.tensor([step.token_id]))
                if stopping_criteria and any(
                        bool(stop(torch.tensor([[*ids, *new]]), None).all())
                        for stop in stopping_criteria):
                    break  # leaving the iterator ends CTranslate2's generation
        finally:
            streamer.end()  # also on a failure: the reader must not wait for its timeout
        return new
