"""`deployer gameday` on the lab, through the CLI: every scenario run under load on a rolling lab
ends safely; the ones that mean something for blue-green do on a blue-green lab; a game day with
its safety net broken (rollback disabled) says so with a non-zero exit; a game day stopped by
Ctrl-C undoes its faults, and one killed outright leaves them for `gameday cleanup`, which
undoes them and resumes its interrupted rehearsal. One lab per strategy, shared by its tests in
order (the first game day starts on a lab where the rehearsal release is new everywhere)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_cli import configured, deployer, fleet, read_until
from lab_specs import next_lab_spec

from deployer.lab import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def gameday(
    config: Path, *args: str, timeout: float = 500,
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`deployer gameday run ... --json`: the process and its report."""
    r = subprocess.run([sys.executable, "-m", "deployer", "gameday", "run", *args, "--env", "lab",
                        "--config", str(config), "--json"],
                       capture_output=True, text=True, timeout=timeout, check=False)
    start = r.stdout.find("{")
    assert start >= 0, r.stdout + r.stderr
    return r, json.loads(r.stdout[start:])


def verdicts(report: dict[str, Any]) -> dict[str, str]:
    return {s["name"]: s["verdict"] for s in report["scenarios"]}


def own_tables() -> list[str]:
    listed = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
    return [line.split()[-1] for line in listed.stdout.splitlines() if "deployer_gameday_" in line]


def ledger(lab: Lab) -> list[dict[str, Any]]:
    path = lab.dir / "state" / "gameday" / "faults.json"
    faults: list[dict[str, Any]] = json.loads(path.read_text())["faults"] if path.exists() else []
    return faults


def one_release(lab: Lab) -> set[tuple[str | None, str | None]]:
    return set(fleet(lab).values())


@pytest.fixture(scope="module")
def rolling_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Two nodes seeded with 1.0.0, a 4 s soak: small and quick, every failure path still there."""
    lab = Lab(tmp_path_factory.mktemp("gameday-rolling"))
    try:
        lab.up(next_lab_spec(nodes=2, seed="1.0.0", soak=4.0))
        yield lab
    finally:
        lab.down()


def test_every_scenario_ends_safely_on_a_rolling_lab_under_load(rolling_lab: Lab) -> None:
    report_dir = rolling_lab.dir / "report-all"
    started = time.monotonic()
    r, report = gameday(rolling_lab.config_path, "all", "--report", str(report_dir))
    took = time.monotonic() - started
    assert r.returncode == 0, r.stderr
    print(f"\ngame day `all` on a 2-node rolling lab: {took:.0f} s")
    assert verdicts(report) == {
        "disk-full": "safe", "artefact-tampered": "safe", "smoke-fail": "safe",
        "crash-loop": "safe", "soak-degrade": "safe", "node-unreachable": "safe",
        "lb-api-down": "safe", "kill-mid-batch": "safe", "kill-during-soak": "skipped",
        "slow-drain": "safe", "second-controller": "safe", "window-closes": "safe",
        "approval-expires": "safe", "pointer-changed": "safe",
    }, r.stderr
    ran = [s for s in report["scenarios"] if s["verdict"] == "safe"]
    for s in ran:
        assert s["left_out_after"] == [] and s["journal_consistent"] is True, s
        assert s["requests"]["sent"] > 0 and s["restored_s"] is not None, s
        assert s["fault"] and s["expected"] and s["actual"], s
    by_name = {s["name"]: s for s in report["scenarios"]}
    assert by_name["smoke-fail"]["exit_code"] == 10
    assert by_name["disk-full"]["exit_code"] == 9 and "No space left" in by_name["disk-full"]["actual"]
    assert by_name["artefact-tampered"]["exit_code"] == 5
    assert by_name["node-unreachable"]["exit_code"] in (10, 11)
    assert "unreachable" in by_name["node-unreachable"]["actual"]
    assert by_name["kill-mid-batch"]["detected_by"].startswith("`deployer resume`")
    moved = by_name["pointer-changed"]
    assert moved["actual"].startswith("look 1: deployed (exit 0)") and "look 3: in_sync" in moved["actual"]
    assert moved["detected_by"].startswith("the runner's next look") and len(moved["deployments"]) == 2
    # A gate's time running out mid-rollout: paused at the next safe point (exit 15), resumed.
    for name, gate in (("window-closes", "window"), ("approval-expires", "approval")):
        gated = by_name[name]
        assert gated["exit_code"] == 0 and len(gated["deployments"]) == 2, gated
        assert gated["actual"].startswith("paused (exit 15): ") and \
            "; then `deployer resume`: succeeded (exit 0)" in gated["actual"], gated
        assert f"paused by the {gate} gate before batch 2/2" in json.dumps(gated["timeline"]), gated
        assert gated["detected_by"] and gated["overrides"], gated
    # Every deployment a scenario ran has its evidence record in the journal, but one whose
    # process was SIGKILLed (its resume has one).
    for s in ran:
        records = s["evidence"].get("records", {})
        killed = s["deployments"][:1] if s["name"].startswith("kill-") else []
        assert [uid for uid, how in records.items() if how == "missing"] == killed, s
    slow = by_name["slow-drain"]
    assert slow["long_lived"]["failed"] >= 1 and "session(s) still open" in slow["detected_by"]
    # Nothing of the game day is left in place; the fleet serves one release.
    assert own_tables() == [] and ledger(rolling_lab) == []
    assert len(one_release(rolling_lab)) == 1
    md = (report_dir / "gameday.md").read_text()
    assert "**Result: every scenario that ran ended safely.**" in md
    assert "| node-unreachable | safe |" in md and "## 6. `node-unreachable`" in md
    assert (report_dir / "smoke-fail.events.jsonl").is_file()


def test_a_game_day_with_rollback_disabled_is_unsafe_and_fails(rolling_lab: Lab) -> None:
    # The steady state cannot come back by itself here: a short wait for it is enough.
    halt = configured(rolling_lab, "deployer-halt.yml", strategy={"on_failure": "halt"},
                      gameday={"restore_timeout": 10})
    r, report = gameday(halt, "soak-degrade", "--report", str(rolling_lab.dir / "report-halt"))
    assert r.returncode == 20, r.stderr
    assert "not safe: soak-degrade" in r.stderr
    (scenario,) = report["scenarios"]
    assert scenario["verdict"] == "unsafe"
    assert any("the fleet runs several releases" in why for why in scenario["reasons"]), scenario
    assert any("did not come back within 10 s" in why for why in scenario["reasons"]), scenario
    # Put back for the next game day (outside what was measured), said in the report.
    assert scenario["reset"] and len(one_release(rolling_lab)) == 1
    assert own_tables() == [] and ledger(rolling_lab) == []


def test_ctrl_c_undoes_the_faults_in_place(rolling_lab: Lab) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployer", "gameday", "run", "smoke-fail", "--env", "lab",
         "--config", str(rolling_lab.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONFAULTHANDLER": "1"},  # SIGABRT: every thread's stack
    )
    try:
        read_until(proc, "fault:", "/etc/hello/fault")
        fault_file = rolling_lab.dir / "nodes" / ledger(rolling_lab)[0]["record"]["node"] / "etc" / "fault"
        assert fault_file.read_text().startswith("unhealthy ")
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            out, err = proc.communicate(timeout=30)
            raise AssertionError(f"the game day did not stop within 120 s of Ctrl-C:\n{err}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "the faults it put in were undone" in err
    assert "smoke-fail" in out and "inconclusive" in out  # the summary table, on stdout
    assert not fault_file.exists() and ledger(rolling_lab) == []
    assert deployer(rolling_lab.config_path, "status", "--env", "lab").returncode == 0


def test_a_killed_game_day_leaves_its_faults_for_cleanup(rolling_lab: Lab) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "deployer", "gameday", "run", "node-unreachable", "--env", "lab",
         "--config", str(rolling_lab.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        read_until(proc, "fault:", "network cut")
        (left,) = ledger(rolling_lab)
        assert left["kind"] == "cut" and left["record"]["table"] in own_tables()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the game day, its deployment and playbook runs
        proc.wait(timeout=30)
    assert own_tables() == [left["record"]["table"]]  # nothing undid it: the process is gone
    r = subprocess.run([sys.executable, "-m", "deployer", "gameday", "cleanup", "--env", "lab",
                        "--config", str(rolling_lab.config_path)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    assert "done: node2's network cut" in r.stderr
    assert "resumed the rehearsal deployment" in r.stderr
    assert own_tables() == [] and ledger(rolling_lab) == []
    status = deployer(rolling_lab.config_path, "status", "--env", "lab")
    assert status.returncode == 0, status.stdout + status.stderr
    assert len(one_release(rolling_lab)) == 1
    # A second cleanup has nothing to do.
    again = subprocess.run([sys.executable, "-m", "deployer", "gameday", "cleanup", "--env", "lab",
                            "--config", str(rolling_lab.config_path)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert again.returncode == 0 and "no fault of a game day is in place" in again.stderr


def test_the_blue_green_failure_paths_end_safely(tmp_path_factory: pytest.TempPathFactory) -> None:
    lab = Lab(tmp_path_factory.mktemp("gameday-bluegreen"))
    try:
        lab.up(next_lab_spec(nodes=1, seed="1.0.0", soak=4.0, legs=True))
        # The window first: its point is the idle leg's release, which runs only while the
        # idle leg does not hold the new release yet (both legs start on 1.0.0).
        r, report = gameday(lab.config_path, "window-closes", "soak-degrade", "kill-during-soak",
                            "lb-api-down", "pointer-changed")
        assert r.returncode == 0, r.stderr
        assert verdicts(report) == {"window-closes": "safe", "soak-degrade": "safe",
                                    "kill-during-soak": "safe", "lb-api-down": "safe",
                                    "pointer-changed": "safe"}, r.stderr
        window = report["scenarios"][0]
        paused = "paused by the window gate before moving live traffic"
        assert paused in json.dumps(window["timeline"]), window
        soak = report["scenarios"][1]
        assert soak["exit_code"] == 10 and "switched back" in soak["actual"]
        killed = report["scenarios"][2]
        assert "switched back" in killed["actual"] and killed["exit_code"] == 0
        assert own_tables() == [] and ledger(lab) == []
    finally:
        lab.down()
