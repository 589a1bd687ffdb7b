"""models.threads (KINJECT_MODELS__THREADS): one setting for the process's compute threads,
applied where a process starts and handed to the libraries that take a count when built."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kinject.config import load_settings
from kinject.errors import ConfigError


@pytest.fixture()
def restore_threads() -> Iterator[None]:
    import faiss
    import torch

    torch_before, faiss_before = torch.get_num_threads(), faiss.omp_get_max_threads()
    yield
    torch.set_num_threads(torch_before)
    faiss.omp_set_num_threads(faiss_before)


def test_the_default_leaves_the_libraries_defaults(tmp_path: Path) -> None:
    assert load_settings(data_dir=tmp_path).models.threads is None


def test_a_count_below_one_is_refused_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="models.threads"):
        load_settings(data_dir=tmp_path, models={"threads": 0})


@pytest.mark.usefixtures("restore_threads")
def test_a_command_started_with_the_setting_runs_torch_and_faiss_on_that_many_threads(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import faiss
    import torch

    from kinject.cli.common import load_settings as cli_settings

    torch.set_num_threads(2)
    faiss.omp_set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # an inherited value: the setting wins
    monkeypatch.setenv("KINJECT_MODELS__THREADS", "1")
    settings = cli_settings(None, tmp_path / "data")
    assert settings.models.threads == 1
    assert torch.get_num_threads() == 1
    assert faiss.omp_get_max_threads() == 1
    # OpenMP pools that start later, in other threads (a library loaded after this), read it
    assert os.environ["OMP_NUM_THREADS"] == "1"

    seen: list[int] = []
    worker = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    worker.start()
    worker.join()
    assert seen == [1]  # the API's and the materialisers' threads run torch on one too


@pytest.mark.usefixtures("restore_threads")
def test_without_the_setting_a_command_leaves_the_thread_counts_alone(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    from kinject.cli.common import load_settings as cli_settings

    torch.set_num_threads(2)
    monkeypatch.delenv("KINJECT_MODELS__THREADS", raising=False)
    cli_settings(None, tmp_path / "data")
    assert torch.get_num_threads() == 2


def test_the_use_embedder_and_whisper_take_the_count(tmp_path: Path) -> None:
    from kinject.index.embedders import USE_SPEC, make_embedder
    from kinject.stream.runner import ingest_config

    settings = load_settings(data_dir=tmp_path, models={"threads": 3})
    assert ingest_config(settings).audio.threads == 3
    use = make_embedder(USE_SPEC, threads=settings.models.threads)
    assert getattr(use, "threads", None) == 3
    # unset: CTranslate2's own default for Whisper (0)
    assert ingest_config(load_settings(data_dir=tmp_path)).audio.threads == 0
