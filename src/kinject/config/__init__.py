"""Settings: read once at the edges (CLI, API app) and handed down as small frozen configs.

Every setting can come from the environment (prefix ``KINJECT_``, nesting with ``__``, e.g.
``KINJECT_KAFKA__BOOTSTRAP_SERVERS``), from a TOML file (``--config`` or ``KINJECT_CONFIG``),
or from defaults. One data directory holds all durable state.
"""

from __future__ import annotations

from kinject.config.api import ApiSettings
from kinject.config.finetune import (
    FinetuneSettings,
    GateSettings,
    ScheduleSettings,
    parse_data_mix,
)
from kinject.config.index import IndexSettings
from kinject.config.ingest import IngestSettings
from kinject.config.kafka import KafkaSettings
from kinject.config.models import ModelSettings, default_models_cache_dir
from kinject.config.rag import RagSettings
from kinject.config.settings import Settings, default_data_dir, load_settings

__all__ = [
    "ApiSettings",
    "FinetuneSettings",
    "GateSettings",
    "IndexSettings",
    "IngestSettings",
    "KafkaSettings",
    "ModelSettings",
    "RagSettings",
    "ScheduleSettings",
    "Settings",
    "default_data_dir",
    "default_models_cache_dir",
    "load_settings",
    "parse_data_mix",
]
