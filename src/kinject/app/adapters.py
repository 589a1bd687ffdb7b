"""Adapters and fine-tuning jobs (finetune/): the registry's versions, the switcher that
serves the ACTIVE one, activation announced on Kafka, the background cycles."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kinject.config import Settings
from kinject.errors import KinjectError

if TYPE_CHECKING:
    from kinject.finetune.archive import AdapterArchive
    from kinject.finetune.registry import Activation, AdapterRegistry
    from kinject.finetune.serving import AdapterSwitcher, ServingGenerator
    from kinject.models import LoadedGenerator
    from kinject.rag.routes import AdapterState

log = logging.getLogger(__name__)


class Adapters:
    """The adapter registry of the data dir and, once the generator loads, its switcher.

    ``bootstrap``: the attached broker's address (None: none attached), read on each call.
    """

    def __init__(self, settings: Settings, bootstrap: Callable[[], str | None]) -> None:
        from kinject.finetune.jobs import JobThreads

        self.settings = settings
        self._bootstrap = bootstrap
        # Serves the ACTIVE adapter on the loaded generator; set by with_adapters().
        self.switcher: AdapterSwitcher | None = None
        self._lineages: dict[str, frozenset[str]] = {}  # a version's lineage, read once
        self._jobs = JobThreads()  # the cycles start_finetune_job started, stopped by close()

    def adapter_state(self) -> AdapterState:
        """The adapter serving now, the sources it was trained on (RAG's ``auto`` route) and
        the generator bound to it (what writes an answer labelled with it)."""
        from kinject.rag.routes import AdapterState

        switcher = self.switcher
        if switcher is not None and switcher.follow_pointer:
            # Follow ACTIVE now (one stat), not only when the model next generates: the answer
            # cache is keyed by this version, so a stale one would serve the old adapter's
            # cached answers right after an activation or a rollback.
            try:
                switcher.refresh()
            except KinjectError as exc:  # what serves now keeps serving
                log.error("cannot switch adapters: %s", exc)
        if switcher is None:
            return AdapterState()
        version, generator = switcher.serving_now()
        if version is None:
            return AdapterState(generator=generator)
        known = self._lineages
        if version not in known:  # a version is immutable: read its manifest once
            try:
                known[version] = frozenset(self.registry().get(version).lineage)
            except (KinjectError, OSError) as exc:
                log.warning("lineage of adapter %s unavailable: %s", version[:12], exc)
                return AdapterState(version, frozenset(), generator)
        return AdapterState(version, known[version], generator)

    def with_adapters(self, loaded: LoadedGenerator) -> ServingGenerator:
        """The generator with the ACTIVE adapter, checked before every answer (hot-swap)."""
        from kinject.finetune.fetch import AdapterFetcher
        from kinject.finetune.registry import AdapterRegistry
        from kinject.finetune.serving import AdapterSwitcher

        registry = AdapterRegistry.for_data_dir(self.settings.data_dir)
        ft = self.settings.finetune
        fetcher = AdapterFetcher(registry, api_key=ft.fetch_api_key,
                                 max_bytes=ft.fetch_max_bytes, timeout_s=ft.fetch_timeout_s)
        self.switcher = AdapterSwitcher(loaded, registry, follow_pointer=True, fetcher=fetcher,
                                        retry_s=ft.fetch_retry_s)
        self.switcher.refresh()
        return self.switcher.generator()

    def _loaded_switcher(self) -> AdapterSwitcher:
        if self.switcher is None:
            raise RuntimeError("the generator is not loaded")
        return self.switcher

    def follow(self, stop: threading.Event) -> threading.Thread:
        """Follow adapter changes in a thread until ``stop`` (the generator loaded first)."""
        from kinject.stream.adapter_events import subscription

        return self._loaded_switcher().watch(
            stop, events=subscription(self.settings.kafka, self._bootstrap()))

    def generator_for(self, version: str | None = "active") -> ServingGenerator:
        """A generator bound to one adapter version (the generator loaded first)."""
        return self._loaded_switcher().generator(version)

    def registry(self) -> AdapterRegistry:
        from kinject.finetune.registry import AdapterRegistry

        return AdapterRegistry.for_data_dir(self.settings.data_dir)

    def adapters(self) -> list[dict[str, Any]]:
        """Every adapter version, oldest first, with ``active`` set on the serving one."""
        from dataclasses import asdict

        registry = self.registry()
        active = registry.active()
        return [{**asdict(v), "active": v.version == active} for v in registry.versions()]

    def adapter(self, version: str) -> dict[str, Any]:
        from dataclasses import asdict

        registry = self.registry()
        v = registry.get(version)
        return {**asdict(v), "active": v.version == registry.active(),
                "ancestors": [a.version for a in registry.ancestors(v.version)[1:]]}

    def adapter_archive(self, version: str) -> AdapterArchive:
        """A version's files as one tar stream (finetune/archive.AdapterArchive: ``version``,
        ``size``, ``chunks()``), for a replica that fetches it. Raises NotFound for a version
        the registry does not hold."""
        from kinject.finetune.archive import AdapterArchive

        registry = self.registry()
        version = registry.resolve(version)
        return AdapterArchive.open(registry.path(version), version)

    def activate(self, version: str | None) -> dict[str, Any]:
        """Serve ``version`` (None: the base model) on every replica; refuses tainted ones."""
        return self._announce(self.registry().activate(version, "activated"))

    def rollback(self) -> dict[str, Any]:
        """Go back to the adapter that served before the current one."""
        return self._announce(self.registry().rollback())

    def _announce(self, change: Activation) -> dict[str, Any]:
        bootstrap = self._bootstrap() or self.settings.kafka.bootstrap_servers
        if bootstrap:
            from kinject.stream.adapter_events import publish_activation

            try:
                publish_activation(self.settings.kafka, bootstrap, change,
                                   registry=self.registry(),
                                   publish_url=self.settings.finetune.publish_url)
            except (KinjectError, OSError) as exc:  # replicas also follow the pointer file
                log.warning("adapter change not announced on Kafka: %s", exc)
        result: dict[str, Any] = change.to_dict()
        return result

    def adapter_version(self) -> str | None:
        """The active adapter version, or None when the base model serves."""
        try:
            from kinject.finetune.registry import AdapterRegistry
        except ImportError:
            return None
        root = self.settings.data_dir / "adapters"
        return AdapterRegistry(root).active() if root.is_dir() else None

    def adapter_versions(self) -> list[str]:
        try:
            from kinject.finetune.registry import AdapterRegistry
        except ImportError:
            return []
        root = self.settings.data_dir / "adapters"
        registry = AdapterRegistry(root)
        if not root.is_dir():
            return []
        return [v.version for v in registry.list() if v.status != "tainted"]

    def adapter_listing(self) -> tuple[str | None, list[dict[str, Any]]]:
        """The serving version (None: the base model) and every version, oldest first,
        with ``active`` set on the serving one."""
        from dataclasses import asdict

        registry = self.registry()
        active: str | None = registry.active()
        return active, [{**asdict(v), "active": v.version == active}
                        for v in registry.versions()]

    def adapter_manifest(self, version: str) -> dict[str, Any]:
        """One version's manifest (a version or a unique prefix), with ``active`` and the
        ``path`` of its files. Raises NotFound for a version the registry does not hold."""
        from dataclasses import asdict

        registry = self.registry()
        v = registry.get(version)
        return {**asdict(v), "active": v.version == registry.active(),
                "path": str(registry.path(v.version))}

    # -- fine-tuning jobs ---------------------------------------------------------------------
    def start_finetune_job(self) -> dict[str, Any]:
        """Start one fine-tuning cycle in the background; returns the job record (queued).
        Raises JobBusy when a cycle is running. A promotion is announced on the attached
        broker (the embedded one included)."""
        from kinject.stream.adapter_events import kafka_announcer

        announce = kafka_announcer(self.settings, self._bootstrap())
        return self._jobs.start(self.settings, announce=announce).to_dict()

    def stop_finetune_jobs(self, timeout_s: float) -> list[str]:
        """Cancel the cycles this service started (they end at their next training step or
        gate batch, recorded as failed, cancelled, nothing promoted) and wait up to
        ``timeout_s`` for them; returns the ids of those still running. No new one starts."""
        return self._jobs.stop(timeout_s)

    def finetune_job(self, job_id: str) -> dict[str, Any]:
        """A job's status, progress (0-1), stage, metrics and gate report."""
        from kinject.finetune.jobs import JobStore

        store = JobStore.for_data_dir(self.settings.data_dir)
        try:
            return store.get(job_id).to_dict()
        finally:
            store.close()

    def finetune_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        from kinject.finetune.jobs import JobStore

        store = JobStore.for_data_dir(self.settings.data_dir)
        try:
            return [j.to_dict() for j in store.recent(limit)]
        finally:
            store.close()
