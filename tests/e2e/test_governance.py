"""Governance on the lab, through the CLI: stop the line (a freeze set while a deployment runs
pauses it at its next safe point; `unfreeze` and `resume` finish it), and a deployment that
needs an approved change in a ServiceNow-style change API (a small HTTP server on loopback),
asked for by a requester known by key, whose change record is updated with the outcome and
whose signed evidence record an auditor verifies with one command. One lab for the file."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from lab_cli import configured, deployer, fleet, journal, read_until, start
from lab_specs import next_lab_spec

from deployer.artefacts import generate_keypair
from deployer.lab import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NODES = ("node1", "node2", "node3")
USER, PASSWORD = "deployer-bot", "lab-Pa55word-xyz"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    the_lab = Lab(tmp_path_factory.mktemp("governance-lab"))
    try:
        the_lab.up(next_lab_spec(nodes=3, seed="1.0.0"))
        yield the_lab
    finally:
        the_lab.down()


class ChangeApi:
    """A ServiceNow-style change_request Table API on loopback (Basic authentication)."""

    def __init__(self) -> None:
        self.changes: dict[str, dict[str, Any]] = {}
        self.patches: list[tuple[str, dict[str, Any]]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _ok(self) -> bool:
                good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if self.headers.get("Authorization") != good:
                    self._send(401, {"error": {"message": "User Not Authenticated"}})
                    return False
                return True

            def do_GET(self) -> None:  # http.server's name
                if self._ok():
                    query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                    number = query["sysparm_query"][0].removeprefix("number=")
                    self._send(200, {"result": [c for c in api.changes.values() if c["number"] == number]})

            def do_PATCH(self) -> None:
                if self._ok():
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    api.patches.append((self.path.rsplit("/", 1)[-1], body))
                    self._send(200, {"result": body})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, number: str, *, approval: str = "approved") -> None:
        now = time.time()
        fmt = "%Y-%m-%d %H:%M:%S"
        self.changes[number] = {
            "sys_id": f"c0ffee{len(self.changes):04d}", "number": number, "state": "-1",
            "approval": approval, "risk": "3",
            "start_date": time.strftime(fmt, time.gmtime(now - 3600)),
            "end_date": time.strftime(fmt, time.gmtime(now + 3600)),
        }


@pytest.fixture()
def change_api() -> Iterator[ChangeApi]:
    api = ChangeApi()
    try:
        yield api
    finally:
        api.httpd.shutdown()


def test_a_freeze_set_while_a_deployment_runs_pauses_it_and_unfreeze_lets_it_continue(lab: Lab) -> None:
    # The freeze is set by a command of its own, started once batch 1 has: the pause after the
    # batch gives it time to land before batch 2's safe point even on a loaded machine.
    config = configured(lab, "freeze.yml", strategy={"pause_between_batches": 8})
    proc = start(config, "deploy", "--env", "lab", "--version", "1.1.0")
    read_until(proc, "batch 1/3")
    frozen = deployer(config, "freeze", "--env", "lab", "--reason", "incident INC-9: stop the line")
    assert frozen.returncode == 0, frozen.stderr
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 15, err
    assert "paused by the freeze gate before batch 2/3: environment 'lab' is frozen by " in err
    assert "incident INC-9: stop the line" in err
    assert fleet(lab) == {"node1": ("1.1.0", "UP"), "node2": ("1.0.0", "UP"), "node3": ("1.0.0", "UP")}
    # While frozen, nothing starts: not a new deployment, not the resume; both name the freeze.
    for argv in (("deploy", "--env", "lab", "--version", "1.1.0"), ("resume", "--env", "lab")):
        r = deployer(config, *argv)
        assert r.returncode == 14 and "refused by the freeze gate" in r.stderr, r.stderr
        assert "INC-9" in r.stderr and "deployer unfreeze --env lab" in r.stderr
    lifted = deployer(config, "unfreeze", "--env", "lab", "--reason", "incident over")
    assert lifted.returncode == 0 and "lifted the freeze" in lifted.stderr, lifted.stderr
    r = deployer(config, "resume", "--env", "lab")
    assert r.returncode == 0, r.stderr
    assert fleet(lab) == dict.fromkeys(NODES, ("1.1.0", "UP"))
    log = [json.loads(line) for line in (lab.dir / "locks" / "lab.log").read_text().splitlines()]
    assert [(e["event"], e["reason"]) for e in log if e["event"] in ("froze", "unfroze")] == [
        ("froze", "incident INC-9: stop the line"), ("unfroze", "incident over")]


def verify(file: Path, key: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`deployer evidence verify`, as an auditor runs it: no config, no fleet."""
    return subprocess.run([sys.executable, "-m", "deployer", "evidence", "verify", str(file),
                           "--trusted-key", str(key), *extra], capture_output=True, text=True,
                          timeout=60, check=False, cwd=file.parent)


def test_an_approved_change_the_requesters_signature_and_evidence_an_auditor_verifies(
    lab: Lab, change_api: ChangeApi, tmp_path: Path,
) -> None:
    keys = {n: generate_keypair(tmp_path / "keys", n) for n in ("sam", "ci", "evidence")}
    (tmp_path / "sn_password").write_text(PASSWORD + "\n")
    gates = {
        "approvals": {"provider": "change_api"},
        "change_api": {"url": change_api.url, "user_env": "LAB_SN_USER",
                       "password_file": str(tmp_path / "sn_password")},
        "evidence": {"key": str(keys["evidence"].secret_path), "store": f"file://{lab.store_dir}"},
    }
    config = configured(lab, "changes.yml", gates=gates)
    env = {"LAB_SN_USER": USER}
    version = "1.1.0" if fleet(lab)["node1"][0] == "1.0.0" else "1.0.0"  # whatever runs now
    change_api.add("CHG0000100", approval="requested")
    refused = deployer(config, "deploy", "--env", "lab", "--version", version, "--change", "CHG0000100",
                       env=env)
    assert refused.returncode == 14, refused.stderr
    assert "refused by the change gate: change CHG0000100 is not approved (approval: requested)" in \
        refused.stderr
    change_api.add("CHG0000101")
    plan = deployer(config, "plan", "--env", "lab", "--version", version, "--change", "CHG0000101",
                    env=env)
    assert plan.returncode == 0, plan.stderr
    assert "change: pass: change CHG0000101 approved, state -1, planned" in plan.stdout
    assert "freeze: pass: not frozen" in plan.stdout
    r = deployer(config, "deploy", "--env", "lab", "--version", version, "--change", "CHG0000101",
                 "--requester-key", str(keys["ci"].secret_path), "--json", env=env)
    assert r.returncode == 0, r.stderr
    uid = json.loads(r.stdout)["uid"]
    assert fleet(lab) == dict.fromkeys(NODES, (version, "UP"))
    # The change record got the outcome; the credentials went nowhere but the header.
    sys_id, closing = change_api.patches[-1]
    assert sys_id == "c0ffee0001" and closing["close_code"] == "successful"
    assert uid in closing["close_notes"]
    for text in (r.stdout, r.stderr, plan.stdout, refused.stderr,
                 json.dumps(journal(lab).deployments("lab", limit=1)[0].details)):
        assert PASSWORD not in text

    # The auditor: one file from the store, one public key, one command; no fleet access.
    published = lab.store_dir / "_evidence" / "lab" / f"{uid}.json"
    audit = tmp_path / "audit"
    audit.mkdir()
    shutil.copy(published, audit / "evidence.json")
    shutil.copy(published.with_name(published.name + ".minisig"), audit / "evidence.json.minisig")
    ok = verify(audit / "evidence.json", keys["evidence"].public_path, "--json")
    assert ok.returncode == 0, ok.stderr
    record = json.loads(ok.stdout)
    assert record["deployment"]["uid"] == uid and record["deployment"]["status"] == "succeeded"
    assert record["change"]["id"] == "CHG0000101" and record["change"]["record"]["approval"] == "approved"
    assert record["requested_by"]["requester"]["key_id"] == keys["ci"].key_id_hex
    assert [s["passed"] for s in record["checks"]["smoke"]] == [True, True, True]
    assert record["where"]["nodes"] == list(NODES)
    (audit / "evidence.json").write_text((audit / "evidence.json").read_text().replace(
        '"succeeded"', '"failed"', 1))
    bad = verify(audit / "evidence.json", keys["evidence"].public_path)
    assert bad.returncode == 5 and "does not match the data" in bad.stderr
