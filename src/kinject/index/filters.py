"""Metadata filters for search: source kind, language, source id prefix, time range, tags.

A chunk's time is ``meta["ts"]`` (epoch seconds; the ingest worker sets it from the record's
``ts``, which kinject's producer fills with the publish time, or from the Kafka timestamp).
Its tags are ``meta["tags"]`` (a list, or a comma-separated string) as given in the record's
meta. Within a field the values are alternatives (``kind=csv kind=tsv``: either); different
fields must all hold; every listed tag must be present.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from kinject.types import KINDS

LANGS = ("en", "zh", "mixed")
FILTER_KEYS = ("kind", "lang", "source", "since", "until", "tag")


class _Filterable(Protocol):
    @property
    def source_id(self) -> str: ...

    @property
    def meta(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class SearchFilters:
    """What a hit must satisfy. The default (nothing set) lets everything through."""

    kinds: tuple[str, ...] = ()
    langs: tuple[str, ...] = ()
    source_prefix: str | None = None
    since: float | None = None
    until: float | None = None
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("kinds", "langs", "tags"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise TypeError(f"{name} must be a tuple of strings, got the string {value!r}")
            items = tuple(value)
            if not all(isinstance(v, str) and v.strip() for v in items):
                raise ValueError(f"{name} must hold non-empty strings, got {items!r}")
            object.__setattr__(self, name, items)
        bad = [k for k in self.kinds if k not in KINDS]
        if bad:
            raise ValueError(f"unknown kind {bad[0]!r}; known kinds: {', '.join(KINDS)}")
        bad = [lang for lang in self.langs if lang not in LANGS]
        if bad:
            raise ValueError(f"unknown lang {bad[0]!r}; known: {', '.join(LANGS)}")
        if self.source_prefix is not None and (
            not isinstance(self.source_prefix, str) or not self.source_prefix
        ):
            raise ValueError(
                f"source_prefix must be a non-empty string, got {self.source_prefix!r}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
            ):
                raise ValueError(f"{name} must be epoch seconds (a finite number), got {value!r}")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise ValueError(f"since ({self.since}) is after until ({self.until})")
        object.__setattr__(self, "tags", tuple(t.strip().lower() for t in self.tags))

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def parse(cls, items: Iterable[str] | None) -> SearchFilters:
        """Filters from ``key=value`` strings (CLI ``--filter``, API query).

        Keys: ``kind``, ``lang``, ``source`` (id prefix), ``since``/``until`` (ISO date or
        datetime, or epoch seconds; a date-only ``until`` includes that whole day), ``tag``.
        Raises ValueError naming the bad item.
        """
        kinds: list[str] = []
        langs: list[str] = []
        tags: list[str] = []
        source: str | None = None
        since: float | None = None
        until: float | None = None
        for item in items or ():
            key, sep, value = str(item).partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep or not key:
                raise ValueError(
                    f"filter {item!r} is not key=value (keys: {', '.join(FILTER_KEYS)})")
            if not value:
                raise ValueError(f"filter {item!r} has an empty value")
            if key == "kind":
                kinds += _split(value)
            elif key == "lang":
                langs += _split(value)
            elif key == "tag":
                tags += _split(value)
            elif key == "source":
                if source is not None:
                    raise ValueError(f"filter source= given twice ({source!r} and {value!r})")
                source = value
            elif key == "since":
                since = parse_time(value, end_of_day=False)
            elif key == "until":
                until = parse_time(value, end_of_day=True)
            else:
                raise ValueError(f"unknown filter key {key!r} in {item!r}; "
                                 f"keys: {', '.join(FILTER_KEYS)}")
        return cls(kinds=tuple(kinds), langs=tuple(langs), source_prefix=source, since=since,
                   until=until, tags=tuple(tags))

    @classmethod
    def coerce(cls, value: SearchFilters | Mapping[str, Any] | Iterable[str] | None
               ) -> SearchFilters | None:
        """Accept filters as an object, a mapping of field names, or ``key=value`` strings."""
        if value is None or isinstance(value, SearchFilters):
            return value
        if isinstance(value, Mapping):
            return cls(**dict(value))
        if isinstance(value, str):
            return cls.parse([value])
        return cls.parse(value)

    # -- using ------------------------------------------------------------------------------
    @property
    def empty(self) -> bool:
        return not (self.kinds or self.langs or self.source_prefix or self.tags
                    or self.since is not None or self.until is not None)

    def matches(self, chunk: _Filterable) -> bool:
        """Whether a Chunk (or a Hit, whose meta holds kind and lang) passes."""
        meta = chunk.meta or {}
        if self.kinds and str(getattr(chunk, "kind", meta.get("kind"))) not in self.kinds:
            return False
        if self.langs and str(getattr(chunk, "lang", meta.get("lang"))) not in self.langs:
            return False
        if self.source_prefix is not None and not chunk.source_id.startswith(self.source_prefix):
            return False
        if self.since is not None or self.until is not None:
            ts = chunk_time(meta)
            if ts is None:
                return False
            if self.since is not None and ts < self.since:
                return False
            if self.until is not None and ts > self.until:
                return False
        if self.tags:
            have = chunk_tags(meta)
            if not all(t in have for t in self.tags):
                return False
        return True

    def sql(self) -> tuple[str, list[Any]]:
        """A WHERE clause (and its parameters) for the docstore's ``chunks`` table that keeps a
        superset of the matching rows (kind, lang, source prefix); ``matches`` does the rest."""
        clauses: list[str] = []
        params: list[Any] = []
        if self.kinds:
            clauses.append(f"kind IN ({','.join('?' * len(self.kinds))})")
            params += self.kinds
        if self.langs:
            clauses.append(f"lang IN ({','.join('?' * len(self.langs))})")
            params += self.langs
        if self.source_prefix is not None:
            clauses.append("substr(source_id, 1, ?) = ?")
            params += [len(self.source_prefix), self.source_prefix]
        return (" AND ".join(clauses) or "1"), params

    def describe(self) -> str:
        parts = [f"kind={k}" for k in self.kinds] + [f"lang={la}" for la in self.langs]
        if self.source_prefix is not None:
            parts.append(f"source={self.source_prefix}")
        if self.since is not None:
            parts.append(f"since={self.since}")
        if self.until is not None:
            parts.append(f"until={self.until}")
        parts += [f"tag={t}" for t in self.tags]
        return " ".join(parts) or "(none)"


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_time(value: str, *, end_of_day: bool = False) -> float:
    """Epoch seconds from epoch seconds, an ISO date (UTC) or an ISO datetime (UTC if naive)."""
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            raise ValueError(f"time {value!r} is not a finite number")
        return number
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
            if end_of_day:
                return (start + dt.timedelta(days=1)).timestamp() - 1e-6
            return start.timestamp()
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"time {value!r} is neither epoch seconds nor an ISO date (2024-01-31) "
            "or datetime (2024-01-31T12:00:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def chunk_time(meta: Mapping[str, Any]) -> float | None:
    """The chunk's time in epoch seconds (``meta["ts"]``: a number or an ISO string)."""
    ts = meta.get("ts")
    if ts is None or isinstance(ts, bool):
        return None
    if isinstance(ts, int | float):
        return float(ts)
    try:
        return parse_time(str(ts))
    except ValueError:
        return None


def chunk_tags(meta: Mapping[str, Any]) -> set[str]:
    """The chunk's tags, lower-cased (``meta["tags"]`` or ``meta["tag"]``)."""
    raw = meta.get("tags", meta.get("tag"))
    if raw is None:
        return set()
    items = raw.split(",") if isinstance(raw, str) else raw if isinstance(raw, list | tuple) else []
    return {str(t).strip().lower() for t in items if str(t).strip()}
