"""Change records and evidence records: a ServiceNow-style change API (a real HTTP server on
loopback: not approved, approved, outside its planned window, updated with the outcome after a
success and after a failure, credentials never shown), and the evidence record every deployment
leaves (signed, verified, tampered with, published, shown; a refused deployment's too)."""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import NODES
from gates_world import DAY_WINDOW, HOUR, TUESDAY_1550, Clock, People, gated, with_approvals

from deployer import GateRefused
from deployer.artefacts import generate_keypair, load_public_key, open_store
from deployer.cli.main import main
from deployer.config import ChangeApiConfig
from deployer.gates import GateRequest
from deployer.gates.changes import ChangeApi
from deployer.gates.evidence import record_key, verify_evidence
from deployer.testing import bad_batch, good_batch, revert_batch, survey

FROM_1_0 = dict.fromkeys(NODES, "1.0.0")
USER, PASSWORD = "deployer-bot", "s3cret-Pa55word"


def sn_time(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


class ChangeServer:
    """A ServiceNow-style change_request Table API on loopback: changes by number, every PATCH
    kept; Basic authentication required."""

    def __init__(self) -> None:
        self.changes: dict[str, dict[str, Any]] = {}
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.seen_auth: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                auth = self.headers.get("Authorization", "")
                server.seen_auth.append(auth)
                good = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                if auth != good:
                    self._answer(401, {"error": {"message": "User Not Authenticated",
                                                 "detail": "Required to provide Auth information"}})
                    return False
                return True

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                url = urllib.parse.urlparse(self.path)
                assert url.path == "/api/now/table/change_request", url.path
                query = urllib.parse.parse_qs(url.query)["sysparm_query"][0]
                number = query.removeprefix("number=")
                found = [c for c in server.changes.values() if c["number"] == number]
                self._answer(200, {"result": found})

            def do_PATCH(self) -> None:
                if not self._authorised():
                    return
                sys_id = self.path.rsplit("/", 1)[-1]
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.patches.append((sys_id, body))
                self._answer(200, {"result": {"sys_id": sys_id, **body}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def add(self, number: str, *, approval: str = "approved", state: str = "-1",
            start: float = TUESDAY_1550 - HOUR, end: float = TUESDAY_1550 + HOUR) -> None:
        self.changes[number] = {"sys_id": f"sys{len(self.changes) + 1:04d}", "number": number,
                                "state": state, "approval": approval, "risk": "3",
                                "start_date": sn_time(start), "end_date": sn_time(end),
                                "short_description": "hello 1.1.0"}


@pytest.fixture()
def change_server() -> Iterator[ChangeServer]:
    server = ChangeServer()
    try:
        yield server
    finally:
        server.httpd.shutdown()


def change_api(server: ChangeServer, **extra: Any) -> ChangeApi:
    config = ChangeApiConfig(url=server.url, user_env="SN_USER", password_env="SN_PASSWORD")
    return ChangeApi(config, environ={"SN_USER": USER, "SN_PASSWORD": PASSWORD, **extra})


CHANGE_GATES = {"approvals": {"provider": "change_api"},
                "change_api": {"url": "http://127.0.0.1:9", "user_env": "SN_USER",
                               "password_env": "SN_PASSWORD"}}


@pytest.mark.daemons  # the change API's stand-in, an HTTP server
def test_a_change_that_is_not_approved_or_outside_its_window_is_refused(
    world: dict[str, Path], change_server: ChangeServer,
) -> None:
    change_server.add("CHG0000001", approval="requested")
    change_server.add("CHG0000002", start=TUESDAY_1550 + HOUR, end=TUESDAY_1550 + 2 * HOUR)
    api = change_api(change_server)
    for number, says in (("CHG0000001", "change CHG0000001 is not approved (approval: requested)"),
                         ("CHG0000002", "change CHG0000002's planned window opens at 2026-12-08T16:50:00Z"),
                         ("CHG0000009", "there is no change CHG0000009 in http://127.0.0.1:")):
        g = gated(world["config"], [], gates=CHANGE_GATES, change_provider=api,
                  request=GateRequest(change=number))
        with pytest.raises(GateRefused) as refused:
            g.deploy("1.1.0")
        assert refused.value.gate == "change" and says in refused.value.message, refused.value.message
        assert g.d.runner.requests == []
    g = gated(world["config"], [], gates=CHANGE_GATES, change_provider=api, request=GateRequest())
    with pytest.raises(GateRefused, match="needs an approved change: give its number with --change"):
        g.deploy("1.1.0")


@pytest.mark.daemons  # the change API's stand-in, an HTTP server
def test_an_approved_change_is_updated_with_the_outcome(
    world: dict[str, Path], change_server: ChangeServer,
) -> None:
    change_server.add("CHG0000003")
    scripts = [survey(FROM_1_0), *[good_batch([n]) for n in NODES]]
    g = gated(world["config"], scripts, gates=CHANGE_GATES, change_provider=change_api(change_server),
              request=GateRequest(change="CHG0000003"))
    outcome = g.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    assert g.gates.state.change is not None and g.gates.state.change.sys_id == "sys0001"
    started, finished = change_server.patches
    assert started[0] == "sys0001" and "started by" in started[1]["work_notes"]
    assert finished[1]["close_code"] == "successful"
    assert f"deployer deployment {outcome.uid} (deploy 1.1.0 to lab)" in finished[1]["close_notes"]
    assert "3 node(s) now run 1.1.0" in finished[1]["close_notes"]


@pytest.mark.daemons  # the change API's stand-in, an HTTP server
def test_the_change_is_updated_after_a_failure_too(
    world: dict[str, Path], change_server: ChangeServer,
) -> None:
    change_server.add("CHG0000004")
    scripts = [survey(FROM_1_0), good_batch(["node1"]), bad_batch("node2"), revert_batch(["node1"])]
    g = gated(world["config"], scripts, gates=CHANGE_GATES, change_provider=change_api(change_server),
              request=GateRequest(change="CHG0000004"))
    outcome = g.deploy("1.1.0")
    assert outcome.status == "rolled_back", outcome.summary
    closing = change_server.patches[-1][1]
    assert closing["close_code"] == "unsuccessful" and "ended rolled_back" in closing["work_notes"]


@pytest.mark.daemons  # the change API's stand-in, an HTTP server
def test_the_change_window_closing_mid_rollout_pauses_it(
    world: dict[str, Path], change_server: ChangeServer,
) -> None:
    change_server.add("CHG0000005", end=TUESDAY_1550 + 60)
    g = gated(world["config"], [survey(FROM_1_0), good_batch(["node1"])], gates=CHANGE_GATES,
              change_provider=change_api(change_server), request=GateRequest(change="CHG0000005"))
    g.d.recorder.after_batch(1, lambda: setattr(g.clock, "t", TUESDAY_1550 + 120))
    outcome = g.deploy("1.1.0")
    assert outcome.status == "paused", outcome.summary
    assert "change CHG0000005's planned window ended at 2026-12-08T15:51:00Z" in outcome.summary
    # Paused: the change stays open (a work note, no close code).
    assert "close_code" not in change_server.patches[-1][1]


@pytest.mark.daemons  # the change API's stand-in, an HTTP server
def test_the_change_api_credentials_are_never_shown(
    world: dict[str, Path], change_server: ChangeServer,
) -> None:
    change_server.add("CHG0000006")
    wrong = change_api(change_server, SN_PASSWORD="not-the-Pa55word")
    with pytest.raises(GateRefused) as refused:
        wrong.read("CHG0000006")
    assert refused.value.message.endswith("with HTTP 401: User Not Authenticated")
    assert "not-the-Pa55word" not in refused.value.message and USER not in refused.value.message
    assert change_server.seen_auth[-1].startswith("Basic ")  # they went in the header only
    unset = ChangeApi(ChangeApiConfig(url=change_server.url, user_env="SN_USER", password_env="SN_PASSWORD"),
                      environ={"SN_USER": USER})
    with pytest.raises(GateRefused, match=r"the change API's password is not set: \$SN_PASSWORD is empty"):
        unset.read("CHG0000006")


# -- evidence -----------------------------------------------------------------------------------


def test_every_deployment_leaves_a_signed_evidence_record_that_verifies(world: dict[str, Path]) -> None:
    people = People.make(world["root"])
    keys = generate_keypair(world["root"] / "evidence", "evidence")
    scripts = [survey(FROM_1_0), *[good_batch([n]) for n in NODES]]
    g = gated(world["config"], scripts, signer_key=keys.secret_path,
              gates={**DAY_WINDOW, "approvals": {"approvers": people.approvers()},
                     "evidence": {"key": str(keys.secret_path)}},
              clock=Clock(TUESDAY_1550 - HOUR))
    g.gates.state.request = with_approvals(
        people.requester(), people.approve("sam", g.d.env, "1.1.0", now=g.clock.t))
    outcome = g.deploy("1.1.0")
    assert outcome.status == "succeeded", outcome.summary
    row = g.d.journal.evidence(outcome.deployment_id)
    assert row is not None and row.uid == outcome.uid and row.key_id == keys.key_id_hex
    record = verify_evidence(row.record, row.signature.encode(), [load_public_key(keys.public_path)])
    d = record["deployment"]
    assert (d["uid"], d["status"], d["exit_code"], d["kind"]) == (outcome.uid, "succeeded", 0, "deploy")
    assert record["release"]["sha256"] and record["release"]["signing_key_id"]
    assert record["requested_by"]["actor"] and record["requested_by"]["requester"]["signature"]
    assert [a["approver"] for a in record["approvals"]] == ["sam"]
    assert record["window"].startswith("in the window every day 09:00-16:00 UTC")
    assert {(g_["gate"], g_["decision"]) for g_ in record["gates"] if g_["point"] == "admission"} >= {
        ("window", "continue"), ("approval", "continue"), ("freeze", "continue")}
    assert [(s["node"], s["passed"]) for s in record["checks"]["smoke"]] == [(n, True) for n in NODES]
    assert {n: v["phase"] for n, v in record["nodes"].items()} == dict.fromkeys(NODES, "done")
    assert record["where"]["nodes"] == NODES
    # Tampered with: it no longer verifies.
    tampered = row.record.replace(b'"succeeded"', b'"rolled_back"', 1)
    from deployer import VerificationError

    with pytest.raises(VerificationError, match="does not match the data"):
        verify_evidence(tampered, row.signature.encode(), [load_public_key(keys.public_path)])


def test_a_refused_deployment_leaves_evidence_too(world: dict[str, Path]) -> None:
    g = gated(world["config"], [], gates=DAY_WINDOW, clock=Clock(TUESDAY_1550 + 3 * HOUR))
    with pytest.raises(GateRefused):
        g.deploy("1.1.0")
    [record] = g.d.journal.deployments("lab")
    row = g.d.journal.evidence(record.id)
    assert row is not None and row.signature == ""  # no evidence key configured: kept unsigned
    evidence = json.loads(row.record)
    assert evidence["deployment"]["status"] == "refused" and evidence["deployment"]["exit_code"] == 14
    assert evidence["deployment"]["refused_before_lock"] is True
    assert evidence["window"].startswith("outside every release window (every day 09:00-16:00 UTC); "
                                         "the next opens")
    [window] = [x for x in evidence["gates"] if x["gate"] == "window"]
    assert window["decision"] == "stop" and "outside every release window" in window["reason"]


def test_evidence_is_published_to_the_store_and_an_auditor_verifies_it_with_one_command(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    keys = generate_keypair(world["root"] / "evidence", "evidence")
    store_url = f"file://{world['root'] / 'store'}"
    scripts = [survey(FROM_1_0), *[good_batch([n]) for n in NODES]]
    g = gated(world["config"], scripts, signer_key=keys.secret_path,
              gates={"evidence": {"key": str(keys.secret_path)}})
    assert g.gates.evidence is not None
    g.gates.evidence.store = lambda: open_store(store_url)
    outcome = g.deploy("1.1.0")
    key = record_key("lab", outcome.uid)
    published = world["root"] / "store" / key
    assert published.is_file() and published.with_name(published.name + ".minisig").is_file()
    assert g.d.journal.evidence(outcome.deployment_id).published.endswith(key)  # type: ignore[union-attr]

    def run(*argv: str) -> int:
        with pytest.raises(SystemExit) as exited:
            main(list(argv))
        return int(exited.value.code or 0)

    assert run("evidence", "verify", str(published), "--trusted-key", str(keys.public_path)) == 0
    assert f"verified: evidence of deployment {outcome.uid} (deploy 1.1.0 to lab: succeeded)" in \
        capsys.readouterr().err
    forged = world["root"] / "forged.json"
    forged.write_bytes(published.read_bytes().replace(b'"1.1.0"', b'"1.2.0"'))
    signature = published.with_name(published.name + ".minisig").read_bytes()
    forged.with_name("forged.json.minisig").write_bytes(signature)
    assert run("evidence", "verify", str(forged), "--trusted-key", str(keys.public_path)) == 5
    other = generate_keypair(world["root"] / "other", "other")
    assert run("evidence", "verify", str(published), "--trusted-key", str(other.public_path)) == 5
    capsys.readouterr()
    # The auditor's one command: what ran where, asked by whom, with which checks, what happened.
    assert run("evidence", "show", "--env", "lab", "--deployment", outcome.uid, "--config",
               str(world["config"])) == 0
    shown = capsys.readouterr().out
    assert (f"deployment {outcome.deployment_id} ({outcome.uid}): deploy hello 1.1.0 to lab — "
            "succeeded") in shown
    assert "smoke node node2: passed" in shown and f"signed: by key {keys.key_id_hex}" in shown


def test_each_deployment_has_its_own_evidence_record(world: dict[str, Path]) -> None:
    scripts = [survey(FROM_1_0), *[good_batch([n]) for n in NODES], survey(dict.fromkeys(NODES, "1.1.0"))]
    g = gated(world["config"], scripts, gates={})
    first, second = g.deploy("1.1.0"), g.deploy("1.1.0")  # the second has nothing to do
    assert (first.status, second.status) == ("succeeded", "succeeded"), second.summary
    records = [json.loads(g.d.journal.evidence(o.deployment_id).record)  # type: ignore[union-attr]
               for o in (first, second)]
    assert [r["deployment"]["uid"] for r in records] == [first.uid, second.uid]
    assert len(records[0]["checks"]["smoke"]) == 3 and records[1]["checks"]["smoke"] == []
    assert not any(x["node"] == "node1" and x["phase"] == "done" for x in records[1]["timeline"])
