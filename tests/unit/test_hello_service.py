"""The sample service examples/hello-service: its build script and the running service."""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from deployer import ArtefactError, UsageError, VersionError

pytestmark = pytest.mark.daemons  # the sample service

SERVICE_DIR = Path(__file__).resolve().parents[2] / "examples" / "hello-service"
BUILD_SCRIPT = SERVICE_DIR / "build.py"
STARTUP_DEADLINE_SECONDS = 5.0


def _load_build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hello_service_build", BUILD_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_module()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes

    def json(self) -> dict[str, object]:
        payload: dict[str, object] = json.loads(self.body)
        return payload


def _get(port: int, path: str, timeout: float = 5.0) -> Response:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return Response(answer.status, answer.getheader("Content-Type", ""), answer.read())
    finally:
        connection.close()


@dataclass
class RunningService:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8")


class ServiceStarter:
    """Starts release entry points as real processes and stops whatever is left at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp_path = tmp_path
        self._started: list[subprocess.Popen[bytes]] = []

    def start(self, release_dir: Path, **extra_env: str) -> RunningService:
        port = _free_port()
        log_path = self._tmp_path / f"service-{port}.log"
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), **extra_env}
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [str(release_dir / "bin" / "run")],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self._started.append(process)
        service = RunningService(process, port, log_path)
        deadline = time.monotonic() + STARTUP_DEADLINE_SECONDS
        while "hello-service starting" not in service.log():
            if process.poll() is not None:
                pytest.fail(f"service exited with {process.returncode}: {service.log()}")
            if time.monotonic() > deadline:
                pytest.fail(f"service did not start within {STARTUP_DEADLINE_SECONDS}s")
            time.sleep(0.02)
        return service

    def stop_all(self) -> None:
        for process in self._started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=5)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[ServiceStarter]:
    starter = ServiceStarter(tmp_path)
    yield starter
    starter.stop_all()


# --- build.py --------------------------------------------------------------------------


def test_build_release_writes_version_variant_and_executable_entry_point(tmp_path: Path) -> None:
    release = build.build_release("2.1.0-rc.1", tmp_path / "r", "badhealth")

    assert release == tmp_path / "r"
    assert (release / "VERSION").read_text() == "2.1.0-rc.1\n"
    assert (release / "VARIANT").read_text() == "badhealth\n"
    entry_point = release / "bin" / "run"
    assert entry_point.stat().st_mode & stat.S_IXUSR
    assert (release / "lib" / "hello.py").is_file()
    assert not list(release.rglob("__pycache__"))


@pytest.mark.parametrize("version", ["../evil", "1.0 beta", "", "-1", "a/b", "1..2"])
def test_build_release_rejects_invalid_versions(tmp_path: Path, version: str) -> None:
    with pytest.raises(VersionError, match=r"not a valid version|must be a string"):
        build.build_release(version, tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_build_release_rejects_unknown_variant(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown variant 'flaky'"):
        build.build_release("1.0.0", tmp_path / "r", "flaky")


def test_build_release_refuses_non_empty_dir_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "r"
    out.mkdir()
    (out / "stale.txt").write_text("left over")

    with pytest.raises(ArtefactError, match="not empty"):
        build.build_release("1.0.0", out)
    assert not (out / "VERSION").exists()

    build.build_release("1.0.1", out, force=True)
    assert (out / "VERSION").read_text() == "1.0.1\n"
    assert not (out / "stale.txt").exists()


def test_build_cli_reports_bad_version_without_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BUILD_SCRIPT), "--version", "1.0;rm", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == VersionError.exit_code
    assert "'1.0;rm' is not a valid version" in result.stderr
    assert "Traceback" not in result.stderr


def test_build_cli_builds_a_release(tmp_path: Path) -> None:
    out = tmp_path / "r"
    command = [sys.executable, str(BUILD_SCRIPT), "--version", "3.0.0", "--variant", "errors"]
    result = subprocess.run(
        [*command, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert (out / "VERSION").read_text() == "3.0.0\n"
    assert (out / "VARIANT").read_text() == "errors\n"


# --- the running service -----------------------------------------------------------------


def test_good_release_serves_health_root_version_and_slow(
    tmp_path: Path, services: ServiceStarter
) -> None:
    build.build_release("1.4.2", tmp_path / "releases" / "1.4.2")
    build.build_release("1.4.1", tmp_path / "releases" / "1.4.1")
    # Started through a `current` symlink, the service reads the VERSION of the release the
    # link points to, not of the link's directory.
    current = tmp_path / "current"
    current.symlink_to(tmp_path / "releases" / "1.4.2")
    service = services.start(current, APP_VERSION="1.4.2")
    node = socket.gethostname()

    health = _get(service.port, "/health")
    assert health.status == 200
    assert health.content_type == "application/json"
    assert health.json() == {"version": "1.4.2", "node": node, "status": "ok"}

    root = _get(service.port, "/")
    assert root.status == 200
    assert root.body.decode().strip() == f"hello from {node} (v1.4.2)"

    version = _get(service.port, "/version")
    assert (version.status, version.body.decode().strip()) == (200, "1.4.2")

    # That /slow holds a request that long: test_sigterm_lets_in_flight_request_finish_then_exits_zero.
    slow = _get(service.port, "/slow?ms=300")
    assert slow.status == 200
    assert slow.json() == {"version": "1.4.2", "node": node, "ms": 300}

    assert _get(service.port, "/slow?ms=soon").status == 400
    assert _get(service.port, "/nope").status == 404

    log = service.log()
    assert f"version=1.4.2 variant=good node={node} host=127.0.0.1 port={service.port}" in log
    assert '"GET /health HTTP/1.1" 200' in log
    assert '"GET /slow?ms=300 HTTP/1.1" 200' in log
    assert "warning" not in log


def test_badhealth_release_fails_health_but_serves_root(
    tmp_path: Path, services: ServiceStarter
) -> None:
    release = build.build_release("5.0.0", tmp_path / "r", "badhealth")
    service = services.start(release)

    health = _get(service.port, "/health")
    assert health.status == 503
    assert health.json()["status"] == "failing"
    assert health.json()["version"] == "5.0.0"
    assert _get(service.port, "/").status == 200


def test_fault_file_fails_health_for_the_named_version_only(
    tmp_path: Path, services: ServiceStarter
) -> None:
    fault = tmp_path / "fault"
    service = services.start(build.build_release("7.0.0", tmp_path / "r", "good"), FAULT_FILE=str(fault))
    assert _get(service.port, "/health").status == 200
    fault.write_text("unhealthy 7.1.0\n")
    assert _get(service.port, "/health").status == 200
    fault.write_text("unhealthy 7.0.0\n")
    assert _get(service.port, "/health").status == 503
    fault.write_text("unhealthy\n")
    assert _get(service.port, "/health").status == 503
    fault.unlink()
    assert _get(service.port, "/health").status == 200


def test_fault_file_errors_fails_root_while_health_stays_ok(
    tmp_path: Path, services: ServiceStarter
) -> None:
    fault = tmp_path / "fault"
    service = services.start(build.build_release("7.0.0", tmp_path / "r", "good"), FAULT_FILE=str(fault))
    fault.write_text("errors 7.1.0\n")
    assert _get(service.port, "/").status == 200
    fault.write_text("errors 7.0.0\n")
    assert _get(service.port, "/").status == 500
    assert _get(service.port, "/health").status == 200
    fault.unlink()
    assert _get(service.port, "/").status == 200


def test_fault_file_crash_stops_the_named_version_at_start_up(tmp_path: Path) -> None:
    fault = tmp_path / "fault"
    release = build.build_release("7.0.0", tmp_path / "r", "good")
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(_free_port()), "FAULT_FILE": str(fault)}
    fault.write_text("crash 7.0.0\n")
    crashed = subprocess.run([str(release / "bin" / "run")], env=env, capture_output=True,
                             text=True, timeout=10)
    assert crashed.returncode == 3
    assert "crashing at start-up: fault injected for 7.0.0" in crashed.stderr


def test_errors_release_fails_root_after_errors_after_while_health_stays_ok(
    tmp_path: Path, services: ServiceStarter
) -> None:
    release = build.build_release("6.0.0", tmp_path / "r", "errors")
    service = services.start(release, ERRORS_AFTER="1")
    started = time.monotonic()

    assert _get(service.port, "/").status == 200
    assert _get(service.port, "/health").status == 200

    deadline = started + 4.0
    while (status := _get(service.port, "/").status) == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 500
    health = _get(service.port, "/health")
    assert health.status == 200
    assert health.json()["status"] == "ok"


def test_sigterm_lets_in_flight_request_finish_then_exits_zero(
    tmp_path: Path, services: ServiceStarter
) -> None:
    release = build.build_release("7.0.0", tmp_path / "r")
    service = services.start(release)
    results: list[Response] = []
    sent = threading.Event()

    def slow_request() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", service.port, timeout=5)
        try:
            connection.request("GET", "/slow?ms=1500")
            sent.set()
            answer = connection.getresponse()
            results.append(Response(answer.status, answer.getheader("Content-Type", ""), answer.read()))
        finally:
            connection.close()

    threads = Path(f"/proc/{service.process.pid}/task")
    idle = len(list(threads.iterdir()))
    in_flight = threading.Thread(target=slow_request)
    in_flight.start()
    assert sent.wait(timeout=5)
    # The server has accepted it and is serving it (for 1500 ms): a thread of its own handles it.
    deadline = time.monotonic() + 5
    while len(list(threads.iterdir())) <= idle:
        assert time.monotonic() < deadline, "the service never started serving the request"
        time.sleep(0.01)

    service.process.send_signal(signal.SIGTERM)

    # The listener closes at once: new connections are refused while the slow one is served.
    refused_while_in_flight = False
    while in_flight.is_alive():
        try:
            socket.create_connection(("127.0.0.1", service.port), timeout=1).close()
        except ConnectionRefusedError:
            refused_while_in_flight = in_flight.is_alive()
            break
        time.sleep(0.02)
    in_flight.join(timeout=5)

    assert refused_while_in_flight
    assert [(r.status, r.json()["ms"]) for r in results] == [(200, 1500)]
    assert service.process.wait(timeout=5) == 0
    # SIGTERM came while the request was being served, and the service waited for it.
    lines = service.log().splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    assert first("SIGTERM received") < first('"GET /slow?ms=1500 HTTP/1.1" 200') < first(
        "all in-flight requests finished")


def test_missing_version_file_stops_startup_with_a_clear_message(tmp_path: Path) -> None:
    release = build.build_release("1.0.0", tmp_path / "r")
    (release / "VERSION").unlink()

    result = subprocess.run(
        [str(release / "bin" / "run")],
        env={**os.environ, "HOST": "127.0.0.1", "PORT": str(_free_port())},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 2
    assert f"{release / 'VERSION'}: file missing" in result.stderr
    assert "Traceback" not in result.stderr
