"""AdapterRegistry: content-addressed versions, atomic activation, rollback, taint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from _adapter_helpers import make_adapter

from kinject.errors import NotFound
from kinject.finetune.registry import AdapterRegistry, RegistryError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def adapters(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("adapters-src")
    return [make_adapter(tiny_lm_dir, root / f"a{i}", seed=i) for i in range(4)]


def _add(reg: AdapterRegistry, folder: Path, sources: list[str], parent: str | None = None,
         cycle: int = 1) -> str:
    return reg.add(folder, base_model="tiny", base_model_hash="b" * 64, parent=parent,
                   corpus_manifest=f"m{cycle}", lineage=sources, corpus_cycle=cycle,
                   train_config={"r": 4}, metrics={"loss": 1.0}).version


def test_version_is_the_sha256_of_the_weights_and_holds_its_manifest(
        tmp_path: Path, adapters: list[Path]) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    v = reg.add(adapters[0], base_model="tiny", base_model_hash="b" * 64, lineage=["kb/a"],
                corpus_manifest="abc", corpus_cycle=1, train_config={"r": 4},
                metrics={"loss": 0.5})
    weights = (adapters[0] / "adapter_model.safetensors").read_bytes()
    assert v.version == hashlib.sha256(weights).hexdigest()
    folder = reg.path(v.version)
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "manifest.json"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "candidate" and manifest["lineage"] == ["kb/a"]
    assert manifest["base_model_hash"] == "b" * 64 and manifest["corpus_manifest"] == "abc"
    assert manifest["train_config"] == {"r": 4} and manifest["created_at"] > 0
    # the same weights again: the same version, nothing duplicated
    again = reg.add(adapters[0], base_model="tiny", lineage=["kb/zzz"])
    assert again.version == v.version and again.lineage == ("kb/a",)
    assert len(reg.versions()) == 1
    assert reg.get(v.version[:10]).version == v.version
    with pytest.raises(NotFound):
        reg.get("feedfacecafe")


def test_references_match_only_the_registry_own_version_names(
        tmp_path: Path, adapters: list[Path]) -> None:
    """A reference is never joined into a path: a complete adapter folder outside the
    registry, reached by ``..`` or an absolute path, is an unknown version."""
    import shutil

    reg = AdapterRegistry(tmp_path / "data" / "adapters")
    v = _add(reg, adapters[0], ["kb/a"])
    outside = tmp_path / "evil"
    shutil.copytree(reg.path(v), outside)
    for ref in ("../../../evil", str(outside), f"../{v}", f"./{v}", f"{v}/", "..", ".", "",
                f"../../../evil/{v}"):
        for call in (reg.resolve, reg.get, reg.path, reg.activate):
            with pytest.raises(NotFound):
                call(ref)
    assert reg.active() is None and reg.names() == [v]
    assert reg.resolve(v.upper()) == v and reg.resolve(f" {v[:8]} ") == v


def test_a_folder_that_is_not_an_adapter_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="adapter_model.safetensors"):
        AdapterRegistry(tmp_path / "adapters").add(tmp_path / "empty", base_model="tiny")


def test_activation_is_recorded_and_rollback_walks_back(tmp_path: Path,
                                                         adapters: list[Path]) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    assert reg.active() is None
    v1 = _add(reg, adapters[0], ["kb/a"])
    v2 = _add(reg, adapters[1], ["kb/b"], parent=v1, cycle=2)
    v3 = _add(reg, adapters[2], ["kb/c"], parent=v2, cycle=3)
    for v in (v1, v2, v3):
        reg.activate(v, "promoted")
    assert reg.active() == v3 and reg.get(v3).status == "promoted"
    assert json.loads(reg.pointer.read_text())["version"] == v3
    assert reg.rollback().version == v2
    assert reg.rollback().version == v1
    assert reg.rollback().version is None  # back to the base model
    assert reg.rollback().version is None  # the base is the floor
    assert [(c.version, c.reason) for c in reg.history()][-2:] == [(None, "rollback")] * 2
    # activation after rollbacks starts a new history line
    reg.activate(v3)
    assert reg.rollback().version is None
    assert not list(reg.root.glob(".*.tmp"))  # every pointer write was a rename


def test_lineage_is_inherited_and_taint_reaches_descendants_and_serving(
        tmp_path: Path, adapters: list[Path]) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    v1 = _add(reg, adapters[0], ["kb/a"])
    v2 = _add(reg, adapters[1], ["kb/b"], parent=v1, cycle=2)
    v3 = _add(reg, adapters[2], ["kb/c"], parent=v2, cycle=3)
    assert reg.get(v3).lineage == ("kb/a", "kb/b", "kb/c")
    reg.activate(v1)
    reg.activate(v2)
    reg.activate(v3)

    tainted, change = reg.taint_source("kb/b")
    assert sorted(tainted) == sorted([v2, v3])
    assert reg.get(v1).status == "promoted"
    assert reg.get(v3).status == "tainted" and reg.get(v3).report["tainted_by"] == ["kb/b"]
    # serving falls back to the newest untainted promoted ancestor at once
    assert change is not None and change.version == v1 and change.reason == "tainted"
    assert reg.active() == v1
    assert reg.newest_untainted_ancestor(v3) is not None
    assert reg.newest_untainted_ancestor(v3).version == v1  # type: ignore[union-attr]
    # the next cycle's gate holds a retrain to the bar of the version the delete displaced
    assert reg.displaced_by_taint() == v3
    with pytest.raises(RegistryError, match="tainted"):
        reg.activate(v3)
    with pytest.raises(RegistryError, match="tainted"):
        reg.set_status(v3, "promoted")
    # tainting again changes nothing
    assert reg.taint_source("kb/b") == ([], None)
    # the root source taints the rest; serving goes back to the base model
    tainted, change = reg.taint_source("kb/a")
    assert tainted == [v1] and change is not None and change.version is None
    assert reg.newest_untainted_ancestor(v3) is None
    # two deletes in a row: what served before the first of them is still the bar
    assert reg.displaced_by_taint() == v3
    # once anything is activated again, no delete is pending
    v4 = _add(reg, adapters[3], ["kb/d"], cycle=4)
    reg.activate(v4)
    assert reg.displaced_by_taint() is None


def test_taint_missing_marks_versions_whose_sources_left_the_corpus(
        tmp_path: Path, adapters: list[Path]) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    v1 = _add(reg, adapters[0], ["kb/a", "kb/b"])
    v2 = _add(reg, adapters[1], ["kb/c"])
    reg.activate(v2)
    tainted, change = reg.taint_missing({"kb/a", "kb/c"})
    assert tainted == [v1] and change is None and reg.active() == v2
    assert reg.displaced_by_taint() is None  # serving was not moved


def test_rejected_versions_keep_their_report(tmp_path: Path, adapters: list[Path]) -> None:
    reg = AdapterRegistry(tmp_path / "adapters")
    v = _add(reg, adapters[3], ["kb/x"])
    reg.set_status(v, "rejected", report={"promote": False, "reasons": ["no gain"]},
                   metrics={"new_accuracy": 0.1})
    got = AdapterRegistry(tmp_path / "adapters").get(v)  # as another process sees it
    assert got.status == "rejected" and got.report["reasons"] == ["no gain"]
    assert got.metrics == {"loss": 1.0, "new_accuracy": 0.1}


def test_no_reader_ever_sees_a_tainted_version_active(
        tmp_path: Path, adapters: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process reads the files without the lock: after every file the taint writes,
    ACTIVE never names a tainted version (it moves before, not after, the manifests)."""
    import kinject.finetune.active_pointer as pointer_module
    import kinject.finetune.registry as registry_module

    reg = AdapterRegistry(tmp_path / "adapters")
    v1 = _add(reg, adapters[0], ["kb/a"])
    v2 = _add(reg, adapters[1], ["kb/b"], parent=v1, cycle=2)
    reg.activate(v1)
    reg.activate(v2)
    seen: list[tuple[str | None, str]] = []
    real_write = registry_module._write_atomic

    def write_and_look(path: Path, text: str) -> None:
        real_write(path, text)
        reader = AdapterRegistry(tmp_path / "adapters")  # as another process sees it
        active = reader.active()
        seen.append((active, reader.get(active).status if active else "base"))

    monkeypatch.setattr(registry_module, "_write_atomic", write_and_look)  # the manifests
    monkeypatch.setattr(pointer_module, "_write_atomic", write_and_look)  # ACTIVE
    tainted, change = reg.taint_source("kb/b")
    assert tainted == [v2] and change is not None and change.version == v1
    assert len(seen) >= 2  # the pointer and the manifest
    assert all(status != "tainted" for _, status in seen), seen
    assert reg.active() == v1 and reg.get(v2).status == "tainted"


def test_a_fetched_version_whose_parent_stayed_behind_can_be_tainted_and_shown(
        tmp_path: Path, adapters: list[Path]) -> None:
    """A replica fetches only the version it serves, not its parents: a delete of a source in
    its lineage still taints it and falls back to the base (no NotFound for the parent)."""
    import shutil

    trainer = AdapterRegistry(tmp_path / "trainer")
    v1 = _add(trainer, adapters[0], ["kb/a"])
    v2 = _add(trainer, adapters[1], ["kb/b"], parent=v1, cycle=2)
    trainer.activate(v2)
    replica = AdapterRegistry(tmp_path / "replica")
    unpacked = replica.versions_dir / f".{v2}.fetch"
    shutil.copytree(trainer.path(v2), unpacked)  # as finetune/fetch.py unpacks an archive
    assert replica.install(unpacked) == v2
    replica.activate(v2)
    assert [v.version for v in replica.ancestors(v2)] == [v2]
    assert replica.newest_untainted_ancestor(v2).version == v2  # type: ignore[union-attr]
    tainted, change = replica.taint_source("kb/a")
    assert tainted == [v2] and change is not None and change.version is None
    assert replica.active() is None


def test_rollback_after_a_crash_between_the_pointer_and_its_history_line(
        tmp_path: Path, adapters: list[Path]) -> None:
    """An activation writes ACTIVE, then appends its history line. A process killed between
    the two left ACTIVE on the new version with no line for it, and rollback, which walks
    the history, took the previous version for the current one: it skipped back past it."""
    import time

    from kinject.finetune.adapter_manifest import _write_atomic

    reg = AdapterRegistry(tmp_path / "adapters")
    v1 = _add(reg, adapters[0], ["kb/a"])
    v2 = _add(reg, adapters[1], ["kb/b"], parent=v1, cycle=2)
    reg.activate(v1, "promoted")
    # activate(v2) up to the crash: the status and the pointer written, no history line
    reg.set_status(v2, "promoted")
    _write_atomic(reg.pointer, json.dumps({"version": v2, "at": time.time(),
                                           "reason": "promoted"}) + "\n")
    reopened = AdapterRegistry(tmp_path / "adapters")  # the process that comes back
    assert reopened.active() == v2
    assert reopened.rollback().version == v1
    assert reopened.active() == v1


def test_a_version_folder_is_on_disk_before_its_name_is(
        tmp_path: Path, adapters: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # A power cut cannot be staged in a test; what can be checked is the order a crash-safe
    # registration needs: every file of the version flushed before the rename that gives the
    # folder its name (the ACTIVE pointer, fsynced, may name it next), the directory after.
    import os

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync " + Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    def replace(a: object, b: object) -> None:
        events.append("rename " + Path(str(b)).name)
        real_replace(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    reg = AdapterRegistry(tmp_path / "adapters")
    version = _add(reg, adapters[0], ["kb/a"])
    rename = events.index("rename " + version)
    flushed = {e.split(" ", 1)[1] for e in events[:rename] if e.startswith("fsync ")}
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json"} <= flushed
    assert "fsync versions" in events[rename:]
