"""Promotion records and the promotion gate, with real keys, real signatures and a real file
store: the gate admits a release only on the previous environment's valid record for the same
digest, and says why it refuses one that is missing, tampered with, signed by another
environment's key or made for another digest."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from artefact_helpers import run_minisign
from conftest import NODES, Deployment
from moto.server import ThreadedMotoServer

from deployer import GateRefused, VerificationError
from deployer.adapters.journal import Journal
from deployer.artefacts import generate_keypair
from deployer.config import PromotionConfig
from deployer.engine.model import DeploymentRef, Release
from deployer.engine.safepoints import Decision, SafePoint, SafePointContext, Verdict
from deployer.promotion import (
    PromotionGate,
    PromotionRecord,
    PromotionRecorder,
    open_record_store,
    publish_record,
    read_records,
    sign_record,
)
from deployer.testing import good_batch, survey

DIGEST = "a" * 64
OTHER_DIGEST = "b" * 64
UID = "01JEXS7V8T6Q3M0W2ZB1K9D4RC"


@pytest.fixture()
def path(tmp_path: Path) -> dict[str, Path]:
    """Keys of preprod and prod, and a file promotion store."""
    return {
        "preprod": generate_keypair(tmp_path / "keys", "preprod").secret_path,
        "preprod.pub": tmp_path / "keys" / "preprod.pub",
        "prod": generate_keypair(tmp_path / "keys", "prod").secret_path,
        "store": _mkdir(tmp_path / "promotions"),
    }


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _recorder(path: dict[str, Path], env: str) -> PromotionRecorder:
    return PromotionRecorder(env_name=env, app="hello", signing_key=path[env],
                             store_url=f"file://{path['store']}")


def _gate(path: dict[str, Path], journal: Journal | None = None) -> PromotionGate:
    config = PromotionConfig(after="preprod", trusted_keys=[path["preprod.pub"]],
                             signing_key=path["prod"], store=f"file://{path['store']}")
    return PromotionGate(env_name="prod", app="hello", config=config, journal=journal)


def _ask(gate: PromotionGate, version: str = "1.1.0", sha256: str = DIGEST,
         kind: str = "deploy") -> Verdict:
    release = Release(app="hello", version=version, url="file:///x", sha256=sha256, size=1)
    ctx = SafePointContext(point=SafePoint.ADMISSION, now=0.0, release=release,
                           deployment=DeploymentRef(0, "", "prod", kind, version))
    return gate.check(ctx)


def test_a_record_is_signed_canonical_json_that_minisign_itself_verifies(path: dict[str, Path]) -> None:
    recorded = _recorder(path, "preprod").record(
        version="1.1.0", sha256=DIGEST, deployment=UID, at=1_800_000_000,
        checks=["signature", "smoke", "soak"], nodes=["node1", "node2"])
    assert recorded.where == f"file://{path['store']}/hello/1.1.0/preprod/{UID}.json"
    data = (path["store"] / "hello" / "1.1.0" / "preprod" / f"{UID}.json").read_bytes()
    assert json.loads(data) == {
        "schema": 1, "app": "hello", "version": "1.1.0", "sha256": DIGEST, "environment": "preprod",
        "deployment": UID, "at": "2027-01-15T08:00:00Z", "checks": ["signature", "smoke", "soak"],
        "nodes": ["node1", "node2"]}
    assert data == recorded.record.to_json()
    checked = run_minisign("-V", "-p", str(path["preprod.pub"]),
                           "-m", str(path["store"] / "hello" / "1.1.0" / "preprod" / f"{UID}.json"))
    assert checked.returncode == 0, checked.stderr
    assert "env:preprod" in checked.stdout and f"sha256:{DIGEST}" in checked.stdout


def test_records_are_immutable(path: dict[str, Path]) -> None:
    store = open_record_store(f"file://{path['store']}")
    record = PromotionRecord(app="hello", version="1.1.0", sha256=DIGEST, environment="preprod",
                             deployment=UID, at="2026-12-07T10:00:00Z")
    signature = sign_record(record, path["preprod"])
    publish_record(store, record, signature)
    publish_record(store, record, signature)  # the same record again changes nothing
    other = PromotionRecord(app="hello", version="1.1.0", sha256=OTHER_DIGEST,
                            environment="preprod", deployment=UID, at="2026-12-07T10:00:00Z")
    with pytest.raises(Exception, match="immutable"):
        publish_record(store, other, sign_record(other, path["preprod"]))
    [found] = read_records(store, "hello", "1.1.0")
    assert found.record == record


def test_the_gate_admits_a_release_on_the_previous_environments_valid_record(path: dict[str, Path]) -> None:
    _recorder(path, "preprod").record(version="1.1.0", sha256=DIGEST, deployment=UID, at=0,
                                      checks=[], nodes=[])
    verdict = _ask(_gate(path))
    assert verdict.decision is Decision.CONTINUE
    assert "preprod passed 1.1.0" in verdict.reason and UID in verdict.reason


def test_the_gate_refuses_a_release_the_previous_environment_has_not_passed(path: dict[str, Path]) -> None:
    verdict = _ask(_gate(path))
    assert verdict.decision is Decision.STOP and isinstance(verdict.error, GateRefused)
    assert verdict.error.exit_code == 14
    assert "hello 1.1.0 (sha256 aaaaaaaaaaaa...) has no valid promotion record from preprod" in verdict.reason
    assert "none in file://" in verdict.reason
    assert "deploy it to preprod first" in (verdict.error.hint or "")


def test_the_gate_refuses_a_tampered_record(path: dict[str, Path]) -> None:
    recorded = _recorder(path, "preprod").record(version="1.1.0", sha256=DIGEST, deployment=UID,
                                                 at=0, checks=[], nodes=[])
    file = path["store"] / "hello" / "1.1.0" / "preprod" / f"{UID}.json"
    file.write_bytes(file.read_bytes().replace(b'"checks":[]', b'"checks":["soak"]'))
    verdict = _ask(_gate(path))
    assert verdict.decision is Decision.STOP
    assert "does not match the data" in verdict.reason and recorded.where in verdict.reason


def test_the_gate_refuses_a_record_signed_by_another_environments_key(path: dict[str, Path]) -> None:
    # prod's key signs a record that claims to be preprod's, in preprod's place.
    record = PromotionRecord(app="hello", version="1.1.0", sha256=DIGEST, environment="preprod",
                             deployment=UID, at="2026-12-07T10:00:00Z")
    publish_record(open_record_store(f"file://{path['store']}"), record, sign_record(record, path["prod"]))
    verdict = _ask(_gate(path))
    assert verdict.decision is Decision.STOP
    assert "which is not trusted" in verdict.reason


def test_the_gate_refuses_a_record_for_another_digest(path: dict[str, Path]) -> None:
    _recorder(path, "preprod").record(version="1.1.0", sha256=OTHER_DIGEST, deployment=UID, at=0,
                                      checks=[], nodes=[])
    verdict = _ask(_gate(path))
    assert verdict.decision is Decision.STOP
    assert "the record is for sha256 bbbbbbbbbbbb..., not this release's aaaaaaaaaaaa..." in verdict.reason


def test_the_gate_refuses_a_record_another_environment_made_even_in_the_right_place(
    path: dict[str, Path],
) -> None:
    # Signed with preprod's key, but it says it is dev's: it attests nothing about preprod.
    record = PromotionRecord(app="hello", version="1.1.0", sha256=DIGEST, environment="dev",
                             deployment=UID, at="2026-12-07T10:00:00Z")
    target = path["store"] / "hello" / "1.1.0" / "preprod"
    target.mkdir(parents=True)
    (target / f"{UID}.json").write_bytes(record.to_json())
    (target / f"{UID}.json.minisig").write_bytes(sign_record(record, path["preprod"]))
    verdict = _ask(_gate(path))
    assert verdict.decision is Decision.STOP and "the record is dev's, not preprod's" in verdict.reason


def test_a_rollback_to_a_release_this_environment_ran_needs_no_new_record(path: dict[str, Path]) -> None:
    _recorder(path, "prod").record(version="1.0.0", sha256=DIGEST, deployment=UID, at=0,
                                   checks=[], nodes=[])
    gate = _gate(path)
    assert _ask(gate, "1.0.0", kind="deploy").decision is Decision.STOP  # only a rollback
    verdict = _ask(gate, "1.0.0", kind="rollback")
    assert verdict.decision is Decision.CONTINUE and "ran here successfully" in verdict.reason
    assert _ask(gate, "1.0.0", sha256=OTHER_DIGEST, kind="rollback").decision is Decision.STOP
    assert _ask(gate, "1.1.0", kind="resume").decision is Decision.CONTINUE


def test_a_rollback_to_a_release_the_journal_saw_succeed_here_needs_no_record(
    path: dict[str, Path], tmp_path: Path,
) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    dep, _ = journal.start(env="prod", app="hello", kind="deploy", version="1.0.0", command="t",
                           details={"sha256": DIGEST})
    journal.finish_deployment(dep, "succeeded")
    assert _ask(_gate(path, journal), "1.0.0", kind="rollback").decision is Decision.CONTINUE
    assert _ask(_gate(path, journal), "1.0.0", sha256=OTHER_DIGEST, kind="rollback").decision is Decision.STOP
    # What the nodes ran before a successful deployment ran here too (a seeded first release).
    assert _ask(_gate(path, journal), "0.9.0", kind="rollback").decision is Decision.STOP
    journal.update_details(dep, from_versions={"node1": "0.9.0"})
    verdict = _ask(_gate(path, journal), "0.9.0", kind="rollback")
    assert verdict.decision is Decision.CONTINUE and "ran here before deployment" in verdict.reason


def test_a_store_that_cannot_be_read_refuses(path: dict[str, Path]) -> None:
    path["store"].rmdir()
    verdict = _ask(_gate(path))
    assert verdict.decision is Decision.STOP and isinstance(verdict.error, GateRefused)
    assert "cannot read preprod's promotion records" in verdict.reason
    assert f"{path['store']} is not a directory" in verdict.reason


def test_malformed_records_are_named(path: dict[str, Path]) -> None:
    with pytest.raises(VerificationError, match=r"x\.json: not a promotion record: schema None"):
        PromotionRecord.from_json(b'{"app": "hello"}', source="x.json")
    with pytest.raises(VerificationError, match="field 'sha256' is not a sha256 digest"):
        PromotionRecord.from_json(json.dumps({
            "schema": 1, "app": "hello", "version": "1.0.0", "sha256": "no", "environment": "p",
            "deployment": UID, "at": "t"}).encode(), source="x.json")


def test_through_the_lifecycle_the_gate_checks_the_real_releases_digest(
    deployment: Callable[..., Deployment], path: dict[str, Path],
) -> None:
    gate = _gate(path)
    d = deployment([survey(dict.fromkeys(NODES, "1.0.0")),
                    good_batch(["node1"]), good_batch(["node2"]), good_batch(["node3"])],
                   checks=[gate])
    with pytest.raises(GateRefused):
        d.deploy("1.1.0")
    assert d.runner.requests == []  # nothing changed: the refusal is only on the record
    assert [(r.status, r.details.get("refused_before_lock")) for r in d.journal.deployments("lab")] \
        == [("refused", True)]
    release = d.lifecycle.verify_release("1.1.0")
    _recorder(path, "preprod").record(version="1.1.0", sha256=release.sha256, deployment=UID, at=0,
                                      checks=[], nodes=[])
    assert d.deploy("1.1.0").status == "succeeded"


@pytest.fixture()
def s3_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A bucket in moto's S3 server on 127.0.0.1: its promotion store URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    boto3.client("s3").create_bucket(Bucket="promotions")
    try:
        yield "s3://promotions/hello-path"
    finally:
        server.stop()


@pytest.mark.daemons
def test_records_in_s3_are_immutable_and_gate_the_next_environment(
    path: dict[str, Path], s3_store: str,
) -> None:
    recorder = PromotionRecorder(env_name="preprod", app="hello", signing_key=path["preprod"],
                                 store_url=s3_store)
    recorded = recorder.record(version="1.1.0", sha256=DIGEST, deployment=UID, at=0,
                               checks=["signature"], nodes=["node1"])
    assert recorded.where == f"{s3_store}/hello/1.1.0/preprod/{UID}.json"
    store = open_record_store(s3_store)
    assert store.keys("hello/") == [f"hello/1.1.0/preprod/{UID}.json",
                                    f"hello/1.1.0/preprod/{UID}.json.minisig"]
    assert not store.create(f"hello/1.1.0/preprod/{UID}.json", b"{}")  # never overwritten
    gate = _gate(path)
    gate.config = gate.config.model_copy(update={"store": s3_store})
    assert _ask(gate).decision is Decision.CONTINUE
    assert _ask(gate, sha256=OTHER_DIGEST).decision is Decision.STOP
