"""An answer names the adapter version that wrote it, even when a promotion lands while it is
being answered: the serving side (app.adapters.Adapters, finetune.serving.AdapterSwitcher)
with real PEFT adapters on the tiny LM, and RagService."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from _adapter_helpers import make_adapter

from kinject.app.adapters import Adapters
from kinject.config import load_settings
from kinject.index.embedders import HashEmbedder
from kinject.index.text_index import TextIndex
from kinject.models import LoadedGenerator
from kinject.rag.routes import AdapterState
from kinject.rag.service import RagConfig, RagService

pytestmark = pytest.mark.usefixtures("one_thread")

QUESTION = "Who founded the Marrow Institute?"


def _generator(tiny_lm_dir: Path) -> LoadedGenerator:
    # Loaded here, not through the cached load_generator: PEFT changes the model in place.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir)).eval()
    return LoadedGenerator(model=model, tokenizer=AutoTokenizer.from_pretrained(
        str(tiny_lm_dir)), device="cpu", name="tiny")


def test_an_answer_names_the_adapter_that_wrote_it_when_a_promotion_lands_meanwhile(
        tmp_path: Path, tiny_lm_dir: Path, hash_embedder: HashEmbedder) -> None:
    """Promotions land between the service reading which adapter serves (for the answer's
    label and route) and the model writing. The answer said one version and was written by
    the other; now the version read is the one that writes."""
    settings = load_settings(data_dir=tmp_path / "data",
                             models={"embedder": "hash", "generator": str(tiny_lm_dir)})
    adapters = Adapters(settings, bootstrap=lambda: None)
    registry = adapters.registry()
    # LoRA B at 0.1: at 0.5 the random tiny model falls into loops of one token, and on some
    # CPUs both adapters wrote the same loop
    versions = [registry.add(make_adapter(tiny_lm_dir, tmp_path / f"a{i}", seed=10 + i,
                                          scale=0.1),
                             base_model="tiny", lineage=[]).version for i in range(2)]
    registry.activate(versions[0])
    serving = adapters.with_adapters(_generator(tiny_lm_dir))
    config = RagConfig(mode="free", cache_size=0)

    flipping = True

    def promoting() -> AdapterState:
        """What serves now; then the other version is promoted (as if right after)."""
        state = adapters.adapter_state()
        if flipping:
            registry.activate(versions[1] if state.version == versions[0] else versions[0])
        return state

    with TextIndex(tmp_path / "index", hash_embedder) as index:
        # What each version writes, asked of it by name.
        written = {v: RagService(index, adapters.generator_for(v), config).ask(
            QUESTION, route="adapter").text for v in versions}
        assert written[versions[0]] != written[versions[1]]  # the two adapters tell apart
        rag = RagService(index, serving, config, adapter=promoting)
        for _ in range(2):
            answer = rag.ask(QUESTION, route="adapter")
            assert answer.adapter_version in written
            assert answer.text == written[answer.adapter_version]

        # With the answer cache: an answer is cached under the version that wrote it, so
        # the same question asked while another version serves is not answered from it.
        rag = RagService(index, serving, replace(config, cache_size=8), adapter=promoting)
        first = rag.ask(QUESTION, route="adapter")
        flipping = False
        registry.activate(versions[0] if first.adapter_version == versions[1] else versions[1])
        second = rag.ask(QUESTION, route="adapter")
        assert second.adapter_version != first.adapter_version
        assert second.text == written[second.adapter_version]
