"""The serving generator on CTranslate2 INT8 (``models.quantize=ct2-int8``).

The base model is converted once into ``models.cache_dir`` (``<key>-ct2-int8``, atomic and
locked: :func:`kinject.models.ensure_ct2_folder`, the reader's conversion) and loaded by
CTranslate2 with INT8 weights; answers are written by it instead of torch.

An adapter version is served the same way: its LoRA weights are merged into a fresh fp32 copy
of the base (PEFT ``merge_and_unload``), and that merged model is converted once to INT8 under
the version's content hash (``<key>-lora-<sha256>-ct2-int8``; a version is immutable, so the
copy never goes stale). A conversion takes tens of seconds, so it runs in a background thread
the moment the version is loaded; until it is done the version is answered by the torch fp32
model with the adapter on it (PEFT, as with ``quantize=none``), so a promotion takes effect at
once, never stalls requests, and switches to the INT8 copy when it is ready. That torch model
is loaded only when an adapter first needs it; a service that serves the base model alone
never loads it. A conversion that fails is logged once and the version goes on being served
by torch. Sampled decoding is also torch's (CTranslate2 seeds its random generator once per
thread, so a request's seed could not repeat its sample). The cache keeps the most recently
used adapter copies (``Ct2Generators.KEEP_ON_DISK``).

Training never uses these models: the trainer loads its own fp32 base.

:class:`Ct2Model` offers the part of transformers' ``generate`` that ``rag.generate`` calls
(left-padded ``input_ids`` + ``attention_mask``, greedy or sampled, ``eos_token_id``, a
``streamer``), so the batch, streaming and adapter-routing code is the same for both backends.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinject.errors import ModelNotFound
from kinject.models import ct2_module, ensure_ct2_folder

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CT2_INT8 = "ct2-int8"
# One merge + conversion at a time in a process: each holds a fresh fp32 base and the merged
# model (several times the INT8 copy), so versions asked for at once wait their turn instead
# of multiplying the memory.
_ONE_CONVERSION = threading.Semaphore(1)


def base_key(location: str, cache_key: str | None) -> str:
    """The name of a base model's converted copies: the GGUF cache key, ``hub-<org>--<name>``
    for a hub id, or a local folder's name plus a hash of its path and weight files' sizes and
    times (a folder whose weights change gets new copies)."""
    if cache_key:
        return cache_key
    path = Path(location).expanduser()
    if not path.is_dir():
        return "hub-" + location.replace("/", "--")
    digest = hashlib.sha256(str(path.resolve()).encode())
    for f in sorted(path.glob("*")):
        if f.suffix in (".safetensors", ".bin", ".json"):
            st = f.stat()
            digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{path.name}-{digest.hexdigest()[:12]}"


def _convertible(location: str, work: Path) -> str:
    """``location`` as CTranslate2's converter takes it: a folder whose config still names
    the GGUF it was de-quantised from (kinject.models.ensure_converted) is linked into
    ``work`` with that entry dropped (the weights are plain fp32; the converter refuses the
    entry)."""
    folder = Path(location)
    config = folder / "config.json"
    if not config.is_file():
        return location
    data = json.loads(config.read_text())
    if "quantization_config" not in data:
        return location
    out = work / "base"
    out.mkdir()
    for f in folder.iterdir():
        if f.is_file() and f.name != "config.json":
            (out / f.name).symlink_to(f.resolve())
    data.pop("quantization_config")
    (out / "config.json").write_text(json.dumps(data, indent=1))
    return str(out)


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
            sampled: torch.Tensor = self.copies.torch_model().generate(
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


class Ct2Generators:
    """The CTranslate2 INT8 copies of one base model: the base, converted and loaded at once,
    and each adapter version's merged copy, converted in the background (see the module
    docstring); the torch fp32 model for answering while a conversion runs, loaded on first
    need. ``max_versions``: adapter copies kept loaded (least recently used go first)."""

    KEEP_ON_DISK = 6  # adapter copies kept in the cache, most recently used first

    def __init__(self, location: str, key: str, models_dir: Path, tokenizer: Any,
                 device: str, torch_dtype: Any = None, max_versions: int = 3) -> None:
        import torch

        if max_versions < 1:
            raise ValueError(f"max_versions must be >= 1, got {max_versions}")
        self.location = location
        self.key = key
        self.models_dir = models_dir
        self.tokenizer = tokenizer
        self.device = device
        self.torch_dtype = torch_dtype
        self.max_versions = max_versions
        # CTranslate2 takes as many threads as torch does in this process (one knob for both).
        self.threads = torch.get_num_threads()
        self._lock = threading.Lock()
        self._torch_lock = threading.Lock()  # a torch load takes seconds: not self._lock
        self._torch: Any = None
        self._copies: OrderedDict[str, Ct2Model] = OrderedDict()
        self._converting: dict[str, threading.Thread] = {}
        self._failed: dict[str, str] = {}
        folder = ensure_ct2_folder(self.target(None), models_dir,
                                   lambda work: _convertible(location, work),
                                   f"the generator {key} as CTranslate2 INT8")
        self.base = Ct2Model(folder, tokenizer, device, self.threads, copies=self)

    def target(self, version: str | None) -> Path:
        """Where the INT8 copy of the base (None) or of an adapter version is kept."""
        if version is None:
            return self.models_dir / f"{self.key}-ct2-int8"
        return self.models_dir / f"{self.key}-lora-{version[:32]}-ct2-int8"

    def torch_model(self) -> Any:
        """The fp32 (torch) base, loaded on first use: what adapters are served on while
        their INT8 copy is being made, and what samples (see :meth:`Ct2Model.generate`)."""
        with self._torch_lock:
            if self._torch is None:
                from transformers import AutoModelForCausalLM

                log.info("generator: loading the torch model of %s (sampled decoding, and "
                         "adapters while their INT8 copies are made)", self.key)
                model = AutoModelForCausalLM.from_pretrained(self.location,
                                                             dtype=self.torch_dtype)
                model.to(self.device)  # type: ignore[arg-type]
                self._torch = model.eval()
            return self._torch

    def ready(self, version: str) -> Ct2Model | None:
        """The loaded INT8 copy of ``version``, or None (not made yet, or failed)."""
        with self._lock:
            copy = self._copies.get(version)
            if copy is not None:
                self._copies.move_to_end(version)
            return copy

    def serving(self, version: str, adapter_dir: Path) -> Ct2Model | None:
        """The copy that answers for ``version`` now, or None while it is being made (or
        when it cannot be: torch answers then); starts making it when nothing has."""
        copy = self.ready(version)
        if copy is None:
            self.start(version, adapter_dir)
            copy = self.ready(version)
        return copy

    def start(self, version: str, adapter_dir: Path) -> None:
        """Make ``version``'s INT8 copy available: loaded now when it is in the cache, else
        converted in a background thread (a failure is logged; torch keeps serving it)."""
        with self._lock:
            if (version in self._copies or version in self._converting
                    or version in self._failed):
                return
        if (self.target(version) / "model.bin").is_file():
            try:
                self._load(version)
                return
            except (ModelNotFound, OSError) as exc:  # pruned or torn by another process
                log.warning("adapter %s: cached INT8 copy unusable (%s); making it again",
                            version[:12], exc)
        with self._lock:
            if version in self._converting:
                return
            thread = threading.Thread(target=self._convert, args=(version, adapter_dir),
                                      name=f"kinject-ct2-{version[:8]}", daemon=True)
            self._converting[version] = thread
        log.info("adapter %s: making its CTranslate2 INT8 copy in the background; the torch "
                 "fp32 model answers with it until then", version[:12])
        thread.start()

    def wait(self, version: str, timeout_s: float | None = None) -> Ct2Model | None:
        """Wait for a conversion :meth:`start` began; returns the copy (None: failed)."""
        thread = self._converting.get(version)
        if thread is not None:
            thread.join(timeout_s)
        return self.ready(version)

    def prepare(self, version: str, adapter_dir: Path) -> Ct2Model:
        """``version``'s INT8 copy, converted once (merged into the base) and loaded, here."""
        folder = ensure_ct2_folder(
            self.target(version), self.models_dir,
            lambda work: self._merge(adapter_dir, work),
            f"adapter {version[:12]} merged into {self.key} as CTranslate2 INT8")
        return self._load(version, folder)

    def _load(self, version: str, folder: Path | None = None) -> Ct2Model:
        folder = folder or self.target(version)
        copy = Ct2Model(folder, self.tokenizer, self.device, self.threads, version)
        try:
            os.utime(folder)  # used now: pruning keeps the most recently used copies
        except OSError:  # pruned by another process meanwhile: the copy is loaded already
            pass
        with self._lock:
            self._copies[version] = copy
            while len(self._copies) > self.max_versions:
                self._copies.popitem(last=False)
        log.info("adapter %s: served by its CTranslate2 INT8 copy", version[:12])
        return copy

    def _convert(self, version: str, adapter_dir: Path) -> None:
        try:
            with _ONE_CONVERSION:
                self.prepare(version, adapter_dir)
        except Exception as exc:  # noqa: BLE001 - a background thread: report, keep serving
            log.error("adapter %s: no CTranslate2 INT8 copy (%s: %s); the torch fp32 model "
                      "goes on serving it", version[:12], type(exc).__name__, exc)
            with self._lock:
                self._failed[version] = str(exc)
        else:
            try:  # the copy is made and serving: a failed clean-up does not unmake it
                self._prune()
            except OSError as exc:
                log.warning("generator: pruning the INT8 copies failed: %s", exc)
        finally:
            with self._lock:
                self._converting.pop(version, None)

    def _prune(self) -> None:
        """Keep the ``KEEP_ON_DISK`` most recently used adapter copies of this base in the
        cache (each is as large as the INT8 model; every promoted version makes one). A
        process serving a pruned copy keeps it in memory; one that needs it again makes it
        again."""
        def used(folder: Path) -> float:
            try:
                return folder.stat().st_mtime
            except OSError:  # removed by another process meanwhile
                return 0.0

        copies = sorted(self.models_dir.glob(f"{self.key}-lora-*-ct2-int8"), key=used,
                        reverse=True)
        for old in copies[self.KEEP_ON_DISK:]:
            log.info("generator: removing the INT8 copy %s (not used lately)", old.name)
            shutil.rmtree(old, ignore_errors=True)

    def _merge(self, adapter_dir: Path, work: Path) -> str:
        """A transformers folder in ``work``: a fresh fp32 base with the adapter merged in."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # the base as the converter takes it: a config that still names the GGUF the weights
        # were de-quantised from makes transformers refuse to save the merged model
        base = AutoModelForCausalLM.from_pretrained(_convertible(self.location, work),
                                                    dtype=torch.float32)
        merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        out = work / "hf"
        merged.save_pretrained(out)
        # the converter reads the vocabulary from the tokenizer files beside the weights
        AutoTokenizer.from_pretrained(self.location).save_pretrained(out)
        return str(out)
