"""deployer_release_switch's restart: through a real supervisord's XML-RPC socket (no lab needed),
and the systemctl commands it runs for systemd."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import pytest
from role_modules import load_module

pytestmark = pytest.mark.daemons  # a real supervisord

switch = load_module("deployer_release", "deployer_release_switch")

needs_supervisord = pytest.mark.skipif(
    shutil.which("supervisord") is None, reason="supervisord not installed"
)

APP = "import os, time; open('{pidfile}', 'w').write(str(os.getpid()) + ' {tag}'); time.sleep(600)"
PROGRAM = (
    '[program:app]\ncommand={python} -c "' + APP + '"\n'
    "autostart=true\nautorestart=true\nstartsecs=0\nstopwaitsecs=5\n"
)


class Supervisord:
    def __init__(self, root: Path, password: str = "") -> None:
        self.root = root
        self.socket = root / "supervisor.sock"
        self.conf_d = root / "conf.d"
        self.pidfile = root / "app.pid"
        self.conf_d.mkdir()
        credentials = f"username=deployer\npassword={password}\n" if password else ""
        (root / "supervisord.conf").write_text(
            f"[unix_http_server]\nfile={self.socket}\n{credentials}\n"
            f"[supervisord]\nlogfile={root}/supervisord.log\npidfile={root}/supervisord.pid\n"
            f"childlogdir={root}\nnodaemon=true\n\n"
            "[rpcinterface:supervisor]\n"
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n"
            f"[include]\nfiles = {self.conf_d}/*.conf\n"
        )

    def write_program(self, tag: str) -> None:
        (self.conf_d / "app.conf").write_text(
            PROGRAM.format(python=sys.executable, pidfile=self.pidfile, tag=tag)
        )

    def write_crashing_program(self, startsecs: int = 0) -> None:
        """A release whose process exits at once; supervisord keeps restarting it."""
        (self.conf_d / "app.conf").write_text(
            "[program:app]\ncommand=/bin/false\nautostart=true\nautorestart=true\n"
            f"startsecs={startsecs}\n"
        )

    def wait_for_crashes(self, count: int) -> None:
        """Until supervisord has seen the program exit ``count`` more times (its log says so)."""
        log = self.root / "supervisord.log"

        def exits() -> int:
            return log.read_text().count("exited: app") if log.exists() else 0

        target = exits() + count
        deadline = time.monotonic() + 10
        while exits() < target:
            assert time.monotonic() < deadline, "supervisord did not restart the crashing program"
            time.sleep(0.02)

    def app(self) -> tuple[int, str]:
        """The running app's pid and the tag its program file gave it."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = self.pidfile.read_text() if self.pidfile.exists() else ""
            if text:
                pid, tag = text.split()
                return int(pid), tag
            time.sleep(0.02)
        raise AssertionError("the app did not start")


@pytest.fixture
def supervisord(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Supervisord]:
    sup = Supervisord(tmp_path, password=getattr(request, "param", ""))
    sup.write_program("v1")
    proc = subprocess.Popen(
        ["supervisord", "-c", str(tmp_path / "supervisord.conf")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sup.socket.exists():
            assert time.monotonic() < deadline, "supervisord did not open its socket"
            time.sleep(0.02)
        sup.app()
        yield sup
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _never_called(argv: list[str]) -> tuple[int, str, str]:
    raise AssertionError(f"supervisorctl must not be used when the socket works: {argv}")


@needs_supervisord
def test_restart_with_the_same_program_file_starts_a_new_process(supervisord: Supervisord) -> None:
    pid, _ = supervisord.app()
    supervisord.pidfile.unlink()

    ok, output = switch.restart_program(str(supervisord.socket), _never_called, "app")

    assert ok, output
    assert "stopped" in output and "running" in output
    new_pid, tag = supervisord.app()
    assert new_pid != pid and tag == "v1"


@needs_supervisord
def test_restart_after_the_program_file_changed_runs_the_new_settings(supervisord: Supervisord) -> None:
    supervisord.pidfile.unlink()
    supervisord.write_program("v2")

    ok, output = switch.restart_program(str(supervisord.socket), _never_called, "app")

    assert ok, output
    assert "removed" in output and "added" in output
    assert supervisord.app()[1] == "v2"


@needs_supervisord
@pytest.mark.parametrize(("startsecs", "reported"), [
    # Given start seconds, a process that exits before they are over never becomes RUNNING:
    # the restart reports the crash (BACKOFF, or FATAL once supervisord gives up) instead of
    # waiting for a RUNNING that never comes until its timeout.
    (1, {"backoff", "fatal"}),
    # Without them (the role's default) supervisord calls it RUNNING as it is spawned, then
    # EXITED; the restart reports whichever it saw first, and the smoke check judges the release.
    (0, {"running", "exited"}),
])
def test_a_release_that_crashes_at_once_is_reported_as_supervisord_sees_it(
    supervisord: Supervisord, startsecs: int, reported: set[str]
) -> None:
    supervisord.write_crashing_program(startsecs)

    ok, output = switch.restart_program(str(supervisord.socket), _never_called, "app")

    steps = output.removeprefix("app: ").split(", ")
    assert steps[:2] == ["removed", "added"] and steps[-1] in reported, output
    assert ok is (steps[-1] == "running")


@needs_supervisord
def test_a_fixed_release_replaces_one_that_keeps_crashing(supervisord: Supervisord) -> None:
    for attempt in range(4):
        supervisord.write_crashing_program()
        switch.restart_program(str(supervisord.socket), _never_called, "app")
        supervisord.wait_for_crashes(2)  # it is restarted again and again meanwhile
        supervisord.pidfile.unlink(missing_ok=True)
        supervisord.write_program(f"fixed{attempt}")

        ok, output = switch.restart_program(str(supervisord.socket), _never_called, "app")

        assert ok, output
        assert supervisord.app()[1] == f"fixed{attempt}"


@needs_supervisord
def test_an_unknown_program_is_reported_as_not_running(supervisord: Supervisord) -> None:
    ok, output = switch.restart_program(str(supervisord.socket), _never_called, "nosuchapp")

    assert not ok
    assert "nosuchapp" in output


def test_without_the_socket_supervisorctl_is_used(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def supervisorctl(argv: list[str]) -> tuple[int, str, str]:
        calls.append(argv)
        return 0, "app: stopped\napp: updated process group\n", ""

    ok, _ = switch.restart_program(str(tmp_path / "absent.sock"), supervisorctl, "app")

    assert ok
    assert calls == [["supervisorctl", "update", "app"]]


@needs_supervisord
@pytest.mark.parametrize("supervisord", ["s3cret"], indirect=True)
def test_a_socket_that_needs_a_password_leaves_the_restart_to_supervisorctl(
    supervisord: Supervisord,
) -> None:
    calls: list[list[str]] = []

    def supervisorctl(argv: list[str]) -> tuple[int, str, str]:
        calls.append(argv)
        return 0, "app: stopped\napp: updated process group\n", ""

    ok, _ = switch.restart_program(str(supervisord.socket), supervisorctl, "app")

    assert ok
    assert calls == [["supervisorctl", "update", "app"]]


# What supervisord answers, as the standard library's XML-RPC writes it: read the same.
@pytest.mark.parametrize("value", [
    "RUNNING",
    "",
    "a & b <c>",
    42,
    True,
    False,
    [[["app"], [], []]],
    {"name": "app", "statename": "RUNNING", "pid": 4242, "exitstatus": 0, "spawnerr": ""},
    [{"name": "a", "group": "a"}, {"name": "b", "group": "b"}],
])
def test_an_answer_is_read_as_xmlrpc_writes_it(value: object) -> None:
    answer = xmlrpc.client.dumps((value,), methodresponse=True).encode()

    assert switch.rpc_result(answer) == value


def test_a_value_without_a_type_is_a_string() -> None:
    answer = (b"<?xml version='1.0'?><methodResponse><params><param><value>RUNNING</value>"
              b"</param></params></methodResponse>")

    assert switch.rpc_result(answer) == "RUNNING"


def test_a_fault_is_raised_with_its_code() -> None:
    answer = xmlrpc.client.dumps(xmlrpc.client.Fault(10, "BAD_NAME: nosuchapp")).encode()

    with pytest.raises(switch.RpcFault) as caught:
        switch.rpc_result(answer)

    assert caught.value.code == 10 and "BAD_NAME: nosuchapp" in str(caught.value)


@pytest.mark.parametrize("answer", [b"", b"<html>401 Unauthorized</html>", b"<methodResponse><params>"])
def test_an_answer_that_is_not_xmlrpc_is_a_protocol_error(answer: bytes) -> None:
    with pytest.raises(switch.RpcProtocolError):
        switch.rpc_result(answer)


def test_a_request_reads_back_as_the_method_and_its_parameters() -> None:
    params, method = xmlrpc.client.loads(switch.rpc_request("supervisor.stopProcess", ("a&<b>", False)))

    assert method == "supervisor.stopProcess"
    assert params == ("a&<b>", False)


def test_an_answer_is_read_to_its_length_on_a_connection_left_open(tmp_path: Path) -> None:
    path = str(tmp_path / "rpc.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    release = threading.Event()

    def answer_and_keep_open() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            body = xmlrpc.client.dumps(("RUNNING",), methodresponse=True).encode()
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body[:20])
            time.sleep(0.05)
            conn.sendall(body[20:])
            release.wait(10)

    thread = threading.Thread(target=answer_and_keep_open)
    thread.start()
    try:
        assert switch.rpc_call(path, 5.0, "supervisor.getState") == "RUNNING"
    finally:
        release.set()
        thread.join()
        server.close()


class FakeSystemctl:
    """Answers systemctl commands: the unit is enabled or not; one command may fail."""

    def __init__(self, enabled: bool, failing: str = "") -> None:
        self.enabled = enabled
        self.failing = failing
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> tuple[int, str, str]:
        self.calls.append(argv)
        if argv[1] == "show":
            return 0, "NeedDaemonReload=no\n", ""
        if argv[1] == "is-enabled":
            return (0 if self.enabled else 1), "", ""
        if argv[1] == self.failing:
            return 1, "", f"Job for app.service failed ({self.failing})"
        return 0, "", ""


def test_systemd_restart_reloads_only_when_the_unit_changed_and_enables_once() -> None:
    changed = FakeSystemctl(enabled=False)
    ok, _ = switch.restart_systemd(changed, "app", reload=True)
    assert ok
    assert [c[1] for c in changed.calls] == ["is-enabled", "daemon-reload", "enable", "restart"]

    same = FakeSystemctl(enabled=True)
    ok, _ = switch.restart_systemd(same, "app", reload=False)
    assert ok
    assert [c[1] for c in same.calls] == ["show", "is-enabled", "restart"]
    assert same.calls[-1] == ["systemctl", "restart", "app.service"]


def test_a_failed_systemd_restart_is_reported() -> None:
    ok, output = switch.restart_systemd(FakeSystemctl(enabled=True, failing="restart"), "app", reload=False)
    assert not ok
    assert "systemctl restart app.service failed" in output and "Job for app.service failed" in output
