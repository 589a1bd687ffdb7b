"""The serving generator on CTranslate2 INT8 (``models.quantize=ct2-int8``).

The base model is converted once into ``models.cache_dir`` (``<key>-ct2-int8``, atomic and
locked: :func:`kinject.models.ensure_ct2_folder`, the reader's conversion) and loaded by
CTranslate2 with INT8 weights; answers are written by it instead of torch. A model whose
config says the converter would make a copy that cannot write (:func:`convert_obstacle`) is
not converted: it is served with torch, said in one line.

An adapter version is served the same way: its LoRA weights are merged into a fresh fp32 copy
of the base (PEFT ``merge_and_unload``), and that merged model is converted once to INT8 under
the version's content hash (``<key>-lora-<sha256>-ct2-int8``; a version is immutable, so the
copy never goes stale). A conversion takes tens of seconds, so it runs in a background thread
the moment the version is loaded; until it is done the version is answered by the torch fp32
model with the adapter on it (PEFT, as with ``quantize=none``), so a promotion takes effect at
once, never stalls requests, and switches to the INT8 copy when it is ready. That torch model
is loaded only while it answers: for an adapter whose copy is being made (or could not be
made), and for sampled decoding (CTranslate2 seeds its random generator once per thread, so a
request's seed could not repeat its sample); the switcher (finetune/serving.py) gives it back
once every version it serves has its copy and nothing sampled for ``TORCH_KEEP_S``. A
conversion that fails is logged and tried again after ``RETRY_AFTER_S`` (on the next request
for the version after each wait), torch serving the version meanwhile. The cache keeps the
most recently used adapter copies (``Ct2Generators.KEEP_ON_DISK``) and those loaded here.

Training never uses these models: the trainer loads its own fp32 base.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinject.ct2_convert import base_key, convert_obstacle, convertible
from kinject.ct2_model import Ct2Model
from kinject.errors import ModelNotFound
from kinject.hf import model_loading
from kinject.models import ensure_ct2_folder

__all__ = ["CT2_INT8", "Ct2Generators", "Ct2Model", "base_key", "convert_obstacle"]

log = logging.getLogger(__name__)

CT2_INT8 = "ct2-int8"
# One merge + conversion at a time in a process: each holds a fresh fp32 base and the merged
# model (several times the INT8 copy), so versions asked for at once wait their turn instead
# of multiplying the memory.
_ONE_CONVERSION = threading.Semaphore(1)


@dataclass
class _Failure:
    """A version's conversions that failed: how many, the last error, when to try again
    (None: not again until a restart)."""

    attempts: int
    error: str
    retry_at: float | None


class Ct2Generators:
    """The CTranslate2 INT8 copies of one base model: the base, converted and loaded at once,
    and each adapter version's merged copy, converted in the background (see the module
    docstring); the torch fp32 model for answering while a conversion runs and for sampling,
    loaded on need. ``max_versions``: adapter copies kept loaded (least recently used go
    first). ``clock``: what retries and the sampling keep-alive are timed by."""

    KEEP_ON_DISK = 6  # adapter copies kept in the cache, most recently used first
    # Waits before the 2nd, 3rd and 4th conversion of a version whose conversion failed (a
    # full disk, memory, a file in the way: things an operator fixes in minutes to hours);
    # then not again until a restart. Each is one merge + conversion: never a tight loop.
    RETRY_AFTER_S = (60.0, 600.0, 3600.0)
    # The torch model that sampled stays loaded this long after the last sampled request:
    # loading it takes seconds, so a client that samples now and then does not pay for a load
    # each time, and a service that stopped sampling gives its memory back.
    TORCH_KEEP_S = 300.0

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
        self.clock: Callable[[], float] = time.monotonic
        # CTranslate2 takes as many threads as torch does in this process (one knob for both).
        self.threads = torch.get_num_threads()
        self._lock = threading.Lock()
        self._torch_lock = threading.Lock()  # a torch load takes seconds: not self._lock
        self._torch: Any = None
        self._sampled_at = -float("inf")
        self._copies: OrderedDict[str, Ct2Model] = OrderedDict()
        self._converting: dict[str, threading.Thread] = {}
        self._failed: dict[str, _Failure] = {}
        # told each version whose conversion ended (made or failed): the switcher gives the
        # torch model back then; weak, so a switcher that went is not kept alive by this
        self._listeners: list[weakref.WeakMethod[Callable[[str], None]]] = []
        folder = ensure_ct2_folder(self.target(None), models_dir,
                                   lambda work: convertible(location, work),
                                   f"the generator {key} as CTranslate2 INT8")
        self.base = Ct2Model(folder, tokenizer, device, self.threads, copies=self)

    def target(self, version: str | None) -> Path:
        """Where the INT8 copy of the base (None) or of an adapter version is kept."""
        if version is None:
            return self.models_dir / f"{self.key}-ct2-int8"
        return self.models_dir / f"{self.key}-lora-{version[:32]}-ct2-int8"

    # -- the torch model ------------------------------------------------------------------
    def torch_model(self, sampling: bool = False) -> Any:
        """The fp32 (torch) base, loaded on first use: what adapters are served on while
        their INT8 copy is being made, and what samples (``sampling``: for a sampled request,
        which keeps it loaded for ``TORCH_KEEP_S``)."""
        import torch

        with self._torch_lock:
            if sampling:
                self._sampled_at = self.clock()
            if self._torch is None:
                from transformers import AutoModelForCausalLM

                log.info("generator: loading the torch model of %s (sampled decoding, and "
                         "adapters while their INT8 copies are made)", self.key)
                # not as inference tensors when a request loads it inside generate's
                # inference mode (PEFT puts LoRA layers on it later, outside it); and on a
                # fork of torch's random generator, which a sampled request seeded just now
                devices: list[int] | None = [] if self.device == "cpu" else None
                with (torch.inference_mode(False), torch.random.fork_rng(devices=devices),
                      model_loading()):
                    model = AutoModelForCausalLM.from_pretrained(self.location,
                                                                 dtype=self.torch_dtype)
                    model.to(self.device)  # type: ignore[arg-type]
                self._torch = model.eval()
            return self._torch

    @property
    def torch_loaded(self) -> bool:
        return self._torch is not None

    def torch_wanted(self, versions: Iterable[str]) -> bool:
        """Whether the torch model should stay loaded for ``versions`` (the adapters on it):
        one of them has no copy to answer with (being made, or failed), or it sampled within
        ``TORCH_KEEP_S``."""
        with self._lock:
            if any(v in self._converting or v in self._failed for v in versions):
                return True
        return self.clock() - self._sampled_at < self.TORCH_KEEP_S

    def release_torch(self) -> None:
        """Drop the torch model (a request still holding it finishes with it first) and give
        its memory back (collected, then the C heap trimmed: kinject.finetune.memory)."""
        from kinject.finetune.memory import release_memory

        with self._torch_lock:
            if self._torch is None:
                return
            self._torch = None
        release_memory()
        log.info("generator: the torch model of %s is released (every adapter served has its "
                 "INT8 copy, and nothing sampled lately)", self.key)

    # -- the adapters' copies -------------------------------------------------------------
    def on_conversion_end(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(version)`` (a bound method, held weakly) in the converting thread
        when a conversion ends, made or failed."""
        self._listeners.append(weakref.WeakMethod(callback))

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

    def making(self, version: str) -> bool:
        """Whether ``version`` has no copy to answer with yet: being made, or failed."""
        with self._lock:
            return version in self._converting or version in self._failed

    def start(self, version: str, adapter_dir: Path) -> None:
        """Make ``version``'s INT8 copy available: loaded now when it is in the cache, else
        converted in a background thread (a failure is logged and tried again after the next
        of ``RETRY_AFTER_S``; torch serves the version meanwhile)."""
        with self._lock:
            if version in self._copies or version in self._converting:
                return
            failed = self._failed.get(version)
            if failed is not None and (failed.retry_at is None
                                       or self.clock() < failed.retry_at):
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
        if failed is None:
            log.info("adapter %s: making its CTranslate2 INT8 copy in the background; the "
                     "torch fp32 model answers with it until then", version[:12])
        else:
            log.info("adapter %s: making its CTranslate2 INT8 copy again (attempt %d of %d)",
                     version[:12], failed.attempts + 1, len(self.RETRY_AFTER_S) + 1)
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
        try:  # used now (before the load: a process pruning meanwhile keeps it)
            os.utime(folder)
        except OSError:  # pruned by another process meanwhile: the load says so
            pass
        copy = Ct2Model(folder, self.tokenizer, self.device, self.threads, version)
        with self._lock:
            self._copies[version] = copy
            self._failed.pop(version, None)
            while len(self._copies) > self.max_versions:
                self._copies.popitem(last=False)
        log.info("adapter %s: served by its CTranslate2 INT8 copy", version[:12])
        return copy

    def _convert(self, version: str, adapter_dir: Path) -> None:
        try:
            with _ONE_CONVERSION:
                self.prepare(version, adapter_dir)
        except Exception as exc:  # noqa: BLE001 - a background thread: report, keep serving
            self._conversion_failed(version, exc)
        else:
            try:  # the copy is made and serving: a failed clean-up does not unmake it
                self._prune()
            except OSError as exc:
                log.warning("generator: pruning the INT8 copies failed: %s", exc)
        finally:
            with self._lock:
                self._converting.pop(version, None)
        for ref in list(self._listeners):
            callback = ref()
            if callback is not None:
                callback(version)

    def _conversion_failed(self, version: str, exc: Exception) -> None:
        with self._lock:
            before = self._failed.get(version)
            attempts = (before.attempts if before else 0) + 1
            waits = self.RETRY_AFTER_S
            wait = waits[attempts - 1] if attempts <= len(waits) else None
            self._failed[version] = _Failure(attempts, str(exc),
                                             None if wait is None else self.clock() + wait)
        then = (f"trying again in {wait:.0f} s" if wait is not None
                else "not trying again until a restart")
        log.error("adapter %s: no CTranslate2 INT8 copy (attempt %d of %d, %s: %s); the torch "
                  "fp32 model goes on serving it, %s", version[:12], attempts, len(waits) + 1,
                  type(exc).__name__, exc, then)

    def _prune(self) -> None:
        """Keep the ``KEEP_ON_DISK`` most recently used adapter copies of this base in the
        cache (each is as large as the INT8 model; every promoted version makes one), and
        those loaded in this process (the active version's copy was used at its load, maybe
        long ago: a restart would otherwise make it again). A process serving a pruned copy
        keeps it in memory; one that needs it again makes it again."""
        def used(folder: Path) -> float:
            try:
                return folder.stat().st_mtime
            except OSError:  # removed by another process meanwhile
                return 0.0

        with self._lock:
            loaded = {copy.folder.name for copy in self._copies.values()}
        copies = sorted(self.models_dir.glob(f"{self.key}-lora-*-ct2-int8"), key=used,
                        reverse=True)
        for old in copies[self.KEEP_ON_DISK:]:
            if old.name in loaded:
                continue
            log.info("generator: removing the INT8 copy %s (not used lately)", old.name)
            shutil.rmtree(old, ignore_errors=True)

    def _merge(self, adapter_dir: Path, work: Path) -> str:
        """A transformers folder in ``work``: a fresh fp32 base with the adapter merged in."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # the base as the converter takes it: a config that still names the GGUF the weights
        # were de-quantised from makes transformers refuse to save the merged model
        with model_loading():
            base = AutoModelForCausalLM.from_pretrained(convertible(self.location, work),
                                                        dtype=torch.float32)
            merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
        out = work / "hf"
        merged.save_pretrained(out)
        # the converter reads the vocabulary from the tokenizer files beside the weights
        AutoTokenizer.from_pretrained(self.location).save_pretrained(out)
        return str(out)
