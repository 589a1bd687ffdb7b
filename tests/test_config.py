from pathlib import Path

import pytest

from kinject.config import load_settings
from kinject.errors import ConfigError


def test_environment_nested_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", "broker-a:9092,broker-b:9092")
    monkeypatch.setenv("KINJECT_KAFKA__PARTITIONS", "6")
    monkeypatch.setenv("KINJECT_DATA_DIR", str(tmp_path))
    s = load_settings()
    assert s.kafka.bootstrap_servers == "broker-a:9092,broker-b:9092"
    assert s.kafka.partitions == 6
    assert s.data_dir == tmp_path
    assert s.models_dir == s.models.cache_dir  # converted models live apart from the data


def test_converted_models_are_cached_per_user_not_per_data_dir(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KINJECT_MODELS__CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    a, b = load_settings(data_dir=tmp_path / "a"), load_settings(data_dir=tmp_path / "b")
    assert a.models_dir == b.models_dir == tmp_path / "xdg" / "kinject" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_settings().models_dir == tmp_path / "home" / ".cache" / "kinject" / "models"
    monkeypatch.setenv("KINJECT_MODELS__CACHE_DIR", str(tmp_path / "shared"))
    assert load_settings().models_dir == tmp_path / "shared"


@pytest.mark.parametrize("mode", ["auto", "span"])
def test_a_removed_answering_mode_is_refused_naming_the_allowed_ones(
        monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    monkeypatch.setenv("KINJECT_RAG__MODE", mode)
    with pytest.raises(ConfigError, match=r"rag\.mode.*'read'.*'free'"):
        load_settings()


def test_read_is_the_default_answering_mode() -> None:
    assert load_settings().rag.mode == "read"


def test_blank_bootstrap_means_embedded_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINJECT_KAFKA__BOOTSTRAP_SERVERS", "  ")
    assert load_settings().kafka.bootstrap_servers is None


def test_toml_file_is_read_and_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = tmp_path / "kinject.toml"
    cfg.write_text('log_level = "DEBUG"\n[kafka]\npartitions = 5\ntopic_prefix = "acme"\n')
    monkeypatch.setenv("KINJECT_KAFKA__PARTITIONS", "7")
    s = load_settings(cfg)
    assert s.log_level == "DEBUG"
    assert s.kafka.topic_prefix == "acme"
    assert s.kafka.partitions == 7  # environment over file
    # the file is not sticky: the next load without it is back to defaults
    monkeypatch.delenv("KINJECT_KAFKA__PARTITIONS")
    assert load_settings().kafka.topic_prefix == "kinject"


def test_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KINJECT_KAFKA__PARTITIONS", "0")
    with pytest.raises(ConfigError, match="kafka.partitions"):
        load_settings()
    monkeypatch.delenv("KINJECT_KAFKA__PARTITIONS")
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad)
    bad.write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        load_settings(bad)


def test_secrets_are_hidden_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINJECT_API__API_KEY", "sk-very-secret")
    monkeypatch.setenv("KINJECT_KAFKA__SASL_PASSWORD", "hunter2")
    s = load_settings()
    assert "sk-very-secret" not in repr(s) and "hunter2" not in repr(s)
    assert s.api.api_key is not None and s.api.api_key.get_secret_value() == "sk-very-secret"


def test_a_bad_url_prefix_is_named_as_the_workers_name_it() -> None:
    from kinject.ingest.uris import UriPolicy

    bad = "ftp://files.example.com/"
    with pytest.raises(ValueError) as policy:
        UriPolicy(url_prefixes=(bad,))
    with pytest.raises(ConfigError) as settings:
        load_settings(ingest={"uri_allow_urls": ["https://docs.example.com/", bad]})
    # one rule, one message: what the settings refuse is what a worker's policy refuses
    assert "ingest.uri_allow_urls" in str(settings.value)
    assert str(policy.value) in str(settings.value)


def test_trusted_proxies_are_addresses_or_networks() -> None:
    assert load_settings().api.trusted_proxies == []  # X-Forwarded-For ignored by default
    ok = load_settings(api={"trusted_proxies": ["10.0.0.0/8", "::1", "*"]})
    assert ok.api.trusted_proxies == ["10.0.0.0/8", "::1", "*"]
    with pytest.raises(ConfigError, match="api.trusted_proxies.*proxy.example"):
        load_settings(api={"trusted_proxies": ["proxy.example"]})


def test_training_values_the_trainer_refuses_are_refused_at_load() -> None:
    """A mix ratio over 10 (the trainer's and data_mix's bound) or a LoRA dropout over 0.9
    fails when the settings load, naming the setting, not when a cycle starts later."""
    from kinject.config import load_settings
    from kinject.finetune.train_config import TrainConfig

    for name, bad in (("replay_ratio", 20.0), ("general_ratio", 11.0), ("lora_dropout", 0.95)):
        with pytest.raises(ConfigError, match=f"finetune.{name}"):
            load_settings(finetune={name: bad})
    ok = load_settings(finetune={"replay_ratio": 10.0, "general_ratio": 10.0,
                                 "lora_dropout": 0.9})
    TrainConfig.from_settings(ok.finetune)  # what loads, trains


def test_a_publish_url_replicas_could_not_fetch_from_is_refused_at_load() -> None:
    """Without a scheme (or with another than http/https) every replica would refuse the
    URL the promotion events name; the publisher is told at load instead."""
    from kinject.config import load_settings

    for bad in ("kinject-a:8000", "ftp://kinject-a/", "http://", "file:///srv/kinject"):
        with pytest.raises(ConfigError, match="finetune.publish_url"):
            load_settings(finetune={"publish_url": bad})
    for good in ("", "http://kinject-a:8000", "https://kinject.example.org/base/"):
        assert load_settings(finetune={"publish_url": good}).finetune.publish_url == good
