"""Adapters on the CTranslate2 INT8 serving generator (models.quantize=ct2-int8): each version
is merged into the base and converted once; torch answers with it until the copy is made."""

from __future__ import annotations

from pathlib import Path

import pytest
from _adapter_helpers import make_adapter

from kinject.finetune.registry import AdapterRegistry
from kinject.finetune.serving import AdapterSwitcher
from kinject.generator_ct2 import Ct2Generators, Ct2Model
from kinject.models import LoadedGenerator, conversion_lock
from kinject.rag.generate import Sampling, generate_chat

pytestmark = pytest.mark.usefixtures("one_thread")

ASK = [{"role": "user", "content": "When was the Marrow Institute founded?"}]


def _ct2(base: Path, models_dir: Path) -> LoadedGenerator:
    # Not through the cached load_generator: each test has its own cache and switcher.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    copies = Ct2Generators(str(base), "tiny", models_dir, tok, "cpu")
    return LoadedGenerator(model=copies.base, tokenizer=tok, device="cpu", name="tiny")


def _torch(base: Path, adapter: Path | None) -> LoadedGenerator:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base)).eval()
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter)).eval()
    return LoadedGenerator(model=model, tokenizer=AutoTokenizer.from_pretrained(str(base)),
                           device="cpu", name="tiny")


def _served_by(switcher: AdapterSwitcher) -> object:
    with switcher.selected() as model:
        return model


def test_an_adapter_is_served_by_its_merged_int8_copy(tiny_lm_dir: Path,
                                                      tmp_path: Path) -> None:
    # LoRA B at 0.1 scale: each adapter clearly changes what the model writes, without
    # driving the random tiny model into loops of one token where its first and second
    # choices tie (at 0.5, INT8 rounding flips such a tie late in some answers)
    dirs = [make_adapter(tiny_lm_dir, tmp_path / f"a{i}", seed=10 + i, scale=0.1)
            for i in range(2)]
    reg = AdapterRegistry(tmp_path / "adapters")
    v0, v1 = (reg.add(d, base_model="tiny", lineage=[f"kb/{i}"]).version
              for i, d in enumerate(dirs))
    want = {v: generate_chat(_torch(tiny_lm_dir, d), ASK, 10)
            for v, d in ((v0, dirs[0]), (v1, dirs[1]), (None, None))}
    assert len(set(want.values())) == 3  # each adapter changes what the model writes
    loaded = _ct2(tiny_lm_dir, tmp_path / "models")
    copies = loaded.model.copies
    switcher = AdapterSwitcher(loaded, reg)
    served = switcher.generator()
    assert generate_chat(served, ASK, 10) == want[None]  # the base's INT8 copy
    for version in (v0, v1):
        # held as another process converting it would hold it: the copy cannot be made yet
        with conversion_lock(copies.models_dir, copies.target(version).name):
            switcher.apply(version)  # the version's INT8 copy is made in the background ...
            assert not isinstance(_served_by(switcher), Ct2Model)  # ... torch answers ...
            assert generate_chat(served, ASK, 10) == want[version]  # ... with the adapter
        copy = copies.wait(version, timeout_s=120)
        assert isinstance(copy, Ct2Model) and copy.version == version
        assert _served_by(switcher) is copy  # hot-swapped onto the INT8 copy once made
        assert generate_chat(served, ASK, 10) == want[version]
    switcher.apply(None)
    assert _served_by(switcher) is copies.base
    assert generate_chat(served, ASK, 10) == want[None]
    # a named version, not the active one, is served by its own copy too
    assert generate_chat(switcher.generator(v0), ASK, 10) == want[v0]
    # sampled decoding goes to torch, where a seed repeats its sample
    sample = Sampling(temperature=1.5, seed=7)
    assert generate_chat(served, ASK, 10, sample) == generate_chat(served, ASK, 10, sample)


def test_a_versions_copy_is_converted_once_and_reused(tiny_lm_dir: Path,
                                                      tmp_path: Path) -> None:
    adapter = make_adapter(tiny_lm_dir, tmp_path / "a", seed=3, scale=0.1)
    reg = AdapterRegistry(tmp_path / "adapters")
    version = reg.add(adapter, base_model="tiny", lineage=["kb/0"]).version
    first = _ct2(tiny_lm_dir, tmp_path / "models").model.copies
    first.start(version, reg.path(version))
    made = first.wait(version, timeout_s=120)
    assert made is not None
    stamp = (made.folder / "model.bin").stat().st_mtime_ns
    # a restarted service (new copies, same cache) serves the version's copy at once
    again = _ct2(tiny_lm_dir, tmp_path / "models").model.copies
    switcher = AdapterSwitcher(LoadedGenerator(again.base, again.tokenizer, "cpu", "tiny"), reg)
    switcher.apply(version)
    copy = _served_by(switcher)
    assert isinstance(copy, Ct2Model) and copy.folder == made.folder
    assert (copy.folder / "model.bin").stat().st_mtime_ns == stamp  # not converted again
    assert version[:32] in copy.folder.name  # kept under the version's content hash


def test_a_failed_conversion_leaves_torch_serving_the_version(
        tiny_lm_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    adapter = make_adapter(tiny_lm_dir, tmp_path / "a", seed=4, scale=0.1)
    reg = AdapterRegistry(tmp_path / "adapters")
    version = reg.add(adapter, base_model="tiny", lineage=["kb/0"]).version
    want = generate_chat(_torch(tiny_lm_dir, adapter), ASK, 10)
    loaded = _ct2(tiny_lm_dir, tmp_path / "models")
    copies = loaded.model.copies
    copies.target(version).write_text("in the way")  # the copy cannot be renamed into place
    switcher = AdapterSwitcher(loaded, reg)
    switcher.apply(version)
    assert copies.wait(version, timeout_s=120) is None
    assert any(f"adapter {version[:12]}: no CTranslate2 INT8 copy" in r.getMessage()
               for r in caplog.records if r.levelname == "ERROR")
    assert not isinstance(_served_by(switcher), Ct2Model)
    assert generate_chat(switcher.generator(), ASK, 10) == want  # still the adapter's answer


def test_old_copies_are_pruned_from_the_cache(tiny_lm_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Ct2Generators, "KEEP_ON_DISK", 1)
    reg = AdapterRegistry(tmp_path / "adapters")
    versions = [reg.add(make_adapter(tiny_lm_dir, tmp_path / f"a{i}", seed=20 + i, scale=0.1),
                        base_model="tiny", lineage=[f"kb/{i}"]).version for i in range(2)]
    copies = _ct2(tiny_lm_dir, tmp_path / "models").model.copies
    made = []
    for v in versions:
        copies.start(v, reg.path(v))
        made.append(copies.wait(v, timeout_s=120))
    assert all(made)
    assert not copies.target(versions[0]).exists()  # the older one left the disk ...
    assert (copies.target(versions[1]) / "model.bin").is_file()
    assert copies.ready(versions[0]) is made[0]  # ... not this process's memory


def test_an_adapter_on_a_base_de_quantised_from_gguf_gets_its_int8_copy(
        tiny_lm_dir: Path, tmp_path: Path) -> None:
    # The default generator is SmolLM2 de-quantised from GGUF into a folder whose config still
    # names the GGUF (kinject.models.ensure_converted); transformers refuses to save a model
    # loaded with that entry, so merging an adapter into it failed and every version was left
    # on torch.
    import json
    import shutil

    base = tmp_path / "from-gguf"
    shutil.copytree(tiny_lm_dir, base)
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gguf"}
    (base / "config.json").write_text(json.dumps(config))
    adapter = make_adapter(tiny_lm_dir, tmp_path / "a", seed=5, scale=0.1)
    reg = AdapterRegistry(tmp_path / "adapters")
    version = reg.add(adapter, base_model="tiny", lineage=["kb/0"]).version
    want = generate_chat(_torch(tiny_lm_dir, adapter), ASK, 10)
    copies = _ct2(base, tmp_path / "models").model.copies
    copies.start(version, reg.path(version))
    copy = copies.wait(version, timeout_s=120)
    assert isinstance(copy, Ct2Model)
    switcher = AdapterSwitcher(LoadedGenerator(copies.base, copies.tokenizer, "cpu", "tiny"), reg)
    switcher.apply(version)
    assert generate_chat(switcher.generator(), ASK, 10) == want


def test_a_failed_clean_up_does_not_unmake_a_copy(tiny_lm_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process sharing the cache may remove a folder while this one prunes: the copy
    # just made must still serve (it was marked failed and the version pinned to torch).
    def fails(self: Ct2Generators) -> None:
        raise FileNotFoundError("removed by another process")

    monkeypatch.setattr(Ct2Generators, "_prune", fails)
    adapter = make_adapter(tiny_lm_dir, tmp_path / "a", seed=6, scale=0.1)
    reg = AdapterRegistry(tmp_path / "adapters")
    version = reg.add(adapter, base_model="tiny", lineage=["kb/0"]).version
    copies = _ct2(tiny_lm_dir, tmp_path / "models").model.copies
    copies.start(version, reg.path(version))
    assert isinstance(copies.wait(version, timeout_s=120), Ct2Model)
