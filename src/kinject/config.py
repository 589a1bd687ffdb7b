"""Settings: read once at the edges (CLI, API app) and handed down as small frozen configs.

Every setting can come from the environment (prefix ``KINJECT_``, nesting with ``__``, e.g.
``KINJECT_KAFKA__BOOTSTRAP_SERVERS``), from a TOML file (``--config`` or ``KINJECT_CONFIG``),
or from defaults. One data directory holds all durable state.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kinject.errors import ConfigError


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "kinject"


def default_models_cache_dir() -> Path:
    """The user's cache for converted models (``$XDG_CACHE_HOME/kinject/models``, else
    ``~/.cache/kinject/models``): one conversion serves every data dir of the user."""
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kinject" / "models"


class GateSettings(BaseModel):
    """When a trained adapter may replace the serving one (finetune/gate.py)."""

    model_config = {"frozen": True}

    # Retention: closed-book accuracy on earlier cycles' facts may fall by at most this.
    max_retention_drop: float = Field(default=0.05, ge=0.0, le=1.0)
    # General-text perplexity may rise by at most this share (0.10: 10 %). At the default
    # sample size the measure's sampling noise is about a tenth of the bound (below), so the
    # bound decides on drift, not on which paragraphs were drawn: one quick cycle
    # (bench/general_kl.py, 3 people, all-linear, lr 2e-3) drifted +24.6 % without the KL
    # term (rejected) and +8.2 % with kl_weight 1 (passes), learning as much (0.50 / 0.58).
    max_ppl_increase: float = Field(default=0.10, ge=0.0)
    # Held-out general-text paragraphs the perplexity is measured on: a fixed sample, half
    # English, half Chinese (finetune/general_text.py), the same for candidate and baseline.
    # Base SmolLM2's perplexity over random samples of the 343 held-out paragraphs
    # (bench/general_ppl.py) varies by 17 % (relative std) at 10 paragraphs (the old 9
    # sentences: more than the bound), 10 % at 24, 7 % at 50, 4 % at 100 and 1.8 % at 200; the
    # adapter/base ratio the gate bounds varies by 4-5 % at 10, 1.0-1.1 % at 100 (and less at
    # 200). Cost: 0.7-1.1 s per paragraph and model on 2 busy cores (1 thread), so 200
    # paragraphs add 4-7 minutes (busy) to a gate that scores candidate and baseline; 100
    # halves that at a ratio noise of about 1 %, a tenth of max_ppl_increase: the default.
    general_texts: int = Field(default=100, ge=1)
    # New-knowledge accuracy must rise by more than this.
    min_new_gain: float = Field(default=0.0, ge=0.0)
    # On a tie in new-knowledge accuracy, a fall of the answers' mean NLL (nats per token) by
    # at least this counts as an improvement; 0 turns the tie-break off.
    tie_break_nll: float = Field(default=0.05, ge=0.0)
    # Held-out questions per set (new knowledge, retention), sampled reproducibly.
    max_questions: int = Field(default=200, ge=1)
    max_new_tokens: int = Field(default=24, ge=1)


class ScheduleSettings(BaseModel):
    """``kinject finetune schedule``: run a cycle every N minutes and/or on volume."""

    model_config = {"frozen": True}

    every_min: float = Field(default=60.0, ge=0.0, description="0: not on a timer")
    min_new: int = Field(default=500, ge=0, description="new examples that start a cycle; 0: off")
    poll_s: float = Field(default=10.0, gt=0.0)


class KafkaSettings(BaseModel):
    model_config = {"frozen": True}

    # None: start the embedded Tansu broker on a free loopback port.
    bootstrap_servers: str | None = None
    topic_prefix: str = "kinject"
    partitions: int = Field(default=3, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    # Short group timings: a consumer-group join waits for the rebalance timeout.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    max_poll_interval_ms: int = 300_000
    # A real cluster: passed to every kafka-python client as given (PLAINTEXT, SSL,
    # SASL_PLAINTEXT, SASL_SSL; PLAIN, SCRAM-SHA-256, SCRAM-SHA-512). The password and the
    # key password are secrets: never logged, never shown.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None  # None: the system's trusted CAs
    ssl_certfile: Path | None = None  # a client certificate (mutual TLS)
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None  # of the key file
    ssl_check_hostname: bool = True

    @field_validator("bootstrap_servers")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        return v.strip()


class ModelSettings(BaseModel):
    model_config = {"frozen": True}

    # A package default ("minilm", "smollm2", "use-multilingual"), a local path, or a hub id.
    embedder: str = "minilm"
    # Chinese and mixed chunks are also embedded by this multilingual model into a second
    # vector space that Chinese queries search (MiniLM is English-only); "none" turns it off.
    embedder_zh: str = "use-multilingual"
    generator: str = "smollm2"
    # The model that reads passages in rag.mode "read" (rag/reader_model.py):
    # "qwen2.5-0.5b" (Qwen2.5-Coder-0.5B-Instruct, from pinned packages, converted once to
    # CTranslate2 INT8), a CTranslate2 or transformers folder, a .gguf file, or a hub id.
    reader: str = "qwen2.5-0.5b"
    # Where models converted once are kept (the reader's CTranslate2 INT8 folder, a GGUF
    # generator's safetensors): a user-level cache, not the data dir, so `kinject demo`,
    # `kinject serve` and every data dir of the user share one conversion (the reader's
    # takes 1.5-2.5 minutes). Conversions are atomic and locked, so processes may share it.
    cache_dir: Path = Field(default_factory=default_models_cache_dir)
    # "auto" picks CUDA when present, else CPU.
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # The serving generator's linear layers as dynamic INT8 (kinject/quantize.py): "auto" is
    # int8 on the CPU and off on a GPU (bf16 there); "none" keeps fp32. Training never uses
    # the quantised model. Off by default, by measurement (bench/int8.py): 1.76x the tokens/s
    # and 0.67x the memory, but 10.7 points fewer right answers on the RAG test families.
    quantize: Literal["auto", "none", "int8"] = "none"
    # The CLIP image index. clip_model: an open_clip architecture name ("ViT-B-32") or a model
    # config .json (a custom architecture, named by the file's stem). clip_checkpoint: a local
    # checkpoint file, an open_clip folder (open_clip_config.json + weights), "hf-hub:org/repo"
    # or a pretrained tag ("openai"; these two need the internet). None turns the index off.
    clip_model: str = "ViT-B-32"
    clip_checkpoint: str | None = None
    # Speech to text for kind "audio" (ingest/whisper_model.py): "base" (Whisper base,
    # multilingual: English and Chinese, from pinned packages, assembled once under the
    # models dir), "tiny.en" (English only, ~3.5x faster), a CTranslate2 folder or a hub id.
    whisper: str = "base"


class IngestSettings(BaseModel):
    model_config = {"frozen": True}

    chunk_size: int = Field(default=400, ge=32, description="characters per chunk")
    chunk_overlap: int = Field(default=40, ge=0)
    ocr_engine: Literal["auto", "rapidocr", "tesseract", "none"] = "auto"
    enrich: bool = True
    redact_pii: bool = False
    min_informativeness: float = Field(default=0.05, ge=0.0, lt=1.0)
    batch_size: int = Field(default=32, ge=1)
    linger_ms: int = Field(default=200, ge=0)
    # A chunk this similar (MinHash-estimated Jaccard of its shingles) to a chunk of another
    # source is kept in the docstore but not searched (the first one is). dedupe=false: off.
    dedupe: bool = True
    near_duplicate_threshold: float = Field(default=0.9, ge=0.5, le=1.0)
    # A record's ``uri`` is read by the worker, and any client of the broker can write
    # records: by default none may name a local file or a URL. Directories listed here are
    # resolved (a symlink inside that points outside is refused); URL prefixes are http(s)
    # URLs whose host and path a fetched URL (and each redirect) must keep.
    uri_allow_dirs: list[Path] = Field(default_factory=list)
    uri_allow_urls: list[str] = Field(default_factory=list)

    @field_validator("uri_allow_urls")
    @classmethod
    def _http_prefixes(cls, v: list[str]) -> list[str]:
        # The one check, where the workers apply the prefixes (a light module: no I/O).
        from kinject.ingest.uris import UriPolicy

        UriPolicy(url_prefixes=tuple(v))  # ValueError naming the bad prefix
        return v
    # Budgets against poison pills; a record over one is dead-lettered with the reason.
    # Seconds one record may take to read (parse, OCR, chunk) in the worker's child process
    # before it is killed; 0 reads in the worker's thread, unbounded. 120 s: a scanned page
    # takes 2-6 s of OCR on 2 busy cores (about 25 pages fit), a 2,000-page text PDF 4 s,
    # a 1 MB page of 100,000 nested tags 2 s; a poison pill holds its partition this long.
    record_timeout_s: float = Field(default=120.0, ge=0.0)
    # HTML larger than this is refused (parsing costs about a second per MB); elements nested
    # deeper than html_max_depth (real pages: a few dozen) are read as plain text.
    html_max_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    html_max_depth: int = Field(default=256, ge=1, le=512)
    # Pages of one PDF (text-layer pages read at ~500/s; blank pages are never OCR'd).
    pdf_max_pages: int = Field(default=2000, ge=1)
    # Pixels of one image, checked before decoding: a 36 MP photo passes, a 12000x12000 PNG
    # bomb (169 KB, 17 s and 1.8 GB to read) does not; well under Pillow's 89.5 MP warning.
    image_max_pixels: int = Field(default=40_000_000, ge=1)
    # One audio record: bytes, checked first (a two-hour MP3 at 320 kbit/s is 290 MB), and
    # seconds, from the header before decoding (decoded audio takes 230 MB an hour in
    # memory). A recording's time budget is renewed while its transcription advances
    # (record_timeout_s without progress stops it), so this cap bounds its time as well.
    audio_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    audio_max_seconds: float = Field(default=7200.0, gt=0)


class IndexSettings(BaseModel):
    model_config = {"frozen": True}

    # Vectors in a space before exact search gives way to HNSW (built in the background).
    hnsw_threshold: int = Field(default=50_000, ge=1)
    hnsw_m: int = Field(default=32, ge=4)
    hnsw_ef_construction: int = Field(default=80, ge=8)
    hnsw_ef_search: int = Field(default=128, ge=8)
    # Default search mode: vector + BM25 fused by reciprocal rank, or one of them alone.
    search_mode: Literal["hybrid", "vector", "bm25"] = "hybrid"
    rrf_k: int = Field(default=60, ge=1)
    # Seconds between index snapshots while materialising (and one on shutdown).
    snapshot_every_s: float = Field(default=30.0, gt=0)


def parse_data_mix(value: str) -> tuple[float, float, float]:
    """``"general:domain:earlier"`` as three numbers; a ValueError names the bad value."""
    parts = value.replace(" ", "").split(":")
    try:
        nums = tuple(float(x) for x in parts)
    except ValueError:
        nums = ()
    if (len(nums) != 3 or not all(0.0 <= n < float("inf") for n in nums)
            or nums[1] <= 0):
        raise ValueError(f"finetune.data_mix must be 'general:domain:earlier', three "
                         f"non-negative numbers with domain > 0 (e.g. '7:2:1'), got {value!r}")
    general, domain, earlier = nums
    if general / domain > 10 or earlier / domain > 10:
        raise ValueError(f"finetune.data_mix {value!r}: general and earlier text may be at "
                         "most 10x the domain text")
    return general, domain, earlier


class FinetuneSettings(BaseModel):
    """One fine-tuning cycle: LoRA shape, optimiser, EWC, replay, early stopping."""

    model_config = {"frozen": True}

    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.1, ge=0.0, le=0.9)  # TrainConfig's bound
    # Module names, or ["all-linear"] for every linear layer (about 3x more knowledge per
    # minute than q_proj, v_proj on SmolLM2, ENVIRONMENT.md).
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    lr: float = Field(default=1e-3, gt=0)
    epochs: int = Field(default=3, ge=1)
    batch_size: int = Field(default=8, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_seq_len: int = Field(default=256, ge=8)
    # Online EWC: strength of the pull back to earlier cycles' weights (Fisher scaled to
    # mean 1), and the decay of the running Fisher per cycle. Replay carries most of the
    # retention, and the pull grows with how far a cycle moves the weights, so bigger cycles
    # need less of it: on bench/inject.py (20 people a batch), 0.03 kept batch 1 at 0.62
    # (0.64 at 0.1; plain LoRA 0.24) and learned batch 2 to 0.79 (0.47 at 0.1).
    ewc_lambda: float = Field(default=0.03, ge=0.0)
    ewc_gamma: float = Field(default=0.9, gt=0.0, le=1.0)
    fisher_samples: int = Field(default=64, ge=0)
    # Earlier examples (reservoir) and general text mixed in, per new example.
    # At most 10 per new example (TrainConfig's bound, and data_mix's).
    replay_ratio: float = Field(default=0.25, ge=0.0, le=10.0)
    replay_capacity: int = Field(default=2000, ge=1)
    # More general text did not hold general-text perplexity better: one 20-person cycle
    # (all-linear, lr 1e-3) measured 192 at 0, 40 at 0.05 and 87 at 0.2 (base 34), on the old
    # 9 sentences. With the shipped corpus and kl_weight 1 (bench/general_kl.py, 3 people),
    # 0.25 took held-out perplexity to 0.85x the base's (0.05: 1.08x), learning as much: the
    # replayed and held-out paragraphs come from the same two books, so much replay teaches
    # their style and the gate would measure that; 0.05 stays.
    general_ratio: float = Field(default=0.05, ge=0.0, le=10.0)
    # General text replayed in training and held out for the gate (finetune/general_text.py):
    # None is the shipped corpus (Python documentation and the Chinese Guide for Debian
    # Maintainers, split by document); or a .jsonl(.gz) / .txt(.gz) file of your own.
    general_text: Path | None = None
    # KL(base || model) per general-text token, added to the loss (finetune/kl.py): keeps the
    # adapter's next-token distribution on ordinary text near the base model's. 0: off. One
    # quick cycle (bench/general_kl.py: 3 people, all-linear, lr 2e-3, general_ratio 0.05):
    # general-text perplexity +24.6 % at 0, +8.2 % at 1, with new-knowledge accuracy 0.50 and
    # 0.58 (12 questions); no step-time cost showed through the load noise (it is one
    # forward pass without gradients over the general rows only, 5 % of the examples).
    kl_weight: float = Field(default=1.0, ge=0.0, le=100.0)
    # Whose next-token distribution the KL term pulls towards (finetune/kl.py): "base" (the
    # base model, adapter switched off) or "previous" (the adapter the cycle starts from: the
    # newest untainted ancestor of the serving adapter, loaded as a second PEFT adapter; the
    # base model on a first cycle). And on which rows: "general" text only, or
    # "general+replay" (earlier cycles' examples too: distillation beside EWC). The defaults
    # keep the measured behaviour above; bench/inject.py's distill arms compare the others.
    distill_teacher: Literal["base", "previous"] = "base"
    distill_on: Literal["general", "general+replay"] = "general"
    # The per-cycle mix "general:domain:earlier" (e.g. "7:2:1"; three non-negative numbers,
    # domain > 0) as one setting. When set it overrides replay_ratio (earlier/domain) and
    # general_ratio (general/domain), mapped in mix_ratios(); None keeps those two, whose
    # defaults are the mix "0.05:1:0.25" (= "1:20:5").
    data_mix: str | None = None

    @field_validator("data_mix")
    @classmethod
    def _check_mix(cls, value: str | None) -> str | None:
        if value is not None:
            parse_data_mix(value)
        return value

    @field_validator("publish_url")
    @classmethod
    def _check_publish_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError(f"finetune.publish_url must be an http(s) URL with a host (where "
                             f"replicas reach this server), got {value!r}")
        return value

    def mix_ratios(self) -> tuple[float, float]:
        """The (replay_ratio, general_ratio) a cycle uses: from ``data_mix`` when set."""
        if self.data_mix is None:
            return self.replay_ratio, self.general_ratio
        general, domain, earlier = parse_data_mix(self.data_mix)
        return earlier / domain, general / domain
    patience: int = Field(default=3, ge=1, description="held-out evaluations without gain")
    eval_every: int = Field(default=50, ge=0)
    checkpoint_every: int = Field(default=50, ge=0)
    seed: int = 0
    # Paraphrases the base LM writes per sentence of the cycle's new text chunks, kept only
    # when they keep every name and number (kinject.finetune.paraphrase). 0: off (slow on CPU).
    lm_paraphrases: int = Field(default=0, ge=0)
    # `kinject serve`, `worker` and `finetune schedule` fill the corpus from kinject.chunks
    # (store <data dir>/corpus, consumer group <prefix>-corpus-<store id>: processes on one
    # store share the work, another store gets every event). On by default, so what is
    # published is what the next cycle trains on with no other step; turn it off in a process
    # that trains nothing (an API replica on another host would keep a corpus of its own).
    materialise_corpus: bool = True
    # How adapters reach replicas whose data dir is not shared (finetune/fetch.py). The base
    # URL at which replicas reach a `kinject serve` on this data dir: promotion events then
    # name ``<publish_url>/v1/adapters/<version>/archive``. Empty: events name no URL and
    # replicas need the adapters folder on a shared volume (compose.yaml's default).
    publish_url: str = ""
    # An admin key of the publishing server, sent when this replica fetches an archive (the
    # weights are the knowledge: the route is admin only). Never logged.
    fetch_api_key: SecretStr | None = None
    # Bounds of one fetch: a LoRA adapter of a 7B model (r=64, all linear layers) is ~0.6 GB,
    # SmolLM2's default one ~2 MB; 2 GiB refuses a runaway stream long before the disk fills.
    fetch_max_bytes: int = Field(default=2 << 30, ge=1)
    # The whole download, not one read: 2 GiB at 10 MB/s fits.
    fetch_timeout_s: float = Field(default=300.0, gt=0)
    # A fetch that failed (server down, hash wrong) is tried again this often, until it
    # works or another event supersedes it: often enough to catch up within a minute,
    # rare enough that a broken publisher is not hammered.
    fetch_retry_s: float = Field(default=30.0, gt=0)


class RagSettings(BaseModel):
    """Answering (rag/): retrieval depth, the reader's mode, abstention, cache, batching."""

    model_config = {"frozen": True}

    k: int = Field(default=4, ge=1, description="passages retrieved per question")
    # read: the reader model (models.reader) chooses the passage most about the question by
    # question-PMI, reads it and abstains itself when none is about it (bench/rag_quality.py:
    # test families 0.55 right, 0.82 abstention on unknown entities, against 0.32 / 0.39 for
    # the cue-list reader it replaced). free: the generator writes from the best passages
    # (also how route "both" answers); an answer whose words are not in them falls back to the
    # best passage itself.
    mode: Literal["read", "free"] = "read"
    # free mode (and routes auto/both) take a question as unanswerable from the index when
    # the cosine between it and its best retrieved passage is below this (read mode's reader
    # judges that itself). With MiniLM, answerable questions score about 0.4-0.8 against
    # their passage and unrelated ones 0.0-0.3.
    min_relevance: float = Field(default=0.25, ge=-1.0, le=1.0)
    max_answer_chars: int = Field(default=160, ge=1)
    cache_size: int = Field(default=256, ge=0, description="answers kept in the LRU cache")
    # Concurrent questions arriving within this window run as one batch (0: off).
    batch_window_ms: float = Field(default=5.0, ge=0.0)
    max_batch: int = Field(default=16, ge=1)
    # Passages the reader model weighs per question (one prompt each), or the generator
    # writes from in free mode.
    reader_passages: int = Field(default=2, ge=1)

    @field_validator("mode", mode="before")
    @classmethod
    def _known_mode(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in ("read", "free"):
            raise ValueError(f"{v!r} is not a mode (the cue-list modes 'auto' and 'span' were "
                             "removed); allowed: 'read' (the default) or 'free'")
        return v

    # With the CLIP image index on, an answer (not an abstention, not closed book) also lists
    # up to max_images images CLIP finds for the question, after the images of the passages
    # it cites, when their CLIP score (text-image cosine) reaches image_min_score. With
    # OpenAI's ViT-B-32 a text that describes a picture scores about 0.3 and an unrelated one
    # under 0.2; a CLIP of another family may need another threshold. max_images=0: off.
    max_images: int = Field(default=3, ge=0, description="images CLIP adds to an answer")
    image_min_score: float = Field(default=0.25, ge=-1.0, le=1.0)


class ApiSettings(BaseModel):
    model_config = {"frozen": True}

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    # One admin key given from outside (compose: an env secret); never logged. Keys made with
    # `kinject keys create` are stored hashed in ``keys_file`` instead.
    api_key: SecretStr | None = None
    # None: ``<data dir>/api_keys.json``.
    keys_file: Path | None = None
    # Writes and admin calls always need a key; reads (search, ask, chat) only when set.
    require_key_for_reads: bool = False
    # Failed key checks a client (IP address) may make within the window before its checks
    # get 429 with Retry-After: a person mistyping a key retries a few times, while each
    # failure costs a scrypt (~20-60 ms of CPU), so 10 a minute caps a flood at ~1 % of a core.
    auth_max_failures: int = Field(default=10, ge=1)
    auth_failure_window_s: float = Field(default=60.0, gt=0)
    # Key checks (scrypt) running at once, over all clients; past it a check gets 503 with
    # Retry-After at once rather than holding a server thread. A check is one core for
    # 20-60 ms and 16 MiB: two at a time verify 40-100 new keys a second (a verified key is
    # cached and never waits), while a flood of wrong keys from many addresses holds two
    # cores' worth of scrypt at most.
    auth_max_concurrent_checks: int = Field(default=2, ge=1)
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (IP addresses or
    # networks such as 10.0.0.0/8; "*" for any). Empty (the default): the headers are
    # ignored and a client is the address that connected, so a local process cannot pose as
    # many clients to dodge the failure limit by rotating X-Forwarded-For.
    trusted_proxies: list[str] = Field(default_factory=list)
    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        import ipaddress

        for entry in v:
            if entry != "*":
                try:
                    ipaddress.ip_network(entry, strict=False)
                except ValueError as exc:
                    raise ValueError(f"{entry!r} is not an IP address, a network or '*'"
                                     ) from exc
        return v

    # Origins allowed by CORS; empty (the default) turns CORS off.
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024,
                                description="largest request body accepted")
    max_question_chars: int = Field(default=2000, ge=1)
    max_records_per_request: int = Field(default=500, ge=1)
    # Records accepted but not yet confirmed by a worker, past which POST /v1/records answers
    # 503 with Retry-After: 100k records is hours of a dead broker at a busy site, and
    # (records of a few KB) a few hundred MB of disk; the limit keeps a broker that never
    # comes back from filling the disk.
    max_outbox_records: int = Field(default=100_000, ge=1)
    max_k: int = Field(default=50, ge=1, description="largest k a search or ask may ask for")
    # POST /v1/eval: the uploaded question set's size and length. Every question runs the
    # model while the request waits (about 1-2 s each on 2 cores), so 200 questions is a few
    # minutes; larger sets belong to `kinject eval`, which has no such bound. 1 MiB holds
    # thousands of questions, so the question count is the bound that binds.
    max_eval_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_eval_questions: int = Field(default=200, ge=1)


class Settings(BaseSettings):
    """All of kinject's settings. Construct with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="KINJECT_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Field(default_factory=default_data_dir)
    # The data dir holds every ingested text, the outbox and API key hashes: created 0700,
    # its files 0600 (umask 077 in kinject's processes). False: the umask is left alone.
    private_files: bool = True
    log_level: str = "INFO"
    gate: GateSettings = GateSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    kafka: KafkaSettings = KafkaSettings()
    # A factory, not one instance: the model cache's default follows $XDG_CACHE_HOME and
    # $HOME as they are when the settings are read.
    models: ModelSettings = Field(default_factory=ModelSettings)
    ingest: IngestSettings = IngestSettings()
    index: IndexSettings = IndexSettings()
    api: ApiSettings = ApiSettings()
    rag: RagSettings = RagSettings()
    finetune: FinetuneSettings = FinetuneSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _TOML_FILE.get("path")
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @model_validator(mode="after")
    def _uri_dirs_apart_from_data_dir(self) -> Settings:
        # The data dir holds API key hashes, the outbox and every ingested text: a record's
        # uri must never read it (the workers also refuse it at run time).
        data = self.data_dir.expanduser().resolve()
        for allowed in self.ingest.uri_allow_dirs:
            where = allowed.expanduser().resolve()
            if where.is_relative_to(data) or data.is_relative_to(where):
                raise ValueError(
                    f"ingest.uri_allow_dirs: {str(allowed)!r} overlaps the data directory "
                    f"{str(self.data_dir)!r}; allow a directory that neither holds it nor "
                    "lies inside it")
        return self

    @property
    def models_dir(self) -> Path:
        """Where converted models are cached (``models.cache_dir``)."""
        return self.models.cache_dir


# The TOML path for the Settings being built (pydantic-settings reads sources at class level).
_TOML_FILE: dict[str, Path | None] = {"path": None}


def load_settings(config_file: Path | str | None = None, **overrides: Any) -> Settings:
    """Build Settings from overrides > environment > TOML file > defaults.

    Raises ConfigError naming the bad setting instead of a pydantic traceback.
    """
    from pydantic import ValidationError

    path = Path(config_file).expanduser() if config_file else None
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    _TOML_FILE["path"] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from exc
    finally:
        _TOML_FILE["path"] = None
