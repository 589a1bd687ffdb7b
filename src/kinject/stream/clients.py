"""Kafka client factories built from KafkaSettings, and a reachability check.

Security settings (protocol, SASL, TLS) pass through to every client. The SASL and key
passwords are handed to kafka-python and nowhere else: never log a client config.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kinject.config import KafkaSettings
from kinject.errors import BrokerError

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient

_log = logging.getLogger(__name__)

DEFAULT_KAFKA_PORT = 9092
BOOTSTRAP_SETTING = "KINJECT_KAFKA__BOOTSTRAP_SERVERS"


def client_config(kafka: KafkaSettings, bootstrap: str) -> dict[str, Any]:
    """Options common to producers, consumers and admin clients."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "kinject",
        "security_protocol": kafka.security_protocol,
    }
    if kafka.sasl_mechanism:
        config["sasl_mechanism"] = kafka.sasl_mechanism
        config["sasl_plain_username"] = kafka.sasl_username
        if kafka.sasl_password is not None:
            config["sasl_plain_password"] = kafka.sasl_password.get_secret_value()
    if "SSL" in kafka.security_protocol:
        config["ssl_check_hostname"] = kafka.ssl_check_hostname
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if (path := getattr(kafka, name)) is not None:
                config[name] = str(path)
        if kafka.ssl_password is not None:
            config["ssl_password"] = kafka.ssl_password.get_secret_value()
    return config


def make_producer(kafka: KafkaSettings, bootstrap: str, **overrides: Any) -> KafkaProducer:
    """A producer that waits for every replica (acks=all), retries, and sends bytes as given."""
    from kafka import KafkaProducer

    config = client_config(kafka, bootstrap)
    config.update(acks="all", retries=10, linger_ms=5)
    config.update(overrides)
    return KafkaProducer(**config)


def make_consumer(
    kafka: KafkaSettings,
    bootstrap: str,
    group_id: str | None,
    topics: Sequence[str] = (),
    **overrides: Any,
) -> KafkaConsumer:
    """A consumer in ``group_id`` that commits only when told and starts from the earliest
    offset. Group timings come from the settings: a join waits on them (with Tansu about
    half the session timeout), so the defaults there are short."""
    from kafka import KafkaConsumer

    config = client_config(kafka, bootstrap)
    config.update(
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=kafka.heartbeat_interval_ms,
        max_poll_interval_ms=kafka.max_poll_interval_ms,
    )
    config.update(overrides)
    return KafkaConsumer(*topics, **config)


def make_admin(kafka: KafkaSettings, bootstrap: str, **overrides: Any) -> KafkaAdminClient:
    from kafka.admin import KafkaAdminClient

    config = client_config(kafka, bootstrap)
    config.update(overrides)
    return KafkaAdminClient(**config)


def parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    """``"h1:9092,h2"`` -> ``[("h1", 9092), ("h2", 9092)]`` (IPv6 as ``[::1]:9092``)."""
    servers: list[tuple[str, int]] = []
    for item in bootstrap.split(","):
        item = item.strip()
        if not item:
            continue
        host, port = item, DEFAULT_KAFKA_PORT
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            if rest.startswith(":"):
                port = _port(rest[1:], bootstrap)
        elif item.count(":") == 1:
            host, raw = item.split(":")
            port = _port(raw, bootstrap)
        servers.append((host, port))
    if not servers:
        raise BrokerError(f"no Kafka bootstrap servers in {bootstrap!r}; set {BOOTSTRAP_SETTING}")
    return servers


def wait_until_reachable(
    bootstrap: str, timeout_s: float = 10.0, *, kafka: KafkaSettings | None = None
) -> None:
    """Wait until a bootstrap server accepts TCP and answers a Kafka metadata request.

    Raises BrokerError naming the servers and the setting to fix when none does in time.
    """
    deadline = time.monotonic() + timeout_s
    servers = parse_bootstrap(bootstrap)
    # A plain TCP probe first: kafka-python leaves an I/O thread behind when it cannot
    # bootstrap, and this is the common failure (nothing listening).
    while not any(_tcp_open(host, port) for host, port in servers):
        if time.monotonic() >= deadline:
            raise _unreachable(bootstrap, timeout_s, "nothing accepts connections there")
        time.sleep(0.1)

    from kafka.errors import KafkaError

    remaining = max(deadline - time.monotonic(), 0.5)
    try:
        admin = make_admin(
            kafka or KafkaSettings(),
            bootstrap,
            bootstrap_timeout_ms=int(remaining * 1000),
            request_timeout_ms=max(int(remaining * 1000), 1000),
        )
    except KafkaError as exc:
        raise _unreachable(bootstrap, timeout_s, f"no Kafka metadata answer ({exc})") from exc
    admin.close()
    _log.debug("Kafka at %s is reachable", bootstrap)


def _tcp_open(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _unreachable(bootstrap: str, timeout_s: float, why: str) -> BrokerError:
    return BrokerError(
        f"cannot reach the Kafka broker at {bootstrap} within {timeout_s:g} s: {why}. "
        f"Check {BOOTSTRAP_SETTING} (or unset it to start the embedded broker)."
    )


def _port(raw: str, bootstrap: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise BrokerError(f"bad port {raw!r} in Kafka bootstrap servers {bootstrap!r}")
    return port


class ClusterWatch:
    """Asks the broker which cluster it is, and which partitions a topic has, afresh.

    A client's cached metadata can keep an old cluster id for minutes: a restarted
    embedded broker (its log is in memory) is a new, empty cluster, and a client that does
    not notice fetches or commits positions from a log that no longer exists. One small
    admin client answers both questions straight from the broker.
    """

    def __init__(self, kafka: KafkaSettings, bootstrap: str) -> None:
        self.kafka = kafka
        self.bootstrap = bootstrap
        self._admin: Any = None

    def cluster_id(self) -> str | None:
        """The cluster id now; raises KafkaError while the broker cannot be asked."""
        from kafka.errors import KafkaError

        try:
            if self._admin is None:
                self._admin = make_admin(self.kafka, self.bootstrap)
            found = self._admin.describe_cluster().get("cluster_id")
        except KafkaError:
            self.close()  # the next question starts from a fresh connection
            raise
        return str(found) if found else None

    def partitions(self, topic: str) -> set[int]:
        """The partitions ``topic`` has now (empty while it does not exist)."""
        from kafka.errors import KafkaError

        try:
            if self._admin is None:
                self._admin = make_admin(self.kafka, self.bootstrap)
            described = self._admin.describe_topics([topic])
        except KafkaError:
            self.close()
            raise
        return {int(p["partition_index"]) for info in described if info.get("name") == topic
                and not info.get("error_code") for p in info.get("partitions") or ()}

    def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                admin.close()
            except Exception as exc:  # a broker that is gone must not make close() raise
                _log.debug("closing the admin client: %s", exc)
