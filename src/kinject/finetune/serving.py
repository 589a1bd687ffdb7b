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
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kinject.errors import KinjectError
from kinject.finetune.registry import WEIGHTS, AdapterRegistry, file_sha256

if TYPE_CHECKING:
    from kinject.finetune.announce import AdapterEvents, EventSubscription
    from kinject.finetune.fetch import AdapterFetcher

log = logging.getLogger(__name__)

class AdapterLoadError(KinjectError):
    """An adapter version cannot be loaded for serving (missing, corrupt, tainted)."""

    code = "adapter_load_error"


def _adapter_name(version: str) -> str:
    return "v" + version[:24]


@dataclass
class ServingGenerator:
    """Looks like a LoadedGenerator to ``rag.generate``: its model generates with one
    adapter version (``"active"`` follows the switcher; None is the base model)."""

    model: Any
    tokenizer: Any
    device: str
    name: str


class _RoutedModel:
    def __init__(self, switcher: AdapterSwitcher, version: str | None) -> None:
        self._switcher = switcher
        self._version = version

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with self._switcher.selected(self._version) as model:
            return model.generate(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self._switcher.selected(self._version) as model:
            return model(*args, **kwargs)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._switcher.model, item)


class AdapterSwitcher:
    """The serving generator plus the registry's adapters; see the module docstring."""

    ACTIVE = "active"

    def __init__(self, loaded: Any, registry: AdapterRegistry, *, max_loaded: int = 4,
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
        self._last_error: str | None = None
        # fetch by event: what fetches a version this registry lacks (None: no fetching),
        # and an event that could not be applied yet, with when to try it again
        self.fetcher = fetcher
        self.retry_s = retry_s
        self._pending: tuple[dict[str, Any], float] | None = None
        self._mirror_error: str | None = None
        self._feed_error: str | None = None  # the last failure to open the event feed

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
        name = f"{self.loaded.name}@{version[:12] if version else 'base'}"
        return ServingGenerator(model=_RoutedModel(self, version),
                                tokenizer=self.loaded.tokenizer, device=self.loaded.device,
                                name=name)

    @contextmanager
    def selected(self, version: str | None = ACTIVE) -> Iterator[Any]:
        """Hold the lock with ``version``'s adapter selected and yield the model."""
        if version == self.ACTIVE and self.follow_pointer:
            self._safe_refresh()
        if version not in (None, self.ACTIVE) and self.registry.get(version).status == "tainted":
            # a named version that a delete tainted is never served, loaded or not
            raise AdapterLoadError(f"adapter {version[:12]} is tainted (trained on deleted "
                                   "data); it is not served")
        with self._lock:
            target = self._current if version == self.ACTIVE else version
            if target is None:
                if self._names:
                    with self.model.disable_adapter():
                        yield self.model
                else:
                    yield self.model
                return
            if target not in self._names:
                target = self.registry.resolve(target)
                self._ensure_loaded(target)
            self.model.set_adapter(self._names[target])
            self._names.move_to_end(target)
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
        name = _adapter_name(version)
        with self._lock:
            if version in self._names:
                return
            import torch
            from peft import PeftModel

            # Loading adds new LoRA weights beside those in use; the selected adapter does not
            # change until set_adapter, so requests in flight are unaffected. Under the lock
            # anyway: PEFT's module surgery is not thread-safe with a forward pass. A request
            # may arrive here inside generate's inference mode: weights made there could
            # never be touched outside it again.
            with torch.inference_mode(False):
                if not isinstance(self.model, PeftModel):
                    self.model = PeftModel.from_pretrained(self.loaded.model, str(path),
                                                           adapter_name=name)
                else:
                    self.model.load_adapter(str(path), adapter_name=name)
                self.model.to(self.loaded.device)
                self.model.eval()
            self._names[version] = name
            self._evict(keep=version)

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
            self.model.delete_adapter(self._names.pop(old))

    # -- following changes -----------------------------------------------------------------
    def watch(self, stop: threading.Event, *, events: EventSubscription | None = None,
              interval_s: float = 1.0) -> threading.Thread:
        """Follow changes in a daemon thread until ``stop`` is set: adapter events when
        ``events`` is given (opened in that thread), and the pointer file every
        ``interval_s`` (which also covers a replica that missed an event)."""
        thread = threading.Thread(target=self._watch, args=(stop, events, interval_s),
                                  name="adapter-switcher", daemon=True)
        thread.start()
        return thread

    def _watch(self, stop: threading.Event, events: EventSubscription | None,
               interval_s: float) -> None:
        feed: AdapterEvents | None = None
        reopen_at = 0.0  # a feed that cannot be opened (the broker is down) is tried again
        try:
            feed = self._open_feed(events)
            if events is not None and feed is None:
                reopen_at = time.monotonic() + self.retry_s
            self._safe_refresh()
            self.ready.set()
            while not stop.is_set():
                self._safe_refresh()
                if self._pending is not None and time.monotonic() >= self._pending[1]:
                    self._mirror(self._pending[0])
                if feed is None and events is not None and time.monotonic() >= reopen_at:
                    feed = self._open_feed(events)
                    reopen_at = time.monotonic() + self.retry_s
                if feed is not None:
                    try:
                        polled = feed.poll(interval_s)
                    except Exception as exc:  # the pointer is still followed meanwhile
                        log.error("adapter events: polling failed (%s: %s); opening the "
                                  "feed again in %g s", type(exc).__name__, exc, self.retry_s)
                        _close_quietly(feed)
                        feed, reopen_at = None, time.monotonic() + self.retry_s
                        continue
                    for event in polled:
                        self._on_event(event)
                else:
                    stop.wait(interval_s)
        finally:
            if feed is not None:
                feed.close()

    def _open_feed(self, events: EventSubscription | None) -> AdapterEvents | None:
        """Open the event feed; None (an error line) when it cannot be opened now."""
        if events is None:
            return None
        try:
            feed = events()
        except Exception as exc:  # a broker down at start must not stop pointer follows
            message = f"{type(exc).__name__}: {exc}"
            (log.debug if message == self._feed_error else log.error)(
                "adapter events: cannot open the feed (%s); following the ACTIVE pointer "
                "meanwhile, trying again every %g s", message, self.retry_s)
            self._feed_error = message
            return None
        self._feed_error = None
        return feed

    def _on_event(self, event: dict[str, Any]) -> None:
        version, sha256 = event.get("version"), event.get("sha256")
        log.info("adapter event %s -> %s", event.get("type"), (version or "base")[:12])
        self._pending = None  # a newer event supersedes one waiting to be tried again
        if isinstance(version, str) and isinstance(sha256, str):
            self._announced[version] = sha256
        origin = event.get("origin")
        if isinstance(origin, str) and origin != self.registry.identity():
            self._mirror(event)
            return
        # The pointer is the truth; the event says to look now. A replica whose registry
        # lags (shared storage) keeps what it serves until the pointer arrives.
        self._stamp = None
        self._safe_refresh()

    def _mirror(self, event: dict[str, Any]) -> None:
        """Apply an event from a registry that is not this one (fetch by event): fetch the
        version if it is missing, check it and load it aside, then move this registry's
        ACTIVE pointer. On failure: an error line (not repeated while the failure stays the
        same), the served version stays, and a fetch or load that failed is tried again
        after ``retry_s`` unless a newer event arrives first. An event that can never work
        (its sha256 is not its version's, it names no URL) waits for the next one."""
        self._pending = None
        version, sha256, url = event.get("version"), event.get("sha256"), event.get("url")
        shown = version[:12] if isinstance(version, str) else "base"
        retry = False
        try:
            if version is not None:
                if not isinstance(version, str) or sha256 != version:
                    raise AdapterLoadError(f"the event announces sha256 {str(sha256)[:12]} "
                                           f"for version {str(version)[:12]}; versions are "
                                           "named by their weights' hash")
                if version not in self.registry.names():
                    if not isinstance(url, str) or not url:
                        raise AdapterLoadError(
                            "it is not in this replica's registry and the event names no URL "
                            "to fetch it from (set finetune.publish_url where it was "
                            "promoted, or share the adapters folder)")
                    if self.fetcher is None:
                        raise AdapterLoadError("it is not in this replica's registry and "
                                               "this replica does not fetch adapters")
                    retry = True
                    self.fetcher.fetch(version, sha256, url)
                retry = True
                self._ensure_loaded(version)  # checked and loaded before it serves
            retry = False
            if self.registry.active() != version:
                self.registry.activate(version, str(event.get("reason") or "promoted"))
        except Exception as exc:  # the watcher must outlive one bad event; what serves stays
            if retry:
                self._pending = (event, time.monotonic() + self.retry_s)
            message = (f"cannot take adapter {shown} from the event: "
                       f"{exc if isinstance(exc, KinjectError) else repr(exc)}")
            if message != self._mirror_error:
                self._mirror_error = message
                log.error("%s; still serving %s%s", message,
                          self._current[:12] if self._current else "the base model",
                          f", trying again every {self.retry_s:g} s" if retry else "")
            else:
                log.debug("%s (again)", message)
            return
        self._mirror_error = None
        self._stamp = None
        self._safe_refresh()

    def _safe_refresh(self) -> None:
        """Follow the pointer; on failure keep serving what serves now and log the error
        (once, not on every request that checks again)."""
        try:
            self.refresh()
        except KinjectError as exc:
            if str(exc) != self._last_error:
                self._last_error = str(exc)
                log.error("cannot switch adapters: %s; still serving %s", exc,
                          self._current[:12] if self._current else "the base model")
                time.sleep(0.1)
        except Exception:  # the watcher must outlive one bad version; what serves stays
            log.exception("cannot switch adapters")
            time.sleep(0.1)
        else:
            self._last_error = None


def _close_quietly(feed: AdapterEvents) -> None:
    try:
        feed.close()
    except Exception as exc:  # closing a broken feed must not end the watcher
        log.debug("adapter events: closing the feed failed: %s", exc)
