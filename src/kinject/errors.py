"""The kinject error tree. Core code raises these; only ``api/`` turns them into HTTP codes."""

from __future__ import annotations


class KinjectError(Exception):
    """Base of every error kinject raises on purpose. ``code`` is stable for clients."""

    code = "kinject_error"


class ConfigError(KinjectError):
    """A setting is missing or has a value that cannot work."""

    code = "config_error"


class ModelNotFound(KinjectError):
    """A model setting resolves to nothing: no package, no local path, no reachable hub id."""

    code = "model_not_found"


class BrokerError(KinjectError):
    """The Kafka broker cannot be started or reached."""

    code = "broker_error"


class Busy(KinjectError):
    """Kinject cannot take more work now (a queue is full); the caller should retry later."""

    code = "busy"

    def __init__(self, message: str, *, retry_after_s: int = 5) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BadRecord(KinjectError):
    """A record cannot be parsed or validated; it belongs in the dead-letter topic."""

    code = "bad_record"

    def __init__(self, message: str, *, stage: str = "parse") -> None:
        super().__init__(message)
        self.stage = stage


class UnsupportedSource(BadRecord):
    """The record's kind is not one kinject can read."""

    code = "unsupported_source"


class DependencyMissing(KinjectError):
    """An optional dependency is not installed; the message names the extra to install."""

    code = "dependency_missing"


class IndexFailure(KinjectError):
    """The index or docstore cannot serve the request."""

    code = "index_error"


class NotFound(KinjectError):
    """The requested object (source, adapter version, job) does not exist."""

    code = "not_found"


class Cancelled(KinjectError):
    """Work stopped because its owner asked it to (a server shutting down), not because it
    failed; what it had done so far is left as it was before it started."""

    code = "cancelled"
