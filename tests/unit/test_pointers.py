"""The pointer implementations for real: a file, an HTTP server on loopback (conditional GET with
ETag, PUT) and SSM Parameter Store in moto's server on loopback, through boto3. Each reads what
was written with a new revision per write, and keeps the status beside the pointer."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

from deployer import PointerError
from deployer.agent import (
    AgentStatus,
    Desired,
    FilePointer,
    HttpPointer,
    LastDeployment,
    Pointer,
    SsmPointer,
    get_desired,
    set_desired,
)
from deployer.agent._status import Acted


def _round_trip(pointer: Pointer) -> None:
    """What every pointer does: nothing written reads as None; each write a new revision,
    even of the same version; the status beside it."""
    assert get_desired(pointer) is None
    assert pointer.read_status() is None
    first = set_desired(pointer, Desired("1.1.0", reason="train 49", requester="ana"))
    read = get_desired(pointer)
    assert read == first and read.reason == "train 49" and read.requester == "ana"
    again = set_desired(pointer, Desired("1.1.0", reason="retry", set_at="later"))
    assert again.revision != first.revision
    assert get_desired(pointer) == again
    pointer.write("1.0.0\n")  # what a person with only write access to the value writes
    plain = get_desired(pointer)
    assert plain is not None and plain.version == "1.0.0" and plain.reason == ""
    pointer.write_status('{"decision": "deployed"}')
    assert (pointer.read_status() or "").strip() == '{"decision": "deployed"}'


def test_a_file_pointer(tmp_path: Path) -> None:
    pointer = FilePointer(tmp_path / "pointer" / "prod.json", tmp_path / "pointer" / "prod.status.json")
    _round_trip(pointer)
    assert (tmp_path / "pointer" / "prod.status.json").read_text().startswith('{"decision"')


def test_a_pointer_value_that_is_not_a_request_is_refused_naming_it(tmp_path: Path) -> None:
    pointer = FilePointer(tmp_path / "p.json", tmp_path / "s.json")
    for text, words in [("1.0.0; reboot", "is not a valid version"),
                        ('{"version": 1}', "no 'version' string"),
                        ("{not json", "not JSON nor a version")]:
        pointer.write(text)
        with pytest.raises(PointerError, match=words) as refused:
            get_desired(pointer)
        assert str(tmp_path / "p.json") in refused.value.message


class _Pointers(http.server.BaseHTTPRequestHandler):
    """An HTTP pointer service: GET with ETag (304 when it matches), PUT; bearer token checked."""

    store: dict[str, bytes] = {}
    requests: list[tuple[str, str, str]] = []
    token = "s3cret-token"

    def log_message(self, *args: Any) -> None:
        pass

    def _authorised(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            self.send_response(401)
            self.end_headers()
            return False
        return True

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, self.headers.get("If-None-Match") or ""))
        if not self._authorised():
            return
        body = self.store.get(self.path)
        if body is None:
            self.send_response(404)
            self.end_headers()
            return
        etag = '"' + hashlib.sha256(body).hexdigest()[:12] + '"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("ETag", etag)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        self.requests.append(("PUT", self.path, ""))
        if not self._authorised():
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.store[self.path] = body
        self.send_response(204)
        self.send_header("ETag", '"' + hashlib.sha256(body).hexdigest()[:12] + '"')
        self.end_headers()


@pytest.fixture()
def http_pointers() -> Iterator[str]:
    _Pointers.store, _Pointers.requests = {}, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pointers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.daemons
def test_an_http_pointer(http_pointers: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POINTER_TOKEN", _Pointers.token)
    pointer = HttpPointer(f"{http_pointers}/prod", f"{http_pointers}/prod.status",
                          token_env="POINTER_TOKEN")
    _round_trip(pointer)
    # An unchanged pointer costs a conditional GET answered 304, and reads the same.
    before = get_desired(pointer)
    _Pointers.requests.clear()
    assert get_desired(pointer) == before
    assert _Pointers.requests == [("GET", "/prod", _Pointers.requests[0][2])]
    assert _Pointers.requests[0][2].startswith('"')  # If-None-Match sent
    monkeypatch.setenv("POINTER_TOKEN", "wrong")
    with pytest.raises(PointerError, match="answered 401"):
        pointer.read_status()
    monkeypatch.delenv("POINTER_TOKEN")
    with pytest.raises(PointerError, match=r"\$POINTER_TOKEN is not set"):
        pointer.read()


@pytest.fixture()
def moto_ssm() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.mark.daemons
def test_an_ssm_pointer_in_motos_server(moto_ssm: str, tmp_path: Path) -> None:
    credentials = tmp_path / "aws" / "credentials"
    credentials.parent.mkdir()
    credentials.write_text("[deployer-prod]\naws_access_key_id = testing\n"
                           "aws_secret_access_key = testing\n")
    pointer = SsmPointer("/deployer/prod/version", "/deployer/prod/status", region="eu-west-1",
                         endpoint_url=moto_ssm, profile="deployer-prod",
                         credentials_file=credentials)
    _round_trip(pointer)
    # The revision is the parameter's version: one more per write.
    first = set_desired(pointer, Desired("1.2.0"))
    second = set_desired(pointer, Desired("1.2.0"))
    assert int(second.revision) == int(first.revision) + 1
    assert pointer.where == "ssm:/deployer/prod/version"


def test_a_status_fits_a_standard_ssm_parameter() -> None:
    status = AgentStatus(
        env="prod", app="hello", decision="failed", reason="x" * 5000,
        desired=Desired("1.4.2", reason="r" * 200, requester="ana@laptop", set_at="t", revision="7"),
        running=None, versions={f"1.4.{i}": 3 for i in range(10)}, acted=Acted("7", "1.4.2"),
        last_deployment=LastDeployment(uid="01JEXS7V8T6Q3M0W2ZB1K9D4RC", id=41, kind="deploy",
                                       version="1.4.2", status="rolled_back", exit_code=10,
                                       summary="s" * 5000, at="t", revision="7"),
        deployment="01JEXS7V8T6Q3M0W2ZB1K9D4RC", exit_code=10, at="t", agent="deployer@runner1 pid 1")
    text = status.to_text()
    assert len(text) < 4096
    read = AgentStatus.from_text(text)
    assert read is not None and read.last_deployment is not None
    assert read.last_deployment.exit_code == 10 and read.acted == Acted("7", "1.4.2")
    assert AgentStatus.from_text(read.to_text()) == read
    assert AgentStatus.from_text("not json") is None
