"""Importing transformers and peft once per process, under one lock.

transformers resolves its names lazily (``transformers.AutoModel`` imports its submodule on
first use), and that is not thread-safe: a serving process loads the generator and the reader
in background threads while a fine-tuning job imports peft (which imports transformers' auto
classes), and the loser of the race fails with "cannot import name 'AutoModel' from
'transformers'" (seen as a failed cycle). Every loader calls :func:`transformers_ready` before
its own imports, so the first caller imports both fully and the others wait for it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_ready = False
_load_lock = threading.RLock()


@contextmanager
def model_loading() -> Iterator[None]:
    """Held around transformers' ``from_pretrained`` of a model: while it builds one it
    replaces ``PreTrainedModel.tie_weights`` and torch's init functions process-wide, so two
    loads in two threads at once leave a tied ``lm_head`` on the meta device ("Cannot copy
    out of meta tensor"), or tying off for good (seen: ct2-int8 serving's torch model loaded
    while an adapter's INT8 copy was being merged in the background)."""
    with _load_lock:
        yield


def transformers_ready() -> None:
    """Import transformers (with the auto classes peft uses) and peft, once, under the lock."""
    global _ready
    if _ready:
        return
    with _lock:
        if _ready:
            return
        import transformers

        for name in ("AutoModel", "AutoModelForCausalLM", "AutoTokenizer",
                     "PreTrainedTokenizerBase", "TextIteratorStreamer"):
            getattr(transformers, name)  # resolve the lazy names while no one else imports
        import peft  # noqa: F401  (imports transformers' auto classes itself)

        _ready = True
