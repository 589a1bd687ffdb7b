"""Converting a generator to CTranslate2 (``models.quantize=ct2-int8``): the name of its
copies, the folder the converter takes, and what tells in advance that a conversion would
make a copy that cannot write. The copies themselves: kinject/generator_ct2.py."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any


def base_key(location: str, cache_key: str | None) -> str:
    """The name of a base model's converted copies: the GGUF cache key, ``hub-<org>--<name>``
    for a hub id, or a local folder's name plus a hash of its path and weight files' sizes and
    times (a folder whose weights change gets new copies)."""
    if cache_key:
        return cache_key
    path = Path(location).expanduser()
    if not path.is_dir():
        return "hub-" + location.replace("/", "--")
    digest = hashlib.sha256(str(path.resolve()).encode())
    for f in sorted(path.glob("*")):
        if f.suffix in (".safetensors", ".bin", ".json"):
            st = f.stat()
            digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return f"{path.name}-{digest.hexdigest()[:12]}"


def convertible(location: str, work: Path) -> str:
    """``location`` as CTranslate2's converter takes it: a folder whose config still names
    the GGUF it was de-quantised from (kinject.models.ensure_converted) is linked into
    ``work`` with that entry dropped (the weights are plain fp32; the converter refuses the
    entry)."""
    folder = Path(location)
    config = folder / "config.json"
    if not config.is_file():
        return location
    data = json.loads(config.read_text())
    if "quantization_config" not in data:
        return location
    out = work / "base"
    out.mkdir()
    for f in folder.iterdir():
        if f.is_file() and f.name != "config.json":
            (out / f.name).symlink_to(f.resolve())
    data.pop("quantization_config")
    (out / "config.json").write_text(json.dumps(data, indent=1))
    return str(out)


def convert_obstacle(location: str) -> str | None:
    """Why CTranslate2's converter cannot make a working copy of the model at ``location``,
    told from its config alone, in a second, before a conversion of minutes (None: nothing
    known against it; the copy is still tried once at load, kinject.models._ct2_failure).

    Known: a configuration it has no converter for, and attention heads narrower than
    ``hidden_size / num_attention_heads`` (an explicit ``head_dim``, as Qwen3 and Gemma
    have) under a converter that ignores ``head_dim``: the copy is made without a word and
    then fails every answer ("axis 2 has dimension 64 but expected 128")."""
    from kinject.hf import transformers_ready

    transformers_ready()
    from ctranslate2.converters import transformers as converters
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(location)
    except (OSError, ValueError):
        return None  # the conversion reports it in its own words
    loaders: dict[str, Any] = getattr(converters, "_MODEL_LOADERS", {})
    name = type(config).__name__
    loader = loaders.get(name)
    if loaders and loader is None:
        return f"CTranslate2 has no converter for {name}"
    text = config.get_text_config()
    heads = getattr(text, "num_attention_heads", None)
    hidden = getattr(text, "hidden_size", None)
    head_dim = getattr(text, "head_dim", None)
    if loader is None or not all(isinstance(n, int) and n > 0
                                 for n in (heads, hidden, head_dim)):
        return None
    assert isinstance(heads, int) and isinstance(hidden, int) and isinstance(head_dim, int)
    if head_dim * heads == hidden:
        return None
    try:
        reads_head_dim = "head_dim" in inspect.getsource(type(loader))
    except (OSError, TypeError):  # no source to read: the smoke test at load decides
        return None
    if reads_head_dim:
        return None
    return (f"its attention heads are {head_dim} wide, not hidden_size / heads = "
            f"{hidden // heads}, which CTranslate2's {type(loader).__name__} cannot convert")
