"""The official openai client against kinject's /v1/chat/completions, streaming and not."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from _api_helpers import Served, publish

from _wait import until

pytestmark = pytest.mark.kafka

FACT = "The Orvane ferry leaves Pellick harbour at seven every morning."
QUESTION = "When does the Orvane ferry leave Pellick harbour?"


@pytest.fixture(scope="module")
def client(served: Served) -> openai.OpenAI:
    publish(served, {"source_id": "oa/ferry", "content": FACT})

    def indexed() -> bool:
        with served.client() as c:
            hits = c.get("/v1/search", params={"q": "Orvane ferry Pellick"}).json()["hits"]
        return any(h["source_id"] == "oa/ferry" for h in hits)

    until(indexed, what="the fact in the index")
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.keys["read"],
                         max_retries=0, timeout=60)


def test_models_lists_kinject(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids[:2] == ["kinject", "kinject-base"]


def test_chat_completion(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="kinject", messages=[{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": QUESTION}])
    assert out.object == "chat.completion" and out.model == "kinject"
    text = out.choices[0].message.content
    assert text and out.choices[0].finish_reason == "stop"
    citations = (out.model_extra or {})["citations"]
    assert citations[0]["source_id"] == "oa/ferry" and "[1]" in text
    assert out.usage is not None and out.usage.completion_tokens > 0


def test_chat_completion_streams(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="kinject-base", messages=[{"role": "user", "content": QUESTION}], stream=True)
    chunks = list(stream)
    assert len(chunks) >= 3
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.strip() and chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert (chunks[-1].model_extra or {})["citations"][0]["source_id"] == "oa/ferry"
    # The same answer as without streaming (greedy decoding, same passages).
    plain = client.chat.completions.create(
        model="kinject-base", messages=[{"role": "user", "content": QUESTION}])
    assert text == plain.choices[0].message.content


def test_unknown_model_is_a_clean_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=[
            {"role": "user", "content": QUESTION}])
    assert err.value.status_code == 404
    body = err.value.body
    assert isinstance(body, dict) and "gpt-9" in str(body)


def test_model_name_picks_base_or_an_adapter_version(client: openai.OpenAI, served: Served,
                                                     tiny_lm_dir: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from kinject.finetune.registry import AdapterRegistry

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_lm_dir)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.5)
    model.save_pretrained(str(tmp_path / "adapter"))
    version = AdapterRegistry.for_data_dir(served.settings.data_dir).add(
        tmp_path / "adapter", base_model=str(tiny_lm_dir)).version

    ids = [m.id for m in client.models.list()]
    assert f"kinject@{version}" in ids  # a candidate: nameable, not active
    for name in (f"kinject@{version[:12]}", "kinject-base"):
        out = client.chat.completions.create(model=name, messages=[
            {"role": "user", "content": QUESTION}])
        assert out.model == name and out.choices[0].message.content
        assert (out.model_extra or {})["citations"][0]["source_id"] == "oa/ferry"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="kinject@0123456789ab", messages=[
            {"role": "user", "content": QUESTION}])
