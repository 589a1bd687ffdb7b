"""Following adapter changes for the switcher (``AdapterSwitcher`` in finetune/serving.py): a
watcher thread that follows the registry's ACTIVE pointer and promotion events, and applies an
event from another registry (fetch by event). See finetune/serving.py's docstring."""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from kinject.errors import KinjectError
from kinject.ongoing_failure import OngoingFailure

if TYPE_CHECKING:
    from kinject.finetune.announce import AdapterEvents, EventSubscription
    from kinject.finetune.fetch import AdapterFetcher
    from kinject.protocols import AdapterSource

# The switcher's logger: its lines read as they did when this was one module.
log = logging.getLogger("kinject.finetune.serving")


class AdapterLoadError(KinjectError):
    """An adapter version cannot be loaded for serving (missing, corrupt, tainted)."""

    code = "adapter_load_error"


class AdapterWatching:
    """The switcher's following half (a mixin): ``watch`` and what the watcher thread does."""

    if TYPE_CHECKING:  # provided by AdapterSwitcher
        registry: AdapterSource
        fetcher: AdapterFetcher | None
        retry_s: float
        ready: threading.Event
        _current: str | None
        _stamp: tuple[int, int] | None
        _announced: dict[str, str]
        _pending: tuple[dict[str, Any], float] | None
        _refresh_failure: OngoingFailure
        _mirror_failure: OngoingFailure
        _feed_failure: OngoingFailure

        def refresh(self) -> bool: ...

        def _ensure_loaded(self, version: str) -> None: ...

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
            self._feed_failure.failed(
                message, "adapter events: cannot open the feed (%s); following the ACTIVE "
                "pointer meanwhile, trying again every %g s", message, self.retry_s)
            return None
        self._feed_failure.ok()
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
            self._mirror_failure.failed(
                message, "%s; still serving %s%s", message,
                self._current[:12] if self._current else "the base model",
                f", trying again every {self.retry_s:g} s" if retry else "")
            return
        self._mirror_failure.ok()
        self._stamp = None
        self._safe_refresh()

    def _safe_refresh(self) -> None:
        """Follow the pointer; on failure keep serving what serves now and log the error
        (once, not on every request that checks again)."""
        try:
            self.refresh()
        except KinjectError as exc:
            if self._refresh_failure.failed(
                    str(exc), "cannot switch adapters: %s; still serving %s", exc,
                    self._current[:12] if self._current else "the base model"):
                time.sleep(0.1)
        except Exception:  # the watcher must outlive one bad version; what serves stays
            log.exception("cannot switch adapters")
            time.sleep(0.1)
        else:
            self._refresh_failure.ok()


def _close_quietly(feed: AdapterEvents) -> None:
    try:
        feed.close()
    except Exception as exc:  # closing a broken feed must not end the watcher
        log.debug("adapter events: closing the feed failed: %s", exc)
