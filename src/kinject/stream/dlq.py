"""Inspect and replay the dead-letter topic (``kinject.dlq``).

Listing and replay read kinject's durable store (:mod:`kinject.stream.dlq_store`), which
the worker writes first and which copies in what only the topic holds; this module reads
the topic and replays.

A dead letter is read with a consumer in no group, from the beginning of every partition
up to the end it had when the read began, so reading changes nothing for anyone. Its id is
``PARTITION:OFFSET`` in the dlq topic; a bare offset is accepted where it is unambiguous.
Replay re-publishes the original key and value bytes to the records topic (through the
producer and its outbox): a record that fails again becomes a new dead letter.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinject.config import KafkaSettings
from kinject.errors import BrokerError, NotFound
from kinject.stream.clients import make_consumer
from kinject.stream.producer import Producer
from kinject.stream.topics import Topics

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeadLetter:
    """One message of the dlq topic, decoded."""

    partition: int
    offset: int
    at: float | None
    stage: str
    reason: str
    error_type: str
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    key: bytes | None
    value: bytes | None
    # Set for letters from the durable store: its row id, how often the same bytes failed,
    # when it was replayed.
    row: int | None = None
    seen: int = 1
    replayed_at: float | None = None
    # From the topic: the cluster the worker read the record in, the bytes' digest.
    cluster_id: str | None = None
    digest: str | None = None

    @property
    def id(self) -> str:
        return str(self.row) if self.row is not None else f"{self.partition}:{self.offset}"

    @property
    def source_id(self) -> str:
        """The key as text (the source id for records kinject published), or '-'."""
        if self.key is None:
            return "-"
        return self.key.decode("utf-8", "replace")

    def payload_text(self) -> str | None:
        """The original value as text (JSON pretty-printed), or None when it is binary."""
        if self.value is None:
            return None
        try:
            text = self.value.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if "\x00" in text:
            return None
        try:
            return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
        except ValueError:
            return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "stage": self.stage,
            "reason": self.reason,
            "error_type": self.error_type,
            "source": {
                "topic": self.source_topic,
                "partition": self.source_partition,
                "offset": self.source_offset,
            },
            "key": self.source_id if self.key is not None else None,
            "value_bytes": None if self.value is None else len(self.value),
            "seen": self.seen,
            "replayed_at": self.replayed_at,
        }


def _decode(msg: Any) -> DeadLetter:
    try:
        body = json.loads(msg.value)
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
    except (TypeError, ValueError) as exc:  # someone else's message on the topic
        return DeadLetter(
            msg.partition,
            msg.offset,
            msg.timestamp / 1000,
            "?",
            f"unreadable dead letter: {exc}",
            "?",
            None,
            None,
            None,
            msg.key,
            msg.value,
        )

    def b64(field: str) -> bytes | None:
        raw = body.get(field)
        return base64.b64decode(raw) if raw is not None else None

    return DeadLetter(
        partition=msg.partition,
        offset=msg.offset,
        at=body.get("at"),
        stage=str(body.get("stage", "?")),
        reason=str(body.get("reason", "")),
        error_type=str(body.get("error_type", "")),
        source_topic=body.get("topic"),
        source_partition=body.get("partition"),
        source_offset=body.get("offset"),
        key=b64("key_b64"),
        value=b64("value_b64"),
        cluster_id=body.get("cluster_id"),
        digest=body.get("digest"),
    )


def read_dead_letters(
    kafka: KafkaSettings, bootstrap: str, *, timeout_s: float = 30.0
) -> list[DeadLetter]:
    """Every dead letter now in the dlq topic, oldest first (by time of failure)."""
    from kafka import TopicPartition
    from kafka.errors import KafkaError

    topic = Topics.from_settings(kafka).dlq
    letters: list[DeadLetter] = []
    try:
        consumer = make_consumer(kafka, bootstrap, None)
    except KafkaError as exc:
        raise BrokerError(f"cannot read {topic} on {bootstrap}: {exc}") from exc
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise BrokerError(f"reading {topic} did not reach its end in {timeout_s:g} s")
            for batch in consumer.poll(timeout_ms=200).values():
                letters.extend(_decode(m) for m in batch)
    except KafkaError as exc:
        raise BrokerError(f"cannot read {topic} on {bootstrap}: {exc}") from exc
    finally:
        consumer.close()
    letters.sort(key=lambda d: (d.at or 0.0, d.partition, d.offset))
    return letters


def find_dead_letter(letters: list[DeadLetter], ref: str) -> DeadLetter:
    """The dead letter with id ``ref`` (a stored letter's number), or named ``PARTITION:OFFSET``
    in the topic, or by a bare offset when only one has it."""
    ref = ref.strip()
    exact = [d for d in letters if d.id == ref]
    if len(exact) == 1:
        return exact[0]
    try:
        if ":" in ref:
            part, off = (int(x) for x in ref.split(":", 1))
            matches = [d for d in letters if d.partition == part and d.offset == off]
        else:
            off = int(ref)
            matches = [d for d in letters if d.offset == off]
    except ValueError:
        raise NotFound(f"{ref!r} is not a dead-letter id (PARTITION:OFFSET or OFFSET)") from None
    if not matches:
        raise NotFound(f"no dead letter {ref} (see `kinject dlq list`)")
    if len(matches) > 1:
        ids = ", ".join(d.id for d in matches)
        raise NotFound(f"offset {ref} is in several partitions ({ids}); name one as P:OFFSET")
    return matches[0]


def replayable(letter: DeadLetter) -> bool:
    """Whether the letter holds the record's bytes (a letter of a record too large to keep
    holds its key only)."""
    return letter.value is not None


def drop_superseded(letters: list[DeadLetter], docstore_path: Path) -> list[DeadLetter]:
    """``letters`` less those whose source has a newer record in the replica's lineage (the
    docstore file at ``docstore_path``, read only): one after the letter's record in the same
    partition, applied after the letter was written. Replaying such a letter would put the
    old record back over that one (a delete undone, an old version over a new one)."""
    if not docstore_path.is_file():
        return letters
    kept: list[DeadLetter] = []
    db = sqlite3.connect(f"file:{docstore_path}?mode=ro", uri=True)
    try:
        for letter in letters:
            newer = None
            if (letter.key is not None and letter.source_topic is not None
                    and letter.source_partition is not None
                    and letter.source_offset is not None and letter.at is not None):
                newer = db.execute(
                    "SELECT op, partition, offset FROM lineage WHERE source_id=? AND topic=? "
                    "AND partition=? AND offset>? AND at>? ORDER BY id DESC LIMIT 1",
                    (letter.source_id, letter.source_topic, letter.source_partition,
                     letter.source_offset, letter.at)).fetchone()
            if newer is None:
                kept.append(letter)
            else:
                _log.warning("dead letter %s (%s) not replayed: a newer record of the source "
                             "(%s at %s:%s) came after it; replaying would undo it. Publish "
                             "the source again if it is still wanted", letter.id,
                             letter.source_id, *newer)
    finally:
        db.close()
    return kept


def replay(producer: Producer, letters: list[DeadLetter]) -> list[str]:
    """Re-publish each letter's original key and value to the records topic; return ids."""
    sent: list[str] = []
    for letter in letters:
        if not replayable(letter):
            # A key without a value is a Kafka tombstone: re-sending it would delete the
            # source. Letters of records too large to keep have no value (nor does a
            # tombstone that failed, and it would fail again).
            _log.warning("dead letter %s (%s) holds no value to replay (%s); skipped: "
                         "publish the source again", letter.id, letter.source_id,
                         letter.reason)
            continue
        sent.append(producer.send_raw(letter.key, letter.value))
        _log.info("replayed dead letter %s (%s)", letter.id, letter.source_id)
    producer.flush()
    return sent
