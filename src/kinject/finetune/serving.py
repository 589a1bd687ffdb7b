"""Serving with adapters: the ACTIVE version on the serving generator, hot-swapped.

``AdapterSwitcher`` wraps a :class:`kinject.models.LoadedGenerator`'s model in a PEFT model
the first time an adapter is needed and keeps every loaded version under its own adapter
name. A new version is loaded aside (PEFT adds its LoRA weights beside the ones in use) and
its weights' sha256 is checked against the version name before it is selected, so no request
ever sees a half-loaded or stale copy. Selecting a version and generating both happen under
one lock: a request is answered wholly by one version. The switcher follows the registry's
ACTIVE pointer (the file changing) and promotion events (``kinject.adapters``, read by
``kinject.stream.adapter_events`` and handed in as an EventSubscription). An event
names the version, the sha256 of its weights, the registry it happened in (``origin``) and,
when the publisher sets ``finetune.publish_url``, where the version's archive can be fetched.
Adapters reach a replica on another host in one of two ways:

- shared storage: the adapters folder is a volume every replica mounts (same ``origin``);
  the ACTIVE pointer is the truth and the event says to look now;
- fetch by event: a replica with a registry of its own (another ``origin``) takes the event
  as the change: it fetches a version it lacks from the event's URL (finetune/fetch.py),
  checks the sha256, loads it aside, then moves its own ACTIVE pointer. A failure is one
  error line; the version served before goes on serving and the fetch is tried again every
  ``retry_s`` until it works or a newer event supersedes it.

A copy whose bytes do not hash to the announced sha256 (torn, still being copied, corrupted)
is refused with an error in the log, and the version served before goes on serving; the copy
is hashed again once its file changes.

Generation is serialised by that lock; on a CPU torch already uses every core for one request.

With ``models.quantize=ct2-int8`` the loaded model is a CTranslate2 INT8 copy of the base
(kinject/generator_ct2.py): the base model is answered by it, and each adapter version by its
own merged INT8 copy once made; until then (it is made in the background when the version
loads) the version is answered by the torch fp32 model with the adapter on it, as above. That
torch model (and PEFT on it) is loaded only then and for sampled requests, and given back
once every adapter on it has its copy and nothing sampled for a while: a version whose copy
is in the cache is served without it.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinject.finetune.registry import WEIGHTS, file_sha256
from kinject.finetune.serving_watch import AdapterLoadError, AdapterWatching
from kinject.ongoing_failure import OngoingFailure
from kinject.protocols import AdapterSource, Generator, Tokenizer

if TYPE_CHECKING:
    from kinject.finetune.fetch import AdapterFetcher
    from kinject.generator_ct2 import Ct2Generators

log = logging.getLogger(__name__)

def _adapter_name(version: str) -> str:
    return "v" + version[:24]


@dataclass
class ServingGenerator:
    """Looks like a LoadedGenerator to ``rag.generate``: its model generates with one
    adapter version (``"active"`` follows the switcher; None is the base model)."""

    model: Any
    tokenizer: Tokenizer
    device: str
    name: str


class _RoutedModel:
    def __init__(self, switcher: AdapterSwitcher, version: str | None) -> None:
        self._switcher = switcher
        self._version = version

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        sampled = bool(kwargs.get("do_sample"))
        with self._switcher.selected(self._version, sampled=sampled) as model:
            return model.generate(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._switcher.selected(self._version) as model:
            return model(*args, **kwargs)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._switcher.model, item)


def _rng_devices(switcher: AdapterSwitcher) -> list[int] | None:
    """The devices whose random generators a load forks (None: every CUDA device)."""
    return [] if switcher.loaded.device == "cpu" else None


def _ct2_copies(model: Any) -> Ct2Generators | None:
    """The INT8 copies behind a CTranslate2 generator (models.quantize=ct2-int8), or None."""
    from kinject.generator_ct2 import Ct2Model

    return model.copies if isinstance(model, Ct2Model) else None


class AdapterSwitcher(AdapterWatching):
    """The serving generator plus the registry's adapters; see the module docstring."""

    ACTIVE = "active"

    def __init__(self, loaded: Generator, registry: AdapterSource, *, max_loaded: int = 4,
                 follow_pointer: bool = False, fetcher: AdapterFetcher | None = None,
                 retry_s: float = 30.0) -> None:
        if max_loaded < 1:
            raise ValueError(f"max_loaded must be >= 1, got {max_loaded}")
        self.loaded = loaded
        # Check the ACTIVE pointer (one stat) before every request on the active version:
        # hot-swapping without a watcher thread.
        self.follow_pointer = follow_pointer
        self.registry = registry
        self.max_loaded = max_loaded
        self.model: Any = loaded.model
        # models.quantize=ct2-int8: the INT8 copies of the base and of each version
        self._copies = _ct2_copies(loaded.model)
        # versions whose LoRA weights are on self.model (PEFT); with INT8 copies only those
        # torch answers for (while their copy is made, or sampled), else every loaded one
        self._peft: set[str] = set()
        if self._copies is not None:
            self._copies.on_conversion_end(self._conversion_ended)
        self._lock = threading.RLock()
        self._current: str | None = None
        self._names: OrderedDict[str, str] = OrderedDict()  # version -> adapter name (LRU)
        self._stamp: tuple[int, int] | None = None
        self.switches = 0
        # Set once ``watch`` follows the pointer (and the topic, when given).
        self.ready = threading.Event()
        # version -> the weights' sha256 a promotion event announced for it
        self._announced: dict[str, str] = {}
        # version -> (the weights file's size and mtime, the hash expected) of a refused
        # copy: not hashed again, nor logged again, until the file or the hash changes
        self._refused: dict[str, tuple[tuple[int, int] | None, str]] = {}
        # Failures logged once while they last: following the pointer, taking an event from
        # another registry, opening the event feed.
        self._refresh_failure = OngoingFailure(log, "adapters: the ACTIVE pointer is followed "
                                                    "again")
        # fetch by event: what fetches a version this registry lacks (None: no fetching),
        # and an event that could not be applied yet, with when to try it again
        self.fetcher = fetcher
        self.retry_s = retry_s
        self._pending: tuple[dict[str, Any], float] | None = None
        self._mirror_failure = OngoingFailure(log)  # taking one shows in "serving adapter"
        self._feed_failure = OngoingFailure(log, "adapter events: the feed is open")

    @property
    def current_version(self) -> str | None:
        """The version answering requests now; None: the base model."""
        return self._current

    @property
    def loaded_versions(self) -> list[str]:
        return list(self._names)

    # -- generators for rag.generate ------------------------------------------------------
    def generator(self, version: str | None = ACTIVE) -> ServingGenerator:
        """A generator bound to the active version (default), a named one, or None: base."""
        if version not in (None, self.ACTIVE):
            version = self.registry.resolve(version)
            if self.registry.get(version).status == "tainted":
                raise AdapterLoadError(f"adapter {version[:12]} is tainted (trained on deleted "
                                       "data); it is not served")
            self._ensure_loaded(version)
        return self._bound(version)

    def serving_now(self) -> tuple[str | None, ServingGenerator]:
        """The version serving now (None: the base model) and a generator bound to it, not
        to whatever is active when it writes: an answer labelled with this version is
        written by it even if another is promoted in between."""
        version = self._current
        return version, self._bound(version)

    def _bound(self, version: str | None) -> ServingGenerator:
        name = f"{self.loaded.name}@{version[:12] if version else 'base'}"
        return ServingGenerator(model=_RoutedModel(self, version),
                                tokenizer=self.loaded.tokenizer, device=self.loaded.device,
                                name=name)

    @contextmanager
    def selected(self, version: str | None = ACTIVE, sampled: bool = False) -> Iterator[Any]:
        """Hold the lock with ``version``'s adapter selected and yield the model.
        ``sampled``: for sampled decoding, which CTranslate2 copies never do: their random
        generator is seeded once per thread, so a request's seed could not repeat its
        sample; the torch model does it (models.quantize=ct2-int8 only)."""
        if version == self.ACTIVE and self.follow_pointer:
            self._safe_refresh()
        if version not in (None, self.ACTIVE) and self.registry.get(version).status == "tainted":
            # a named version that a delete tainted is never served, loaded or not
            raise AdapterLoadError(f"adapter {version[:12]} is tainted (trained on deleted "
                                   "data); it is not served")
        copies = self._copies
        with self._lock:
            target = self._current if version == self.ACTIVE else version
            if target is None:
                if copies is not None and not sampled:
                    yield copies.base
                    self._release_torch_if_idle()
                elif self._peft:
                    if copies is not None:
                        copies.torch_model(sampling=True)  # keeps it loaded a while
                    with self.model.disable_adapter():
                        yield self.model
                else:
                    yield (copies.torch_model(sampling=True) if copies is not None
                           else self.model)
                return
            if target not in self._names:
                target = self.registry.resolve(target)
                self._ensure_loaded(target)
            self._names.move_to_end(target)
            copy = (copies.serving(target, self.registry.path(target))
                    if copies is not None and not sampled else None)
            if copy is not None:  # the version's INT8 copy is made: it answers
                yield copy
                self._release_torch_if_idle()
                return
            if copies is not None and sampled:
                copies.torch_model(sampling=True)
            self._load_peft(target)
            self.model.set_adapter(self._names[target])
            yield self.model

    # -- switching -------------------------------------------------------------------------
    def apply(self, version: str | None) -> bool:
        """Serve ``version`` (None: base). Loads it aside first; returns whether it changed."""
        if version is not None:
            version = self.registry.resolve(version)
            meta = self.registry.get(version)
            if meta.status == "tainted":
                raise AdapterLoadError(f"adapter {version[:12]} is tainted; not serving it")
            self._ensure_loaded(version)
        with self._lock:
            if version == self._current:
                return False
            previous, self._current = self._current, version
            self.switches += 1
            if version is not None:
                self._evict(keep=version)  # the one served before may go now
        log.info("serving adapter %s (was %s)", version[:12] if version else "base",
                 previous[:12] if previous else "base")
        return True

    def refresh(self) -> bool:
        """Follow the registry's ACTIVE pointer; returns whether the served version changed."""
        stamp = self.registry.pointer_stamp()
        if stamp == self._stamp and self._stamp is not None:
            return False
        changed = self.apply(self.registry.active())
        self._stamp = stamp
        return changed

    def _ensure_loaded(self, version: str) -> None:
        with self._lock:
            if version in self._names:
                return
        path = self.registry.path(version)
        self._check_bytes(version, path / WEIGHTS)
        with self._lock:
            if version in self._names:
                return
            if self._copies is None:
                self._load_peft(version)
            self._names[version] = _adapter_name(version)
            self._evict(keep=version)
        copies = self._copies
        if copies is not None:
            copies.start(version, path)  # a copy in the cache is loaded, not converted
            if copies.making(version):  # torch answers until it is made: ready before use
                with self._lock:
                    if version in self._names:
                        self._load_peft(version)

    def _load_peft(self, version: str) -> None:
        """Put ``version``'s LoRA weights on the torch model (PEFT), under the lock."""
        if version in self._peft:
            return
        import torch

        from kinject.hf import model_loading, transformers_ready

        transformers_ready()
        from peft import PeftModel

        path, name = str(self.registry.path(version)), _adapter_name(version)
        # Loading adds new LoRA weights beside those in use; the selected adapter does not
        # change until set_adapter, so requests in flight are unaffected. Under the lock
        # anyway: PEFT's module surgery is not thread-safe with a forward pass. A request
        # may arrive here inside generate's inference mode: weights made there could
        # never be touched outside it again. PEFT draws the LoRA layers' initial weights from
        # torch's global generator, which a sampled request seeded just before: drawn on a
        # fork of it, so the seed still repeats its sample.
        with torch.inference_mode(False), torch.random.fork_rng(devices=_rng_devices(self)):
            base = (self._copies.torch_model() if self._copies is not None
                    else self.loaded.model)
            with model_loading():
                if not isinstance(self.model, PeftModel):
                    self.model = PeftModel.from_pretrained(base, path, adapter_name=name)
                else:
                    self.model.load_adapter(path, adapter_name=name)
            self.model.to(self.loaded.device)
            self.model.eval()
        self._peft.add(version)

    def _conversion_ended(self, version: str) -> None:
        with self._lock:  # after the request that holds it (the torch model may answer it)
            self._release_torch_if_idle()

    def _release_torch_if_idle(self) -> None:
        """ct2-int8: give the torch model (and PEFT on it) back once no version on it lacks
        its INT8 copy and nothing sampled lately (Ct2Generators.torch_wanted)."""
        copies = self._copies
        if copies is None or not copies.torch_loaded or copies.torch_wanted(self._peft):
            return
        self.model = self.loaded.model
        self._peft.clear()
        copies.release_torch()

    def _check_bytes(self, version: str, weights: Path) -> None:
        """Refuse a copy whose bytes do not hash to the version's name and to the sha256 a
        promotion event announced: one being written, torn or corrupted is never served
        under the version's name."""
        expected = self._announced.get(version, version)
        try:
            st = weights.stat()
            stamp: tuple[int, int] | None = (st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            stamp = None
        refusal = (f"adapter files at {weights.parent} do not hash to {expected[:12]} (the "
                   f"sha256 announced for version {version[:12]}): not serving them")
        if self._refused.get(version) == (stamp, expected):
            raise AdapterLoadError(refusal)
        digest = file_sha256(weights) if stamp is not None else "missing"
        if digest != version or digest != expected:
            self._refused[version] = (stamp, expected)
            raise AdapterLoadError(refusal)
        self._refused.pop(version, None)

    def _evict(self, keep: str) -> None:
        while len(self._names) > self.max_loaded:
            old = next((v for v in self._names if v not in (keep, self._current)), None)
            if old is None:
                return
            name = self._names.pop(old)
            if old in self._peft:
                self._peft.discard(old)
                if self._peft or self._copies is None:
                    self.model.delete_adapter(name)
                else:  # its last adapter (ct2-int8): the torch model goes, not PEFT's last
                    self.model = self.loaded.model
                    self._copies.release_torch()
