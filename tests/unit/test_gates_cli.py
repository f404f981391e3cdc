"""The gates on the command line: `approval sign`, `freeze` and `unfreeze`, a refusal's exit
code and message, bad gate options; the world's config with a `gates:` section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from deployer import ConfigError, VerificationError, load_config
from deployer.adapters.journal import Journal
from deployer.artefacts import generate_keypair
from deployer.cli.main import main


def run(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return int(exited.value.code or 0)


def with_gates(world: dict[str, Path], gates: dict[str, object]) -> Path:
    data = yaml.safe_load(world["config"].read_text())
    data["environments"]["lab"]["gates"] = gates
    path = world["root"] / "gated.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_approval_sign_writes_an_approval_of_the_verified_release(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    sam = generate_keypair(world["root"] / "people", "sam")
    ci = generate_keypair(world["root"] / "people", "ci")
    out = world["root"] / "sam.approval"
    assert run(["approval", "sign", "--env", "lab", "--version", "1.1.0", "--key", str(sam.secret_path),
                "--expires", "8h", "--change", "CHG0000001", "--requester", str(ci.public_path),
                "--out", str(out), "--config", str(world["config"])]) == 0
    document = json.loads(out.read_text())
    approval = document["approval"]
    assert (approval["app"], approval["version"], approval["environment"], approval["change"]) == (
        "hello", "1.1.0", "lab", "CHG0000001")
    assert len(approval["sha256"]) == 64 and approval["requester"] == ci.key_id_hex
    assert document["signature"].startswith("untrusted comment:")
    assert f"signed by key {sam.key_id_hex}" in capsys.readouterr().err
    # A release the store does not hold is not approved.
    assert run(["approval", "sign", "--env", "lab", "--version", "9.9.9", "--key", str(sam.secret_path),
                "--expires", "8h", "--out", str(out), "--config", str(world["config"])]) == 4


def test_a_frozen_environment_refuses_deploy_with_exit_14_and_unfreeze_lifts_it(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    config = str(world["config"])
    assert run(["freeze", "--env", "lab", "--reason", "DR exercise", "--config", config]) == 0
    assert "lab is frozen by " in capsys.readouterr().err
    assert run(["deploy", "--env", "lab", "--version", "1.1.0", "--config", config]) == 14
    err = capsys.readouterr().err
    assert "deployer: error: refused by the freeze gate: environment 'lab' is frozen by " in err
    assert ": DR exercise; nothing was changed" in err and "deployer unfreeze --env lab" in err
    assert run(["unfreeze", "--env", "lab", "--reason", "exercise over", "--config", config]) == 0
    assert "lifted the freeze" in capsys.readouterr().err
    journal = Journal(world["root"] / "state" / "journal.sqlite", read_only=True)
    kinds = [(r.kind, r.status) for r in journal.deployments("lab")]
    assert kinds == [("unfreeze", "succeeded"), ("deploy", "refused"), ("freeze", "succeeded")]
    # The freeze lives beside the lock, and its log says who froze and lifted it.
    log = (world["root"] / "state" / "locks" / "lab.log").read_text().splitlines()
    assert [json.loads(line)["event"] for line in log] == ["froze", "unfroze"]


def test_outside_a_window_deploy_exits_14_and_plan_would_say_so(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    # A window that is never open now: one minute, a year away is not expressible; use a window
    # on a day that is not today.
    import datetime as dt

    tomorrow = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[(dt.datetime.now(dt.UTC).weekday() + 2) % 7]
    config = with_gates(world, {"windows": [{"days": [tomorrow], "from": "00:00", "to": "00:01"}]})
    assert run(["deploy", "--env", "lab", "--version", "1.1.0", "--config", str(config)]) == 14
    err = capsys.readouterr().err
    assert "refused by the window gate: outside every release window of 'lab'" in err
    assert "the next opens " in err


@pytest.mark.parametrize(("argv", "says"), [
    (["--reason", "x"], "--reason goes with --break-glass"),
    (["--break-glass"], "--break-glass needs --reason TEXT"),
    (["--change", "CHG 1; DROP"], "--change: 'CHG 1; DROP' is not a change number"),
    (["--approval", "/nonexistent.approval"], "--approval: /nonexistent.approval does not exist"),
    (["--high-risk", " "], "--high-risk needs its reason"),
])
def test_bad_gate_options_are_refused_with_exit_2(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str], argv: list[str], says: str,
) -> None:
    assert run(["deploy", "--env", "lab", "--version", "1.1.0", *argv, "--config", str(world["config"])]) == 2
    err = capsys.readouterr().err
    assert says in err and "Traceback" not in err


def test_a_break_glass_deployment_is_on_the_record_as_such_with_its_reason_and_change(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    olu = generate_keypair(world["root"] / "people", "olu")
    ci = generate_keypair(world["root"] / "people", "ci")
    config = with_gates(world, {
        "approvals": {"approvers": [{"name": "olu", "key": str(olu.public_path), "roles": ["break_glass"]}]},
        "decision_record": {"id": "DR-1", "ref": "docs/dr-1.md"}})
    assert run(["deploy", "--env", "lab", "--version", "1.1.0", "--break-glass", "--reason", "INC-7",
                "--change", "CHG0000009", "--requester-key", str(ci.secret_path),
                "--config", str(config)]) == 14
    assert "refused by the break_glass gate" in capsys.readouterr().err
    [record] = Journal(world["root"] / "state" / "journal.sqlite", read_only=True).deployments("lab")
    assert record.details["break_glass"] == {"reason": "INC-7"}
    assert record.details["change"] == "CHG0000009"
    assert record.details["decision_record"] == {"id": "DR-1", "ref": "docs/dr-1.md"}


def test_pointer_set_carries_the_request_signed_by_the_requesters_key(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str],
) -> None:
    from deployer.agent._pointer import Desired, PointerValue
    from deployer.artefacts import load_public_key
    from deployer.gates.approvals import verify_pointer_request

    ci = generate_keypair(world["root"] / "people", "ci")
    sam = generate_keypair(world["root"] / "people", "sam")
    pointer = world["root"] / "pointer" / "lab.json"
    config = with_gates(world, {"approvals": {
        "approvers": [{"name": "sam", "key": str(sam.public_path), "roles": ["change"]}],
        "requesters": [{"name": "ci", "key": str(ci.public_path)}]}})
    data = yaml.safe_load(config.read_text())
    data["environments"]["lab"]["pointer"] = {"kind": "file", "path": str(pointer),
                                              "require_signed": True}
    config.write_text(yaml.safe_dump(data))
    approval = world["root"] / "sam.approval"
    assert run(["approval", "sign", "--env", "lab", "--version", "1.1.0", "--key", str(sam.secret_path),
                "--expires", "8h", "--change", "CHG0000001", "--out", str(approval),
                "--config", str(config)]) == 0
    # pointer.require_signed: an unsigned request is not written.
    assert run(["pointer", "set", "--env", "lab", "--version", "1.1.0", "--reason", "release",
                "--config", str(config)]) == 2
    assert "requires a signed request (pointer.require_signed): give --requester-key" in \
        capsys.readouterr().err
    assert not pointer.exists()
    assert run(["pointer", "set", "--env", "lab", "--version", "1.1.0", "--reason", "release",
                "--requester-key", str(ci.secret_path), "--change", "CHG0000001",
                "--approval", str(approval), "--config", str(config)]) == 0
    desired = Desired.parse(PointerValue(pointer.read_text(), "1"), where=str(pointer))
    assert (desired.version, desired.requester, desired.change) == ("1.1.0", "ci", "CHG0000001")
    assert desired.approvals[0]["approval"]["change"] == "CHG0000001"
    assert desired.signed is not None
    requester = verify_pointer_request(desired.signed, [("ci", load_public_key(ci.public_path))])
    assert requester.name == "ci" and requester.request["environment"] == "lab"
    assert len(requester.request["sha256"]) == 64 and requester.request["change"] == "CHG0000001"
    # Altered after signing (another version): the signature no longer verifies.
    tampered = dict(desired.signed, request={**desired.signed["request"], "version": "1.2.0"})
    with pytest.raises(VerificationError, match="does not match the data"):
        verify_pointer_request(tampered, [("ci", load_public_key(ci.public_path))])


def test_pointer_require_signed_needs_the_requesters_keys(world: dict[str, Path]) -> None:
    config = with_gates(world, {})
    data = yaml.safe_load(config.read_text())
    data["environments"]["lab"]["pointer"] = {"kind": "file", "path": "p.json",
                                              "require_signed": True}
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"pointer\.require_signed needs the requesters' public keys"):
        load_config(config)
