"""AdapterSwitcher: the active adapter on the serving generator, hot-swapped, per request."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from _adapter_helpers import logits_of, make_adapter

from _wait import until
from kinject.config import KafkaSettings
from kinject.finetune.registry import AdapterRegistry
from kinject.finetune.serving import AdapterLoadError, AdapterSwitcher
from kinject.models import LoadedGenerator
from kinject.rag.generate import generate_chat
from kinject.stream.adapter_events import publish_activation, subscription

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adapter_dirs(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("serving-adapters")
    return [make_adapter(tiny_lm_dir, root / f"a{i}", seed=10 + i) for i in range(2)]


@pytest.fixture(scope="module")
def reference(tiny_lm_dir: Path, adapter_dirs: list[Path]) -> dict[str, torch.Tensor]:
    """Logits of base, base+a0 and base+a1, each from a model loaded on its own."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_lm_dir))
    out = {"base": logits_of(AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir)), tok)}
    for i, d in enumerate(adapter_dirs):
        base = AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir))
        out[f"a{i}"] = logits_of(PeftModel.from_pretrained(base, str(d)).eval(), tok)
    return out  # type: ignore[return-value]


def _generator(tiny_lm_dir: Path) -> LoadedGenerator:
    # Loaded here, not through the cached load_generator: PEFT changes the model in place.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir)).eval()
    return LoadedGenerator(model=model, tokenizer=AutoTokenizer.from_pretrained(
        str(tiny_lm_dir)), device="cpu", name="tiny")


def _registry(root: Path, adapter_dirs: list[Path]) -> tuple[AdapterRegistry, list[str]]:
    reg = AdapterRegistry(root)
    versions = [reg.add(d, base_model="tiny", lineage=[f"kb/{i}"]).version
                for i, d in enumerate(adapter_dirs)]
    return reg, versions


def _served_logits(switcher: AdapterSwitcher, version: str | None = "active") -> Any:
    return logits_of(_Forward(switcher, version), switcher.generator(version).tokenizer)


class _Forward:
    """Calls the model under the switcher's lock with the version selected."""

    def __init__(self, switcher: AdapterSwitcher, version: str | None) -> None:
        self.switcher, self.version = switcher, version

    def __call__(self, **kw: Any) -> Any:
        with self.switcher.selected(self.version) as model:
            return model(**kw)


def test_serves_the_active_version_a_named_one_per_request_and_the_base(
        tmp_path: Path, tiny_lm_dir: Path, adapter_dirs: list[Path],
        reference: dict[str, torch.Tensor]) -> None:
    reg, (v0, v1) = _registry(tmp_path / "adapters", adapter_dirs)
    switcher = AdapterSwitcher(_generator(tiny_lm_dir), reg)
    assert switcher.refresh() is False and switcher.current_version is None
    assert torch.allclose(_served_logits(switcher), reference["base"], atol=1e-5)

    reg.activate(v0)
    assert switcher.refresh() is True and switcher.current_version == v0
    assert torch.allclose(_served_logits(switcher), reference["a0"], atol=1e-5)
    # a request naming another version gets that one; the active one is unchanged
    assert torch.allclose(_served_logits(switcher, v1[:10]), reference["a1"], atol=1e-5)
    assert torch.allclose(_served_logits(switcher, None), reference["base"], atol=1e-5)
    assert torch.allclose(_served_logits(switcher), reference["a0"], atol=1e-5)
    assert switcher.current_version == v0 and set(switcher.loaded_versions) == {v0, v1}

    # a named version that a delete tainted is refused, even though it is loaded
    reg.taint_source("kb/1")
    with pytest.raises(AdapterLoadError, match="tainted"):
        _served_logits(switcher, v1)
    with pytest.raises(AdapterLoadError, match="tainted"):
        switcher.generator(v1)
    assert torch.allclose(_served_logits(switcher), reference["a0"], atol=1e-5)

    # rag.generate drives it like any LoadedGenerator
    text = generate_chat(switcher.generator(), [{"role": "user", "content": "Marrow?"}], 4)
    assert isinstance(text, str)
    assert switcher.generator(v0).name.endswith(v0[:12])


def test_pointer_changes_hot_swap_without_a_restart(
        tmp_path: Path, tiny_lm_dir: Path, adapter_dirs: list[Path],
        reference: dict[str, torch.Tensor]) -> None:
    reg, (v0, v1) = _registry(tmp_path / "adapters", adapter_dirs)
    reg.activate(v0)
    switcher = AdapterSwitcher(_generator(tiny_lm_dir), reg, max_loaded=1)
    stop = threading.Event()
    thread = switcher.watch(stop, interval_s=0.05)
    try:
        assert switcher.ready.wait(10) and switcher.current_version == v0
        reg.activate(v1)
        until(lambda: switcher.current_version == v1, 10, "v1 to be served")
        assert torch.allclose(_served_logits(switcher), reference["a1"], atol=1e-5)
        assert switcher.loaded_versions == [v1]  # max_loaded=1: the old one was unloaded
        reg.rollback()
        until(lambda: switcher.current_version == v0, 10, "v0 to be served again")
        # a delete taints v0: the registry falls back to the base and serving follows
        reg.taint_source("kb/0")
        until(lambda: switcher.current_version is None, 10, "the base to be served")
        assert torch.allclose(_served_logits(switcher), reference["base"], atol=1e-5)
    finally:
        stop.set()
        thread.join(10)


def test_a_copy_that_does_not_match_its_name_is_never_served(
        tmp_path: Path, tiny_lm_dir: Path, adapter_dirs: list[Path],
        reference: dict[str, torch.Tensor]) -> None:
    reg, (v0, v1) = _registry(tmp_path / "adapters", adapter_dirs)
    reg.activate(v0)
    switcher = AdapterSwitcher(_generator(tiny_lm_dir), reg)
    switcher.refresh()
    weights = reg.path(v1) / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16] + b"\0" * 16)  # a torn copy
    reg.activate(v1)
    with pytest.raises(AdapterLoadError, match="do not hash"):
        switcher.refresh()
    assert switcher.current_version == v0
    assert torch.allclose(_served_logits(switcher), reference["a0"], atol=1e-5)


@pytest.mark.kafka
def test_two_replicas_switch_after_a_promotion_event(
        tmp_path: Path, tiny_lm_dir: Path, adapter_dirs: list[Path],
        kafka_bootstrap: str) -> None:
    reg, (v0, _) = _registry(tmp_path / "adapters", adapter_dirs)
    kafka = KafkaSettings(topic_prefix=f"serving-{tmp_path.name}")
    replicas = [AdapterSwitcher(_generator(tiny_lm_dir), AdapterRegistry(reg.root))
                for _ in range(2)]
    stop = threading.Event()
    # A long pointer interval: the switch within the bound below comes from the event.
    threads = [r.watch(stop, events=subscription(kafka, kafka_bootstrap), interval_s=8.0)
               for r in replicas]
    try:
        assert all(r.ready.wait(30) for r in replicas)
        assert [r.current_version for r in replicas] == [None, None]
        t0 = time.monotonic()
        change = reg.activate(v0, "promoted")
        publish_activation(kafka, kafka_bootstrap, change)
        until(lambda: all(r.current_version == v0 for r in replicas), 6.0,
              "every replica to serve v0")
        assert time.monotonic() - t0 < 6.0
    finally:
        stop.set()
        for t in threads:
            t.join(15)


def test_promotion_events_name_the_weights_sha256(tmp_path: Path,
                                                  adapter_dirs: list[Path]) -> None:
    from kinject.finetune.registry import file_sha256
    from kinject.stream.adapter_events import decode_event, encode_event

    reg, (v0, _) = _registry(tmp_path / "adapters", adapter_dirs)
    event = decode_event(encode_event(reg.activate(v0, "promoted")))
    assert event["version"] == v0
    assert event["sha256"] == file_sha256(reg.path(v0) / "adapter_model.safetensors")
    assert decode_event(encode_event(reg.activate(None)))["sha256"] is None


@pytest.mark.kafka
def test_a_replica_refuses_a_copy_that_does_not_match_the_announced_hash(
        tmp_path: Path, tiny_lm_dir: Path, adapter_dirs: list[Path], kafka_bootstrap: str,
        reference: dict[str, torch.Tensor], caplog: pytest.LogCaptureFixture) -> None:
    # the trainer's registry, and the copy a replica on another host sees of it (a volume
    # that is still being synced): same versions, but the replica's v1 bytes are torn
    trainer, (v0, v1) = _registry(tmp_path / "trainer", adapter_dirs)
    replica_reg = AdapterRegistry(tmp_path / "replica")
    for v in (v0, v1):
        replica_reg.add(trainer.path(v), base_model="tiny", lineage=[])
    weights = replica_reg.path(v1) / "adapter_model.safetensors"
    kafka = KafkaSettings(topic_prefix=f"sha-{tmp_path.name}")
    replica = AdapterSwitcher(_generator(tiny_lm_dir), replica_reg)
    stop = threading.Event()
    thread = replica.watch(stop, events=subscription(kafka, kafka_bootstrap), interval_s=0.2)
    try:
        assert replica.ready.wait(30)
        publish_activation(kafka, kafka_bootstrap, trainer.activate(v0, "promoted"))
        replica_reg.activate(v0, "promoted")
        until(lambda: replica.current_version == v0, 10, "the replica to serve v0")

        weights.write_bytes(weights.read_bytes()[:-16] + b"\0" * 16)
        caplog.clear()
        with caplog.at_level("ERROR", logger="kinject.finetune.serving"):
            publish_activation(kafka, kafka_bootstrap, trainer.activate(v1, "promoted"))
            replica_reg.activate(v1, "promoted")
            until(lambda: any("do not hash" in r.getMessage() for r in caplog.records), 10,
                  "the torn copy to be refused")
            time.sleep(1.0)  # many pointer checks later, the error is not repeated
        refusals = [r for r in caplog.records if "do not hash" in r.getMessage()]
        assert len(refusals) == 1 and v1[:12] in refusals[0].getMessage()
        # the replica goes on serving what it served, with v0's weights
        assert replica.current_version == v0
        assert torch.allclose(_served_logits(replica), reference["a0"], atol=1e-5)

        # once the copy is whole, the next look serves it
        weights.write_bytes((trainer.path(v1) / "adapter_model.safetensors").read_bytes())
        until(lambda: replica.current_version == v1, 10, "the replica to serve v1")
        assert torch.allclose(_served_logits(replica), reference["a1"], atol=1e-5)
    finally:
        stop.set()
        thread.join(15)


def test_promotion_events_name_their_registry_and_where_the_bytes_are(
        tmp_path: Path, adapter_dirs: list[Path]) -> None:
    from kinject.finetune.fetch import archive_url
    from kinject.stream.adapter_events import decode_event, encode_event

    reg, (v0, _) = _registry(tmp_path / "adapters", adapter_dirs)
    change = reg.activate(v0, "promoted")
    event = decode_event(encode_event(change, origin=reg.identity(),
                                      url=archive_url("http://trainer:8000/", v0)))
    assert event["origin"] == reg.identity()
    assert event["url"] == f"http://trainer:8000/v1/adapters/{v0}/archive"
    # no publish_url, or the base model: no URL (replicas share the folder, or load nothing)
    assert decode_event(encode_event(change))["url"] is None
    assert archive_url("", v0) is None and archive_url("http://trainer:8000", None) is None


@pytest.mark.kafka
def test_a_replica_with_its_own_registry_follows_the_events_of_another(
        tmp_path: Path, tiny_lm_dir: Path, adapter_dirs: list[Path], kafka_bootstrap: str,
        caplog: pytest.LogCaptureFixture) -> None:
    # the trainer's registry and a replica's registry on another disk, which holds v0 only
    trainer, (v0, v1) = _registry(tmp_path / "trainer", adapter_dirs)
    replica_reg = AdapterRegistry(tmp_path / "replica")
    replica_reg.add(trainer.path(v0), base_model="tiny", lineage=[])
    kafka = KafkaSettings(topic_prefix=f"own-{tmp_path.name}")
    # promoted before the replica starts: it takes the last event on the topic
    publish_activation(kafka, kafka_bootstrap, trainer.activate(v0, "promoted"),
                       registry=trainer)
    replica = AdapterSwitcher(_generator(tiny_lm_dir), replica_reg)
    stop = threading.Event()
    thread = replica.watch(stop, events=subscription(kafka, kafka_bootstrap), interval_s=0.2)
    try:
        until(lambda: replica.current_version == v0, 30, "the replica to catch up with v0")
        assert replica_reg.active() == v0  # its own pointer follows the other registry's

        # v1 is promoted with no URL to fetch it from: said once, v0 goes on serving
        with caplog.at_level("ERROR", logger="kinject.finetune.serving"):
            publish_activation(kafka, kafka_bootstrap, trainer.activate(v1, "promoted"),
                               registry=trainer)
            until(lambda: any("names no URL" in r.getMessage() for r in caplog.records), 30,
                  "the replica to say it cannot get v1")
        assert replica.current_version == v0 and replica_reg.active() == v0
        assert v1 not in replica_reg.names()

        # rollbacks on the trainer are followed too: back to v0, then to the base model
        for _ in range(2):
            publish_activation(kafka, kafka_bootstrap, trainer.rollback(), registry=trainer)
        until(lambda: replica.current_version is None, 30, "the replica to serve the base")
        assert replica_reg.active() is None
        assert replica_reg.history()[-1].reason == "rollback"
    finally:
        stop.set()
        thread.join(15)


@pytest.mark.kafka
def test_junk_on_the_adapter_topic_is_skipped_and_the_watcher_goes_on(
        tmp_path: Path, tiny_lm_dir: Path, adapter_dirs: list[Path],
        kafka_bootstrap: str) -> None:
    """A record that is JSON but not an event object ([], "x") or has no value at all (a
    tombstone) is logged and skipped: the replica still follows the next promotion."""
    from kinject.stream.clients import make_producer
    from kinject.stream.topics import ensure_topics

    trainer, (v0, _) = _registry(tmp_path / "trainer", adapter_dirs)
    replica_reg = AdapterRegistry(tmp_path / "replica")
    replica_reg.add(trainer.path(v0), base_model="tiny", lineage=[])
    kafka = KafkaSettings(topic_prefix=f"junk-{tmp_path.name}")
    topic = ensure_topics(kafka, kafka_bootstrap).adapters
    replica = AdapterSwitcher(_generator(tiny_lm_dir), replica_reg)
    stop = threading.Event()
    thread = replica.watch(stop, events=subscription(kafka, kafka_bootstrap), interval_s=0.2)
    try:
        assert replica.ready.wait(30)
        producer = make_producer(kafka, kafka_bootstrap)
        try:
            for junk in (b"[]", b'"x"', None):
                producer.send(topic, key=b"active", value=junk).get(timeout=30)
        finally:
            producer.close()
        publish_activation(kafka, kafka_bootstrap, trainer.activate(v0, "promoted"),
                           registry=trainer)
        until(lambda: replica.current_version == v0, 30, "the replica to follow v0")
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(15)


@pytest.mark.kafka
def test_a_broker_down_at_start_neither_stops_pointer_follows_nor_later_events(
        tmp_path: Path, tiny_lm_dir: Path, adapter_dirs: list[Path],
        kafka_bootstrap: str) -> None:
    """The event feed cannot be opened at first (the broker is not up yet): the switcher
    still follows its ACTIVE pointer, and opens the feed again later to take events."""
    from kinject.errors import BrokerError

    trainer, (v0, v1) = _registry(tmp_path / "trainer", adapter_dirs)
    replica_reg = AdapterRegistry(tmp_path / "replica")
    replica_reg.add(trainer.path(v0), base_model="tiny", lineage=[])
    replica_reg.add(trainer.path(v1), base_model="tiny", lineage=[])
    kafka = KafkaSettings(topic_prefix=f"late-{tmp_path.name}")
    real = subscription(kafka, kafka_bootstrap)
    assert real is not None
    tries: list[int] = []

    def late_broker() -> Any:
        tries.append(1)
        if len(tries) == 1:
            raise BrokerError(f"cannot reach the Kafka broker at {kafka_bootstrap}")
        return real()

    replica = AdapterSwitcher(_generator(tiny_lm_dir), replica_reg, retry_s=0.2)
    stop = threading.Event()
    thread = replica.watch(stop, events=late_broker, interval_s=0.2)
    try:
        assert replica.ready.wait(30)
        replica_reg.activate(v0)  # the pointer is followed without the broker
        until(lambda: replica.current_version == v0, 30, "the replica to follow its pointer")
        until(lambda: len(tries) >= 2, 30, "the feed to be opened again")
        publish_activation(kafka, kafka_bootstrap, trainer.activate(v1, "promoted"),
                           registry=trainer)
        until(lambda: replica.current_version == v1, 30, "the replica to follow the event")
    finally:
        stop.set()
        thread.join(15)
