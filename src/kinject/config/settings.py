"""The whole Settings (sections from the modules beside this one) and :func:`load_settings`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from kinject.config.api import ApiSettings
from kinject.config.finetune import FinetuneSettings, GateSettings, ScheduleSettings
from kinject.config.index import IndexSettings
from kinject.config.ingest import IngestSettings
from kinject.config.kafka import KafkaSettings
from kinject.config.models import ModelSettings
from kinject.config.rag import RagSettings
from kinject.errors import ConfigError


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "kinject"


class Settings(BaseSettings):
    """All of kinject's settings. Construct with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="KINJECT_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        hide_input_in_errors=True,  # a refused value may be a secret (a password, a key)
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
