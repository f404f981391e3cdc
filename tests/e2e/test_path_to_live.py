"""The path to live on a lab of two environments (`lab up --envs preprod,prod --ssm`): each
has its own fleet, config, runner and SSM pointer (in moto's server on loopback), and they share
only the artefact store and the promotion store. Prod's runner refuses a release preprod has
not passed, and a record that is missing, tampered with, signed by another environment's key or
made for another digest (exit 14, nothing changed); it deploys one preprod passed. A deployment
by hand is refused by the same gate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from lab_cli import deployer
from lab_specs import next_lab_spec

from deployer.adapters.journal import Journal
from deployer.lab import PathLab, PathSpec
from deployer.lab._procs import port_is_free
from deployer.promotion import PromotionRecord, sign_record
from deployer.promotion._store import open_record_store

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENVS = ("preprod", "prod")


def _free_nets(count: int) -> str:
    """The first of ``count`` consecutive loopback networks nobody uses."""
    for _ in range(40):
        net = next_lab_spec().net
        first = int(net.rsplit(".", 1)[1])
        if first + count <= 254 and all(port_is_free(f"127.0.{first + i}.1", 22) for i in range(count)):
            return net
    raise RuntimeError("no free loopback networks for a path-to-live lab")


@pytest.fixture()
def path_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PathLab]:
    lab = PathLab(tmp_path_factory.mktemp("path"))
    try:
        lab.up(PathSpec(envs=ENVS, nodes=1, net=_free_nets(len(ENVS)), seed="1.0.0", soak=0, ssm=True))
        yield lab
    finally:
        lab.down()
        assert not lab.dir.exists()


def cli_json(*args: str) -> Any:
    """A command that takes no config (lab, promotion show), its JSON output."""
    return json.loads(subprocess.run([sys.executable, "-m", "deployer", *args], capture_output=True,
                                     text=True, check=True, timeout=60).stdout)


def run(lab: PathLab, env: str, *args: str) -> Any:
    return deployer(lab.config_path(env), *args)


def once(lab: PathLab, env: str) -> tuple[int, list[dict[str, Any]]]:
    r = run(lab, env, "agent", "--env", env, "--once")
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def status(lab: PathLab, env: str) -> dict[str, Any]:
    r = run(lab, env, "pointer", "get", "--env", env, "--json")
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)["status"]
    return data


def set_pointer(lab: PathLab, env: str, version: str) -> None:
    r = run(lab, env, "pointer", "set", "--env", env, "--version", version, "--reason", "e2e")
    assert r.returncode == 0, r.stderr


def versions(lab: PathLab, env: str) -> set[str | None]:
    return {n.app_version for n in lab.env_lab(env).status().nodes}


def refused_by_prod(lab: PathLab, *words: str) -> None:
    code, lines = once(lab, "prod")
    assert code == 14, lines
    reason = status(lab, "prod")["reason"]
    assert status(lab, "prod")["decision"] == "refused"
    for word in words:
        assert word in reason, reason
    # Nothing changed: no lock taken, no node touched; the refusal is on the record (the first
    # time this request is refused: the runner asks again later without adding a record).
    assert all(e["locked"] is False for e in lines if e["type"] == "deployment_started")
    assert all(e["status"] == "refused" for e in lines if e["type"] == "deployment_finished")
    assert "node" not in [e["type"] for e in lines]
    assert versions(lab, "prod") == {"1.0.0"}


def test_prod_deploys_only_what_preprod_passed(path_lab: PathLab) -> None:
    lab = path_lab
    shape = cli_json("lab", "status", "--dir", str(lab.dir), "--json")
    assert list(shape["envs"]) == ["preprod", "prod"] and shape["ssm_up"]
    assert shape["envs"]["preprod"]["frontend_url"] != shape["envs"]["prod"]["frontend_url"]
    # Each runner's config holds its own environment only, and of preprod prod holds a key.
    for env in ENVS:
        assert list(yaml.safe_load(lab.config_path(env).read_text())["environments"]) == [env]
    store = open_record_store(f"file://{lab.promotion_dir}")

    # preprod's runner acts on its SSM pointer and records the release as passed.
    set_pointer(lab, "preprod", "1.1.0")
    code, lines = once(lab, "preprod")
    assert code == 0 and status(lab, "preprod")["decision"] == "deployed"
    [recorded] = [e for e in lines if e["type"] == "promotion_recorded"]
    assert recorded["ok"] and "/hello/1.1.0/preprod/" in recorded["where"]
    assert versions(lab, "preprod") == {"1.1.0"}
    # The pointer is an SSM parameter a requester writes: a plain version there works too.
    ssm = boto3.client("ssm", endpoint_url=json.loads(Path(lab.state_path).read_text())["ssm_endpoint"],
                       region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    assert json.loads(ssm.get_parameter(Name="/deployer/preprod/version")["Parameter"]["Value"])[
        "version"] == "1.1.0"
    assert json.loads(ssm.get_parameter(Name="/deployer/preprod/status")["Parameter"]["Value"])[
        "decision"] == "deployed"

    # prod: a release preprod has not passed is refused, before anything (no lock taken; the
    # refusal is on the record).
    ssm.put_parameter(Name="/deployer/prod/version", Value="1.3.0-errors", Type="String",
                      Overwrite=True)
    refused_by_prod(lab, "no valid promotion record from preprod", "none in")
    [refused] = Journal(lab.env_lab("prod").dir / "state" / "journal.sqlite").deployments("prod")
    assert (refused.status, refused.details["refused_before_lock"]) == ("refused", True)
    by_hand = run(lab, "prod", "deploy", "--env", "prod", "--version", "1.3.0-errors")
    assert by_hand.returncode == 14 and "no valid promotion record from preprod" in by_hand.stderr
    plan = run(lab, "prod", "plan", "--env", "prod", "--version", "1.3.0-errors")
    assert plan.returncode == 14

    # Records that do not vouch for 1.3.0-errors, each in preprod's place.
    good = next(k for k in store.keys("hello/1.1.0/preprod/") if k.endswith(".json"))
    good_record = PromotionRecord.from_json(store.read(good) or b"", source=good)
    errors_sha = json.loads((lab.env_lab("preprod").dir / "store" / "hello" / "1.3.0-errors" /
                             "manifest.json").read_text())["sha256"]
    forged_dir = lab.promotion_dir / "hello" / "1.3.0-errors" / "preprod"
    forged_dir.mkdir(parents=True)
    uid = good_record.deployment

    def place(record: PromotionRecord, signature: bytes) -> None:
        shutil.rmtree(forged_dir)
        forged_dir.mkdir()
        (forged_dir / f"{uid}.json").write_bytes(record.to_json())
        (forged_dir / f"{uid}.json.minisig").write_bytes(signature)

    errors_record = PromotionRecord(app="hello", version="1.3.0-errors", sha256=errors_sha,
                                    environment="preprod", deployment=uid, at=good_record.at)
    preprod_key = lab.env_lab("preprod").keys_dir / "promotion.key"
    prod_key = lab.env_lab("prod").keys_dir / "promotion.key"
    # Tampered: preprod's real record of 1.1.0, edited to name 1.3.0-errors.
    place(errors_record, (store.read(good + ".minisig") or b""))
    refused_by_prod(lab, "does not match the data")
    # Signed by another environment's key (prod's own), claiming to be preprod's.
    place(errors_record, sign_record(errors_record, prod_key))
    refused_by_prod(lab, "which is not trusted")
    # Signed by preprod, but for another digest (1.1.0's).
    other = PromotionRecord(app="hello", version="1.3.0-errors", sha256=good_record.sha256,
                            environment="preprod", deployment=uid, at=good_record.at)
    place(other, sign_record(other, preprod_key))
    refused_by_prod(lab, "not this release's")
    shutil.rmtree(forged_dir)

    # A release preprod passed: deployed, and recorded as prod's in turn.
    set_pointer(lab, "prod", "1.1.0")
    code, lines = once(lab, "prod")
    assert code == 0 and status(lab, "prod")["decision"] == "deployed"
    assert versions(lab, "prod") == {"1.1.0"}
    gate = [e for e in lines if e["type"] == "check" and e["point"] == "admission"
            and e["check"] == "promotion"]
    assert gate and gate[0]["decision"] == "continue" and "preprod passed 1.1.0" in gate[0]["reason"]
    shown = cli_json("promotion", "show", "--store", f"file://{lab.promotion_dir}", "--app",
                     "hello", "--version", "1.1.0", "--json")
    assert [r["environment"] for r in shown["records"]] == ["preprod", "prod"]
    # Every check it passed: the signature, the gates at admission (the governance gates, then
    # the promotion gate), the smoke checks.
    assert shown["records"][1]["checks"] == [
        "signature", "freeze", "decision_record", "requester", "break_glass", "high_risk",
        "window", "calendar_freeze", "promotion", "smoke"]
    # Rolling prod back to the release it ran before needs no record from preprod.
    set_pointer(lab, "prod", "1.0.0")
    code, _ = once(lab, "prod")
    assert code == 0 and versions(lab, "prod") == {"1.0.0"}
    latest = Journal(lab.env_lab("prod").dir / "state" / "journal.sqlite").deployments("prod")[0]
    assert (latest.kind, latest.version, latest.status) == ("rollback", "1.0.0", "succeeded")
