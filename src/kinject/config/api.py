"""HTTP API settings: address, keys and their rate limits, proxies, CORS, request bounds."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator


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
    # How long a stopping `kinject serve` waits for its background threads and fine-tuning
    # cycles, all together: they are daemons, and what they have not finished is in the
    # outbox or read again on the next start; a cycle stops at its next training step (and
    # checkpoints), one still running then is recorded interrupted and ends with the process.
    # 6 s: Docker and Kubernetes kill 10 s after SIGTERM, which leaves the API, the broker and
    # the interpreter's exit about 4 s. Raise it with the orchestrator's grace period.
    stop_grace_s: float = Field(default=6.0, gt=0)
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


