"""Game days' building blocks without a lab: where a fault goes in (points, the watch), the
faults that undo themselves from their record alone, that record (the ledger), and the bounded
load. The faults themselves run on a lab in tests/e2e/test_gameday_lab.py."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import MINIMAL_CONFIG, write_config

from deployer import DeployerError, UsageError, load_config
from deployer.agent import FilePointer, get_desired
from deployer.engine.events import NodePhaseChanged, Published, SafePointReached
from deployer.engine.model import DeploymentRef
from deployer.gameday import FaultLedger
from deployer.gameday._faults import (
    CutNode,
    LbApiGone,
    PointerMoved,
    Reach,
    TamperArtefact,
    fault_from_record,
)
from deployer.gameday._load import Load
from deployer.gameday._points import Point, Watch, reacts

ALLOWED = MINIMAL_CONFIG + "    gameday: {allowed: true, releases: [1.0.0, 1.1.0]}\n"


def wire(event: Any, seq: int = 1) -> Published:
    ref = DeploymentRef(id=1, uid="01TEST", env="lab", kind="deploy", version="1.1.0")
    return Published(seq, time.time(), ref, event)


# -- where a fault goes in ---------------------------------------------------------------------


def test_a_point_matches_its_event_as_on_the_wire() -> None:
    before_2 = Point.safe_point("before_batch", 2)
    assert before_2.matches(wire(SafePointReached(point="before_batch", index=2)).to_dict())
    assert not before_2.matches(wire(SafePointReached(point="before_batch", index=1)).to_dict())
    assert not before_2.matches(wire(SafePointReached(point="before_switch")).to_dict())
    assert before_2.describe() == "the safe point before_batch 2"
    assert Point.node_phase("draining").describe() == "the first node entering `draining`"


def test_the_watch_injects_once_at_the_nth_match_and_never_raises_into_the_deployment() -> None:
    hits: list[str] = []
    watch = Watch(Point.node_phase("deploying", nth=2), lambda e: hits.append(e["node"]))
    for node in ("node1", "node2", "node3"):
        watch.on_event(wire(NodePhaseChanged(node=node, phase="deploying")))
    assert hits == ["node2"] and watch.injected_at is not None
    assert [h.event["node"] for h in watch.events()] == ["node1", "node2", "node3"]

    def broken(event: dict[str, Any]) -> None:
        raise OSError("no route to host")

    failing = Watch(Point.node_phase("draining"), broken)
    failing.on_event(wire(NodePhaseChanged(node="node1", phase="draining")))  # does not raise
    assert failing.injected_at is None and failing.inject_error == "no route to host"


def test_an_event_published_while_the_fault_goes_in_is_heard_not_deadlocked() -> None:
    """Ctrl-C's handler runs in the injecting thread and publishes (the stop's note)."""
    injected: list[str] = []
    watch: Watch

    def inject(event: dict[str, Any]) -> None:
        injected.append(event["node"])
        watch.on_event(wire(NodePhaseChanged(node="node2", phase="draining"), seq=2))

    watch = Watch(Point.node_phase("draining"), inject)
    done = threading.Thread(
        target=lambda: watch.on_event(wire(NodePhaseChanged(node="node1", phase="draining"))),
        daemon=True)
    done.start()
    done.join(timeout=5)
    assert not done.is_alive(), "the watch deadlocked on an event heard while injecting"
    # Heard, and not injected again: the fault went in once.
    assert injected == ["node1"] and len(watch.events()) == 2 and watch.injected_at is not None


def test_what_counts_as_the_deployment_reacting() -> None:
    assert reacts({"type": "node", "phase": "reverting"})
    assert not reacts({"type": "node", "phase": "done"})
    assert reacts({"type": "soak_verdict", "outcome": "failed", "tolerated": False})
    assert not reacts({"type": "soak_verdict", "outcome": "failed", "tolerated": True})
    assert reacts({"type": "switch", "back": True}) and not reacts({"type": "switch", "back": False})
    assert reacts({"type": "check", "decision": "stop"})
    assert reacts({"type": "deployment_finished", "status": "refused"})
    assert not reacts({"type": "deployment_finished", "status": "succeeded"})


# -- faults and their record -------------------------------------------------------------------


def test_a_tampered_artefact_is_recorded_before_it_goes_in_and_put_back_from_the_record(
    tmp_path: Path,
) -> None:
    config = load_config(write_config(tmp_path, ALLOWED))
    reach = Reach(config.environment("lab"))
    tarball = tmp_path / "hello-1.1.0.tar.gz"
    tarball.write_bytes(b"published bytes")
    ledger = FaultLedger(tmp_path / "state")
    fault = TamperArtefact(str(tarball), str(ledger.dir / "hello-1.1.0.tar.gz.published"))
    entry = ledger.add("lab", fault, "artefact-tampered")
    fault.inject(reach)
    assert tarball.read_bytes() != b"published bytes" and len(tarball.read_bytes()) == 15
    # The game day dies here: the next one finds the record and undoes it, from the record alone.
    assert [e.id for e in FaultLedger(tmp_path / "state").entries("lab")] == [entry.id]
    undone, failed = FaultLedger(tmp_path / "state").undo_all(reach, "lab")
    assert failed == [] and len(undone) == 1
    assert tarball.read_bytes() == b"published bytes"
    assert ledger.entries() == []
    assert ledger.undo_all(reach, "lab") == ([], [])  # nothing left: nothing done


def test_the_load_balancers_socket_moved_aside_and_back(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, ALLOWED))
    path = tmp_path / "admin.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    try:
        fault = LbApiGone(str(path))
        fault.inject(Reach(config.environment("lab")))
        assert not path.exists() and Path(fault.aside).exists()
        again = fault_from_record(fault.kind, json.loads(json.dumps(fault.record())))
        again.undo(Reach(config.environment("lab")))
        again.undo(Reach(config.environment("lab")))  # twice: nothing more to do
        assert path.exists() and not Path(fault.aside).exists()
    finally:
        server.close()


def test_a_cut_is_undone_only_on_a_table_of_the_game_days_own() -> None:
    cut = CutNode("node2", ["127.0.9.2"])
    assert cut.table.startswith("deployer_gameday_")
    assert fault_from_record("cut", cut.record()).record() == cut.record()
    with pytest.raises(DeployerError, match="not a game day's"):
        CutNode("node2", ["127.0.9.2"], table="filter").undo(None)  # type: ignore[arg-type]


def test_pointer_moves_are_undone_newest_first_back_to_what_the_pointer_held(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, ALLOWED + "    pointer: {kind: file, path: p.json}\n"))
    reach = Reach(config.environment("lab"))
    pointer = FilePointer(tmp_path / "p.json", tmp_path / "p.status.json")
    ledger = FaultLedger(tmp_path / "state")
    # Nothing in the pointer yet; the rehearsal asks for 1.1.0, then moves it to 1.0.0.
    for version in ("1.1.0", "1.0.0"):
        fault = PointerMoved.of(reach, version, "game day")
        ledger.add("lab", fault, "pointer-changed")  # what it held is in the record already
        fault.inject(reach)
    desired = get_desired(pointer)
    assert desired is not None and desired.version == "1.0.0"
    assert desired.requester == "deployer gameday" and desired.reason == "game day"
    # The game day dies here: the next one undoes both from their records, newest first.
    undone, failed = FaultLedger(tmp_path / "state").undo_all(reach, "lab")
    assert failed == [] and len(undone) == 2
    assert get_desired(pointer) is None  # an empty value: no version, as before
    # A pointer that held a value gets it back; one written since by someone else is left alone.
    pointer.write("1.0.0")
    fault = PointerMoved.of(reach, "1.1.0", "game day")
    fault.inject(reach)
    fault_from_record("pointer", json.loads(json.dumps(fault.record()))).undo(reach)
    held = pointer.read()
    assert held is not None and held.text.strip() == "1.0.0"
    fault.inject(reach)
    pointer.write("1.2.0")
    fault.undo(reach)
    written = get_desired(pointer)
    assert written is not None and written.version == "1.2.0"


def test_one_game_day_at_a_time_per_state_directory(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from deployer.gameday import FaultLedger\n"
            "with FaultLedger(Path(sys.argv[1])).lock(): pass")
    with FaultLedger(tmp_path).lock():
        r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                           text=True, check=False)
    assert r.returncode != 0
    assert f"another game day runs on this controller (pid {os.getpid()})" in r.stderr


# -- the load ----------------------------------------------------------------------------------


@pytest.fixture()
def http_service() -> Iterator[str]:
    """A small HTTP service: / answers 200, /fail 500, /slow after 0.3 s."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/slow"):
                time.sleep(0.3)
            status = 500 if self.path == "/fail" else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.daemons
def test_the_load_keeps_to_its_rate_and_counts_failures(http_service: str) -> None:
    with Load(http_service + "/", rate=40) as load:
        time.sleep(1.0)
    sent = load.count().sent
    assert 30 <= sent <= 45, sent  # 40/s for ~1 s: never a burst above the rate
    assert load.count().failed == 0
    with Load(http_service + "/fail", rate=20) as failing:
        time.sleep(0.5)
    count = failing.count()
    assert count.sent > 0 and count.failed == count.sent and count.errors["HTTP 500"] == count.sent


@pytest.mark.daemons
def test_long_lived_requests_are_counted_apart(http_service: str) -> None:
    load = Load(http_service + "/", rate=10).start()
    try:
        threads = load.hold(2, "/slow", seconds=0.3)
        for t in threads:
            t.join(timeout=5)
    finally:
        load.stop()
    assert load.count(long_lived=True).sent == 2
    assert load.count(long_lived=False).sent == load.count().sent - 2


def test_the_load_refuses_what_is_not_an_http_url() -> None:
    with pytest.raises(UsageError, match="http:// or https://"):
        Load("ftp://example.com/", rate=1)
    with pytest.raises(UsageError, match="--rate"):
        Load("http://example.com/", rate=0)


# -- a gate's time running out -------------------------------------------------------------------


def test_the_rehearsals_window_is_open_now_and_the_window_gate_closes_at_its_end() -> None:
    from deployer.config import GatesConfig
    from deployer.gameday._governance import open_window
    from deployer.gates.calendar import Calendar

    now = time.time()
    config, closes = open_window(GatesConfig(windows_apply_to=["rollback"]), now)
    calendar = Calendar.of(config)
    assert calendar.window_at(now) is not None and calendar.window_at(closes - 1) is not None
    assert calendar.window_at(closes + 1) is None
    assert 58 * 60 <= closes - now <= 59 * 60  # an hour from the minute before the minute now
    assert "deploy" in config.windows_apply_to and config.freezes == []


def test_the_clock_fault_moves_only_the_gates_clock_and_is_undone_from_its_record() -> None:
    from deployer.gameday._faults import ClockMoved, fault_from_record
    from deployer.gameday._governance import GatesClock

    clock = GatesClock()
    later = time.time() + 3600
    fault = ClockMoved(later, "the end of the release window", clock)
    fault.inject(None)  # type: ignore[arg-type]  # it reaches no host
    assert abs(clock() - later) < 5 and abs(time.time() - later) > 3000
    fault.undo(None)  # type: ignore[arg-type]
    assert abs(clock() - time.time()) < 1
    # Read back by a later game day: the clock lived in the process that died; nothing to undo.
    again = fault_from_record("clock", fault.record())
    again.undo(None)  # type: ignore[arg-type]
    with pytest.raises(DeployerError, match="no clock to move"):
        again.inject(None)  # type: ignore[arg-type]


def test_the_game_days_approval_counts_until_it_expires_and_four_eyes_holds(tmp_path: Path) -> None:
    from deployer.config import GatesConfig
    from deployer.gameday._governance import GameDayKeys, with_approvals
    from deployer.gates.approvals import Approvers, valid_approvals

    keys = GameDayKeys(tmp_path / "keys")
    config = with_approvals(GatesConfig(), keys)
    assert config.approvals is not None and config.windows == []
    now = time.time()
    approval = keys.approve(app="hello", version="1.1.0", sha256="ab" * 32, environment="lab",
                            expires=now + 600, now=now)
    request = keys.request((approval,))
    ask = {"app": "hello", "version": "1.1.0", "sha256": "ab" * 32, "environment": "lab",
           "change": None}
    approvers = Approvers.of(config.approvals)
    good, _ = valid_approvals(request.approvals, approvers, request.requester, now=now, **ask)
    assert [a.name for _, a in good] == ["game day approver"]
    late, why = valid_approvals(request.approvals, approvers, request.requester, now=now + 601, **ask)
    assert late == [] and any("expired" in w for w in why)
    # The same keys on the next game day (made once, kept).
    assert GameDayKeys(tmp_path / "keys").request(()).requester == request.requester
