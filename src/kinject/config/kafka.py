"""Kafka settings: the cluster to reach (or none: the embedded broker), topics, security."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator


class KafkaSettings(BaseModel):
    # hide_input_in_errors: a refused bootstrap string may hold a password (see _strip)
    model_config = {"frozen": True, "hide_input_in_errors": True}

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
        if "@" in v:  # user:password@host, pasted from a URL: every broker error would show it
            raise ValueError(
                "holds a user name or password (user:password@host); it takes host:port "
                "pairs only: give the user in KINJECT_KAFKA__SASL_USERNAME, the password in "
                "KINJECT_KAFKA__SASL_PASSWORD, with KINJECT_KAFKA__SASL_MECHANISM and "
                "KINJECT_KAFKA__SECURITY_PROTOCOL"
            )
        return v.strip()


