"""Loaders in several threads of one process (a serving process loads the generator, the
reader and the embedder in the background while a fine-tuning job imports peft) must not
fail on transformers' lazy imports: a cycle once failed with "cannot import name
'AutoModel' from 'transformers'" when its peft import raced the generator's load."""

from __future__ import annotations

import subprocess
import sys

import pytest

RACE = """
import threading
from kinject.hf import transformers_ready

errors = []
start = threading.Barrier(4)

def load(kind):
    start.wait()
    try:
        transformers_ready()
        if kind == "peft":
            from peft import LoraConfig, PeftModel  # noqa: F401
        elif kind == "causal":
            from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401
        elif kind == "st":
            from sentence_transformers import SentenceTransformer  # noqa: F401
        else:
            from transformers import AutoModel  # noqa: F401
    except Exception as exc:
        errors.append(f"{kind}: {type(exc).__name__}: {exc}")

threads = [threading.Thread(target=load, args=(k,)) for k in ("peft", "causal", "st", "auto")]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
print("ok")
"""


@pytest.mark.slow
def test_loaders_in_four_threads_at_once_all_get_their_classes() -> None:
    for _ in range(2):  # a fresh interpreter each time: the race is on the first import
        done = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
