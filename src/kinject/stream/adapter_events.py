"""Adapter events on ``<prefix>.adapters``: encode, publish, subscribe.

Every change of an adapter registry's ACTIVE pointer goes out as one event on a one-partition
topic (every replica sees the changes in the order they happened). An event names the version,
the sha256 of its weights, the registry it happened in (``origin``) and, when the publisher sets
``finetune.publish_url``, where the version's archive can be fetched (see
``kinject.finetune.serving`` for what a replica does with it). ``finetune/`` gets these as the
callbacks of ``kinject.finetune.announce``: :func:`kafka_announcer` and :func:`subscription`.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from kinject.errors import KinjectError
from kinject.finetune.fetch import archive_url

if TYPE_CHECKING:
    from kinject.config import KafkaSettings, Settings
    from kinject.finetune.announce import Announce, EventSubscription
    from kinject.finetune.registry import Activation, AdapterRegistry

log = logging.getLogger(__name__)

EVENT_VERSION = 1


def encode_event(change: Activation, kind: str | None = None, *, origin: str | None = None,
                 url: str | None = None) -> bytes:
    """The event of one change of ACTIVE. ``sha256`` is the hash of the version's
    ``adapter_model.safetensors`` (the registry names versions by it; None for the base
    model): a replica checks the bytes it loads against it before serving them. ``origin``
    is the id of the registry that changed; ``url`` where the version's archive is served
    (None: replicas must share the adapters folder)."""
    body = {"v": EVENT_VERSION, "type": kind or change.reason, "version": change.version,
            "sha256": change.version, "previous": change.previous, "reason": change.reason,
            "at": change.at, "origin": origin, "url": url}
    return json.dumps(body).encode("utf-8")


def decode_event(value: bytes | None) -> dict[str, Any]:
    if value is None:  # a tombstone: no event
        raise ValueError("adapter event has no value")
    body: dict[str, Any] = json.loads(value)
    if not isinstance(body, dict):
        raise ValueError(f"adapter event is {type(body).__name__}, not an object")
    if body.get("v") != EVENT_VERSION:
        raise ValueError(f"unknown adapter event version {body.get('v')!r}")
    return body


def publish_activation(kafka: KafkaSettings, bootstrap: str, change: Activation, *,
                       registry: AdapterRegistry | None = None, publish_url: str = "") -> None:
    """Announce a change of ACTIVE on ``<prefix>.adapters``. With ``registry`` the event
    names it as its origin, and with ``publish_url`` where replicas fetch the version's
    archive."""
    from kinject.stream.clients import make_producer
    from kinject.stream.topics import ensure_topics

    topics = ensure_topics(kafka, bootstrap)
    producer = make_producer(kafka, bootstrap)
    try:
        value = encode_event(change, origin=registry.identity() if registry else None,
                             url=archive_url(publish_url, change.version))
        producer.send(topics.adapters, key=b"active", value=value).get(timeout=30)
    finally:
        producer.close()
    log.info("published adapter change -> %s on %s",
             change.version[:12] if change.version else "base", topics.adapters)


def kafka_announcer(settings: Settings, bootstrap: str | None = None) -> Announce | None:
    """An Announce that publishes on the broker (``bootstrap``, else the configured one), or
    None when there is none. A broker that is down only delays the other replicas (they
    follow the pointer file anyway): the error is logged, never raised, so it cannot undo a
    promotion."""
    target = bootstrap or settings.kafka.bootstrap_servers
    if not target:
        return None
    from kinject.finetune.registry import AdapterRegistry

    kafka, publish_url, data_dir = settings.kafka, settings.finetune.publish_url, settings.data_dir

    def announce(change: Activation) -> None:
        try:
            publish_activation(kafka, target, change,
                               registry=AdapterRegistry.for_data_dir(data_dir),
                               publish_url=publish_url)
        except KinjectError as exc:
            log.error("could not announce the adapter change on Kafka: %s", exc)
        except Exception as exc:  # a Kafka client error must not undo a promotion
            log.error("could not announce the adapter change on Kafka: %s", exc)

    return announce


class KafkaAdapterEvents:
    """The adapter topic from the last event on: a replica with a registry of its own
    catches up with a promotion made while it was down (for a shared one the pointer says
    it anyway). Unreadable events are logged and skipped."""

    def __init__(self, kafka: KafkaSettings, bootstrap: str) -> None:
        from kafka import TopicPartition

        from kinject.stream.clients import make_consumer
        from kinject.stream.topics import ensure_topics

        topics = ensure_topics(kafka, bootstrap)
        self._consumer = make_consumer(kafka, bootstrap, None, [])
        try:
            tp = TopicPartition(topics.adapters, 0)
            self._consumer.assign([tp])
            end = self._consumer.end_offsets([tp])[tp]
            self._consumer.seek(tp, max(end - 1, 0))
            self._consumer.position(tp)
        except BaseException:  # the switcher opens the feed again later: leak nothing
            self._consumer.close()
            raise

    def poll(self, timeout_s: float) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for batch in self._consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
            for msg in batch:
                try:
                    events.append(decode_event(msg.value))
                except (ValueError, KeyError) as exc:
                    log.error("skipping unreadable adapter event: %s", exc)
        return events

    def close(self) -> None:
        self._consumer.close()


def subscription(kafka: KafkaSettings, bootstrap: str | None) -> EventSubscription | None:
    """What ``AdapterSwitcher.watch`` opens to follow the topic; None without a broker."""
    if not bootstrap:
        return None
    return lambda: KafkaAdapterEvents(kafka, bootstrap)
