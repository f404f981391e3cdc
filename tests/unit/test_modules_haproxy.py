"""deployer_haproxy against a real HAProxy started on a tmp socket and loopback ports."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from role_modules import load_module

haproxy = load_module("deployer_lb_haproxy", "deployer_haproxy")



def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DummyServer:
    """Accepts TCP connections and answers HTTP 200 after `delay` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(4096)
            time.sleep(self.delay)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    def close(self) -> None:
        self.listener.close()


@pytest.fixture()
def lb(tmp_path: Path) -> Iterator[dict[str, Any]]:
    backend_server = DummyServer(delay=0.6)
    frontend_port = free_port()
    sock = tmp_path / "admin.sock"
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        f"""global
    stats socket {sock} level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend web
    bind 127.0.0.1:{frontend_port}
    default_backend app
backend app
    server node1 127.0.0.1:{backend_server.port} check inter 200ms rise 1 fall 1
    server node2 127.0.0.1:{backend_server.port}
"""
    )
    process = subprocess.Popen(["haproxy", "-db", "-f", str(config)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        yield {"socket": str(sock), "backend": "app", "frontend_port": frontend_port}
    finally:
        process.terminate()
        process.wait(timeout=5)
        backend_server.close()


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


def slow_request(port: int) -> threading.Thread:
    def request() -> None:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            conn.recv(4096)

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    return thread


def test_maint_waits_for_sessions_then_ready_brings_the_server_back(lb: dict[str, Any]) -> None:
    assert call(lb, "node2", "query")["up"] is True
    requests = [slow_request(lb["frontend_port"]) for _ in range(4)]
    time.sleep(0.15)
    result = call(lb, "node2", "maint")
    assert result["changed"] is True
    assert result["sessions"] == 0 and "maint" in result["admin_state"]
    assert result["waited"] > 0.2 and result["drain_timed_out"] is False
    assert all(not thread.is_alive() for thread in requests if thread.join(1) is None)
    again = call(lb, "node2", "maint")
    assert again["changed"] is False
    ready = call(lb, "node2", "ready")
    assert ready["changed"] is True and ready["up"] is True and ready["admin_state"] == []
    assert call(lb, "node2", "ready")["changed"] is False


def test_drain_timeout_still_puts_the_server_in_maintenance(lb: dict[str, Any]) -> None:
    # Pin all traffic on node1 by taking node2 out first.
    call(lb, "node2", "maint", drain_timeout=0)
    slow_request(lb["frontend_port"])
    time.sleep(0.15)
    result = call(lb, "node1", "maint", drain_timeout=0.1)
    assert result["drain_timed_out"] is True and "maint" in result["admin_state"]


def test_ready_forces_health_up_and_waits_for_up(lb: dict[str, Any]) -> None:
    call(lb, "node1", "maint", drain_timeout=0)
    result = call(lb, "node1", "ready", force_health_up=True)
    assert result["status"].startswith("UP") and result["waited"] < 1


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
