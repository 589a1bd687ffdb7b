"""Adapter archives: what the archive route streams unpacks to the same version, and what a
hostile server could send (paths out of the folder, links, floods) is refused whole."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from kinject.finetune.archive import MEMBERS, AdapterArchive, ArchiveError, unpack
from kinject.finetune.registry import AdapterRegistry, RegistryError, file_sha256


def _version_folder(root: Path) -> tuple[AdapterRegistry, str]:
    """A registry holding one version (bytes that stand in for safetensors: the archive and
    the registry only move and hash them)."""
    src = root / "peft"
    src.mkdir(parents=True)
    (src / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 41 + b"tail")
    (src / "adapter_config.json").write_text('{"r": 4}', encoding="utf-8")
    reg = AdapterRegistry(root / "adapters")
    return reg, reg.add(src, base_model="tiny", lineage=["kb/a"]).version


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _good_files() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    return [_file(name, b"{}") for name in MEMBERS]


def test_the_streamed_archive_unpacks_to_the_same_version_and_installs_atomically(
        tmp_path: Path) -> None:
    reg, version = _version_folder(tmp_path / "a")
    arc = AdapterArchive.open(reg.path(version), version)
    data = b"".join(arc.chunks())
    assert len(data) == arc.size  # the Content-Length the route sends is exact
    path = tmp_path / "v.tar"
    path.write_bytes(data)

    replica = AdapterRegistry(tmp_path / "b" / "adapters")
    folder = replica.versions_dir / ".incoming"
    folder.mkdir()
    unpack(path, folder, max_bytes=1 << 20)
    assert replica.names() == []  # a dot folder is not a version
    assert replica.install(folder) == version
    assert replica.names() == [version]
    for name in MEMBERS:
        assert (replica.path(version) / name).read_bytes() == (reg.path(version) / name
                                                               ).read_bytes()
    assert replica.get(version).lineage == ("kb/a",)


def test_install_refuses_a_manifest_that_names_other_weights(tmp_path: Path) -> None:
    reg, version = _version_folder(tmp_path / "a")
    folder = reg.versions_dir / ".incoming"
    folder.mkdir()
    for name in MEMBERS:
        (folder / name).write_bytes((reg.path(version) / name).read_bytes())
    (folder / "adapter_model.safetensors").write_bytes(b"other weights")
    with pytest.raises(RegistryError, match="manifest names version"):
        reg.install(folder)
    assert reg.names() == [version]


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info, None


def _hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info, None


def _folder(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


@pytest.mark.parametrize(("members", "reason"), [
    ([_file("../x"), *_good_files()], "unexpected archive member '../x'"),
    ([_file("../adapter_model.safetensors"), *_good_files()], "unexpected archive member"),
    ([_file("/tmp/adapter_model.safetensors"), *_good_files()], "unexpected archive member"),
    ([_file("sub/adapter_config.json"), *_good_files()], "unexpected archive member"),
    ([_symlink("adapter_model.safetensors", "/etc/passwd"), *_good_files()[1:]],
     "not a regular file"),
    ([_symlink("adapter_model.safetensors", "../../x"), *_good_files()[1:]],
     "not a regular file"),
    ([_hardlink("adapter_model.safetensors", "/etc/passwd"), *_good_files()[1:]],
     "not a regular file"),
    ([_folder("manifest.json"), *_good_files()[:2]], "not a regular file"),
    ([*_good_files(), _file("manifest.json")], "appears twice"),
    ([_file("adapter_model.safetensors", b"w" * 5000), *_good_files()[1:]],
     "more than 4,096 bytes"),
    (_good_files()[:2], "lacks manifest.json"),
])
def test_unpack_refuses_what_could_escape_or_flood_the_folder(
        tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]],
        reason: str) -> None:
    archive = _tar(tmp_path / "evil.tar", members)
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(ArchiveError, match=reason.replace("(", r"\(")):
        unpack(archive, dest, max_bytes=4096)
    # nothing landed outside the folder
    assert not (tmp_path / "deep" / "x").exists() and not (tmp_path / "x").exists()
    assert not (tmp_path / "deep" / "adapter_model.safetensors").exists()
    assert not any(p.is_symlink() for p in dest.iterdir())


def test_unpack_refuses_what_is_not_a_tar(tmp_path: Path) -> None:
    path = tmp_path / "x.tar"
    path.write_bytes(b"<html>login page</html>" * 40)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ArchiveError, match="not a readable adapter archive"):
        unpack(path, dest, max_bytes=1 << 20)


def test_the_registry_id_is_made_once_and_shared_by_everyone_on_the_folder(
        tmp_path: Path) -> None:
    a, b = AdapterRegistry(tmp_path / "shared"), AdapterRegistry(tmp_path / "shared")
    other = AdapterRegistry(tmp_path / "own")
    assert a.identity() == b.identity() == a.identity()
    assert other.identity() != a.identity()
    assert file_sha256(tmp_path / "shared" / "ID")  # a plain file, kept
