"""deployer_haproxy against a real HAProxy started on a tmp socket and loopback ports."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import DummyServer
from role_modules import load_module

pytestmark = pytest.mark.daemons  # a real HAProxy

haproxy = load_module("deployer_lb_haproxy", "deployer_haproxy")


def call(lb: dict[str, Any], server: str, state: str, **extra: Any) -> dict[str, Any]:
    params = {
        "socket": lb["socket"],
        "backend": lb["backend"],
        "server": server,
        "state": state,
        "drain_timeout": 5,
        "up_timeout": 5,
        "poll_interval": 0.05,
        **extra,
    }
    result: dict[str, Any] = haproxy.run(params)
    return result


def slow_request(port: int, answers: list[bytes] | None = None) -> threading.Thread:
    def request() -> None:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := conn.recv(4096):
                answer += chunk
            if answers is not None:
                answers.append(answer)

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    return thread


def wait_for_sessions(lb: dict[str, Any], server: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while call(lb, server, "query")["sessions"] < count:
        assert time.monotonic() < deadline, f"{server} never had {count} sessions"
        time.sleep(0.02)


def test_maint_waits_for_sessions_then_ready_brings_the_server_back(lb: dict[str, Any]) -> None:
    # Only node2 takes traffic, so the held requests are all its sessions.
    call(lb, "node1", "maint", drain_timeout=0)
    call(lb, "node3", "maint", drain_timeout=0)
    assert call(lb, "node2", "query")["up"] is True
    backend: DummyServer = lb["server"]
    backend.gate.clear()
    answers: list[bytes] = []
    requests = [slow_request(lb["frontend_port"], answers) for _ in range(4)]
    wait_for_sessions(lb, "node2", 4)
    results: list[dict[str, Any]] = []
    maint = threading.Thread(target=lambda: results.append(call(lb, "node2", "maint", drain_timeout=30)))
    maint.start()
    # Drained at once, and kept out of maintenance while its requests are in flight.
    deadline = time.monotonic() + 5
    while "drain" not in call(lb, "node2", "query")["admin_state"]:
        assert time.monotonic() < deadline, "node2 was not drained"
        time.sleep(0.02)
    assert maint.is_alive() and "maint" not in call(lb, "node2", "query")["admin_state"]
    backend.gate.set()
    maint.join(35)
    [result] = results
    assert backend.answered == 4  # every request was answered before the maintenance
    assert result["changed"] is True and result["drain_timed_out"] is False
    assert result["sessions"] == 0 and "maint" in result["admin_state"]
    for thread in requests:
        thread.join(5)
    assert [a.split(b"\r\n")[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 4
    again = call(lb, "node2", "maint")
    assert again["changed"] is False
    ready = call(lb, "node2", "ready")
    assert ready["changed"] is True and ready["up"] is True and ready["admin_state"] == []
    assert call(lb, "node2", "ready")["changed"] is False


def test_drain_timeout_still_puts_the_server_in_maintenance(lb: dict[str, Any]) -> None:
    # Pin all traffic on node1 by taking the others out first, and hold its request.
    call(lb, "node2", "maint", drain_timeout=0)
    call(lb, "node3", "maint", drain_timeout=0)
    backend: DummyServer = lb["server"]
    backend.gate.clear()
    answers: list[bytes] = []
    request = slow_request(lb["frontend_port"], answers)
    wait_for_sessions(lb, "node1", 1)
    result = call(lb, "node1", "maint", drain_timeout=0.1)
    assert result["drain_timed_out"] is True and "maint" in result["admin_state"]
    assert result["sessions"] == 1 and backend.answered == 0
    assert "still had 1 session(s)" in haproxy.drain_warning(
        {"backend": "app", "server": "node1", "drain_timeout": 0.1}, result)
    # Maintenance does not cut the session: the request is still answered.
    backend.gate.set()
    request.join(5)
    assert [a.split(b"\r\n")[0] for a in answers] == [b"HTTP/1.1 200 OK"]


def test_ready_forces_health_up_only_when_asked(lb: dict[str, Any]) -> None:
    # node3's health checks run once a minute: a drained node3 whose health is down (as after
    # a restart) stays DOWN when made ready, unless its health is forced up.
    api = haproxy.RuntimeApi(lb["socket"], 5)

    def drained_and_down() -> None:
        call(lb, "node3", "drain", drain_timeout=0)
        api.set_server("app", "node3", "health down")
        assert call(lb, "node3", "query")["up"] is False

    drained_and_down()
    with pytest.raises(haproxy.RuntimeApiError, match="still reports app/node3 as 'DOWN'"):
        call(lb, "node3", "ready", up_timeout=1)
    drained_and_down()
    result = call(lb, "node3", "ready", force_health_up=True)
    assert result["changed"] is True and result["up"] is True and result["status"].startswith("UP")


def test_unknown_names_and_missing_socket_fail_clearly(lb: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(haproxy.RuntimeApiError, match="no server 'nope'"):
        call(lb, "nope", "query")
    with pytest.raises(haproxy.RuntimeApiError, match="no backend 'other'"):
        haproxy.run({"socket": lb["socket"], "backend": "other", "server": "node1"})
    with pytest.raises(haproxy.RuntimeApiError, match="cannot reach the HAProxy runtime API"):
        haproxy.run({"socket": str(tmp_path / "missing.sock"), "backend": "app", "server": "x"})


@pytest.mark.parametrize(
    ("backend", "server", "bad"),
    [
        ("app;disable server app/node2", "node1", "backend"),
        ("app", "node1\nset server app/node2 state maint", "server"),
        ("app", "node1 state maint;", "server"),
        ("", "node1", "backend"),
        ("app/node2", "node1", "backend"),
    ],
)
def test_backend_and_server_names_are_checked_before_any_command(
    tmp_path: Path, backend: str, server: str, bad: str
) -> None:
    # A listening socket that records what it is sent: nothing must reach it.
    path = tmp_path / "admin.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(0.2)
    try:
        with pytest.raises(haproxy.RuntimeApiError, match=f"is not a valid HAProxy {bad} name"):
            haproxy.run({"socket": str(path), "backend": backend, "server": server, "state": "drain"})
        with pytest.raises(OSError):
            listener.accept()
    finally:
        listener.close()


def test_ordinary_names_are_valid() -> None:
    for name in ("hello", "web-1", "be_app.v2", "10.0.0.1:8080"):
        assert haproxy.check_name("server", name) == name
