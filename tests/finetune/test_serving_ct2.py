"""Adapters on the CTranslate2 INT8 serving generator (models.quantize=ct2-int8): each version
is merged into the base and converted once; torch answers with it until the copy is made."""

from __future__ import annotations

import weakref
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


def _adapter(base: Path, out: Path, seed: int, scale: float) -> Path:
    # make_adapter draws LoRA A from torch's global generator: seeded here, so the adapter
    # does not depend on which tests ran before. The tiny model's first and second choices
    # are close (0.02-scale weights), and INT8 rounding flips a close one: the seeds of the
    # tests that compare INT8 answers with fp32's are those whose 10 greedy tokens have the
    # widest smallest gap (0.011-0.017 in logits; most seeds have under 0.005)
    import torch

    torch.manual_seed(seed)
    return make_adapter(base, out, seed=seed, scale=scale)


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
    dirs = [_adapter(tiny_lm_dir, tmp_path / f"a{i}", seed=seed, scale=0.1)
            for i, seed in enumerate((23, 27))]
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
    adapter = _adapter(tiny_lm_dir, tmp_path / "a", seed=3, scale=0.1)
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
    adapter = _adapter(tiny_lm_dir, tmp_path / "a", seed=4, scale=0.1)
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


def test_old_copies_are_pruned_from_the_cache_but_not_those_loaded_here(
        tiny_lm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The active version's copy was used once, at its load; a service that went on to make
    # others removed it from the disk while serving it, and a restart made it again (with
    # the torch model loaded meanwhile).
    monkeypatch.setattr(Ct2Generators, "KEEP_ON_DISK", 1)
    reg = AdapterRegistry(tmp_path / "adapters")
    versions = [reg.add(_adapter(tiny_lm_dir, tmp_path / f"a{i}", seed=20 + i, scale=0.1),
                        base_model="tiny", lineage=[f"kb/{i}"]).version for i in range(3)]
    copies = _ct2(tiny_lm_dir, tmp_path / "models").model.copies
    copies.max_versions = 2  # copies kept loaded in this process
    made = []
    for v in versions[:2]:
        copies.start(v, reg.path(v))
        made.append(copies.wait(v, timeout_s=120))
    assert all(made)
    assert all((copies.target(v) / "model.bin").is_file() for v in versions[:2])  # loaded
    copies.start(versions[2], reg.path(versions[2]))
    assert copies.wait(versions[2], timeout_s=120) is not None
    assert not copies.target(versions[0]).exists()  # out of memory and old: off the disk ...
    assert copies.ready(versions[0]) is None
    assert all((copies.target(v) / "model.bin").is_file() for v in versions[1:])


def test_a_version_whose_copy_is_cached_is_served_without_the_torch_model(
        tiny_lm_dir: Path, tmp_path: Path) -> None:
    # The fp32 torch model plus PEFT was loaded beside the INT8 copies as soon as an adapter
    # was served, even when its copy was made already, and stayed: a server with adapters
    # held more memory than one with quantize=none.
    adapter = _adapter(tiny_lm_dir, tmp_path / "a", seed=35, scale=0.1)
    reg = AdapterRegistry(tmp_path / "adapters")
    version = reg.add(adapter, base_model="tiny", lineage=["kb/0"]).version
    want = generate_chat(_torch(tiny_lm_dir, adapter), ASK, 10)
    first = _ct2(tiny_lm_dir, tmp_path / "models").model.copies
    first.start(version, reg.path(version))
    assert first.wait(version, timeout_s=120) is not None
    restarted = _ct2(tiny_lm_dir, tmp_path / "models")  # a new process, the same cache
    copies = restarted.model.copies
    switcher = AdapterSwitcher(restarted, reg)
    switcher.apply(version)
    assert generate_chat(switcher.generator(), ASK, 10) == want
    assert isinstance(_served_by(switcher), Ct2Model)
    assert not copies.torch_loaded  # never loaded: nothing needed it
    # a sampled request loads it (its seed must repeat), and keeps it a while ...
    now = [1000.0]
    copies.clock = lambda: now[0]
    sample = Sampling(temperature=1.5, seed=7)
    served = switcher.generator()
    assert generate_chat(served, ASK, 10, sample) == generate_chat(served, ASK, 10, sample)
    held = weakref.ref(copies.torch_model())
    assert generate_chat(served, ASK, 10) == want and copies.torch_loaded
    now[0] += Ct2Generators.TORCH_KEEP_S  # ... until nothing sampled for that long
    assert generate_chat(served, ASK, 10) == want
    assert not copies.torch_loaded and held() is None  # given back, not just dropped here


def test_the_torch_model_is_given_back_once_the_copy_is_made(tiny_lm_dir: Path,
                                                            tmp_path: Path) -> None:
    adapter = _adapter(tiny_lm_dir, tmp_path / "a", seed=8, scale=0.1)
    reg = AdapterRegistry(tmp_path / "adapters")
    version = reg.add(adapter, base_model="tiny", lineage=["kb/0"]).version
    want = generate_chat(_torch(tiny_lm_dir, adapter), ASK, 10)
    loaded = _ct2(tiny_lm_dir, tmp_path / "models")
    copies = loaded.model.copies
    switcher = AdapterSwitcher(loaded, reg)
    with conversion_lock(copies.models_dir, copies.target(version).name):
        switcher.apply(version)  # the copy cannot be made yet: torch answers
        assert generate_chat(switcher.generator(), ASK, 10) == want
        held = weakref.ref(copies.torch_model())
    assert copies.wait(version, timeout_s=120) is not None
    # given back when the conversion ended, before any request
    assert not copies.torch_loaded and held() is None
    assert isinstance(_served_by(switcher), Ct2Model)
    assert generate_chat(switcher.generator(), ASK, 10) == want


def test_a_failed_conversion_is_tried_again_after_a_wait_not_at_once(
        tiny_lm_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A conversion that failed once (a full disk, a file in the way) was never tried again
    # until a restart: the version stayed on the torch model.
    adapter = _adapter(tiny_lm_dir, tmp_path / "a", seed=9, scale=0.1)
    reg = AdapterRegistry(tmp_path / "adapters")
    version = reg.add(adapter, base_model="tiny", lineage=["kb/0"]).version
    loaded = _ct2(tiny_lm_dir, tmp_path / "models")
    copies = loaded.model.copies
    now = [0.0]
    copies.clock = lambda: now[0]
    in_the_way = copies.target(version)
    in_the_way.write_text("in the way")
    switcher = AdapterSwitcher(loaded, reg)
    served = switcher.generator()

    def failures() -> list[str]:
        return [r.getMessage() for r in caplog.records
                if r.levelname == "ERROR" and "no CTranslate2 INT8 copy" in r.getMessage()]

    switcher.apply(version)
    assert copies.wait(version, timeout_s=120) is None
    for _ in range(3):  # requests right after the failure do not convert again
        generate_chat(served, ASK, 10)
    assert len(failures()) == 1 and "trying again in 60 s" in failures()[0]
    now[0] += Ct2Generators.RETRY_AFTER_S[0]
    generate_chat(served, ASK, 10)  # the next request after the wait tries again ...
    assert copies.wait(version, timeout_s=120) is None
    assert len(failures()) == 2 and "attempt 2 of 4" in failures()[1]
    in_the_way.unlink()  # ... and once what failed it is gone, the copy is made
    now[0] += Ct2Generators.RETRY_AFTER_S[1]
    generate_chat(served, ASK, 10)
    assert isinstance(copies.wait(version, timeout_s=120), Ct2Model)
    assert isinstance(_served_by(switcher), Ct2Model)
    assert not copies.torch_loaded


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
    adapter = _adapter(tiny_lm_dir, tmp_path / "a", seed=15, scale=0.1)
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
    adapter = _adapter(tiny_lm_dir, tmp_path / "a", seed=6, scale=0.1)
    reg = AdapterRegistry(tmp_path / "adapters")
    version = reg.add(adapter, base_model="tiny", lineage=["kb/0"]).version
    copies = _ct2(tiny_lm_dir, tmp_path / "models").model.copies
    copies.start(version, reg.path(version))
    assert isinstance(copies.wait(version, timeout_s=120), Ct2Model)
