"""The deployment lock: its rules with the in-memory lock host (the seam), the real lock
program run on this machine against a temporary directory, and the lease kept by a holder.
Two "controllers" are two lock clients with different identities. On the lab, across two
controllers and the production topology's load-balancer host: tests/e2e/test_lock_across_controllers.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer import LockError, LockHeldError, LockLostError
from deployer.adapters.freeze import EnvironmentFreeze
from deployer.adapters.journal import Journal
from deployer.adapters.lock import (
    EnvironmentLock,
    Lease,
    LockRecord,
    ProgramHost,
    state_dir_lock,
)
from deployer.adapters.process import Identity, pid_start, process_alive
from deployer.testing import FakeLockHost

HERE = socket.gethostname()


def other(n: int, host: str = "ci-runner-2") -> Identity:
    """A controller on another host (its process cannot be seen from here)."""
    return Identity(owner=f"ci@{host}", host=host, pid=4000 + n, pid_start="777")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process of this host, to stand for a controller running here."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


# -- the rules, on the fake lock host ------------------------------------------------------------


def test_a_second_controller_is_refused_with_the_holder_named() -> None:
    host = FakeLockHost()
    first = EnvironmentLock(host, "prod", lease=60, me=other(1))
    second = EnvironmentLock(host, "prod", lease=60, me=other(2, "ci-runner-3"))
    assert first.acquire() is None
    first.renew(deployment=42)
    with pytest.raises(LockHeldError) as refused:
        second.acquire()
    text = str(refused.value)
    for part in ("deployment 42", "ci@ci-runner-2", "host ci-runner-2", "pid 4001", "since ",
                 "fake:/locks/prod.json"):
        assert part in text, text
    assert "--force --reason" in (refused.value.hint or "")
    # Another environment is another lock.
    assert EnvironmentLock(host, "staging", me=other(2)).acquire() is None


def test_an_expired_lease_is_taken_over_and_its_holder_learns_it_lost_the_lock() -> None:
    host = FakeLockHost()
    first = EnvironmentLock(host, "prod", lease=60, me=other(1))
    second = EnvironmentLock(host, "prod", lease=60, me=other(2))
    first.acquire()
    host.now += 59
    with pytest.raises(LockHeldError):
        second.acquire()
    host.now += 2  # 61 s after the last renewal
    taken = second.acquire()
    assert taken is not None and taken.pid == 4001
    assert host.log[-1]["event"] == "took over (its lease had expired)"
    with pytest.raises(LockLostError, match="pid 4002"):
        first.renew()
    # Its release does not touch the new holder's lock.
    assert first.release() is False
    view = second.show()
    assert view.record is not None and view.record.pid == 4002 and not view.expired


def test_renewing_keeps_the_lock_past_its_first_lease() -> None:
    host = FakeLockHost()
    first = EnvironmentLock(host, "prod", lease=60, me=other(1))
    second = EnvironmentLock(host, "prod", lease=60, me=other(2))
    first.acquire()
    for _ in range(5):
        host.now += 40
        first.renew()
    with pytest.raises(LockHeldError):
        second.acquire()


def test_release_by_anyone_but_the_holder_does_nothing() -> None:
    host = FakeLockHost()
    holder = EnvironmentLock(host, "prod", me=other(1))
    holder.acquire()
    same_pid_elsewhere = Identity(owner="ci@b", host="b", pid=4001, pid_start="777")
    same_pid_other_start = Identity(owner="ci@ci-runner-2", host="ci-runner-2", pid=4001,
                                    pid_start="778")
    for me in (other(2), same_pid_elsewhere, same_pid_other_start):
        assert EnvironmentLock(host, "prod", me=me).release() is False
        assert host.records["prod"]["pid"] == 4001
    assert holder.release() is True
    assert "prod" not in host.records


def test_unlock_refuses_a_live_holder_and_force_records_the_reason() -> None:
    host = FakeLockHost()
    EnvironmentLock(host, "prod", lease=60, me=other(1)).acquire()
    operator = EnvironmentLock(host, "prod", me=other(9, "laptop"))
    with pytest.raises(LockHeldError, match="has not expired"):
        operator.remove(by="alice@laptop")
    assert "prod" in host.records
    removed = operator.remove(by="alice@laptop", reason="runner VM deleted", force=True)
    assert removed is not None and removed.pid == 4001
    assert "prod" not in host.records
    assert host.log[-1]["event"] == "forced"
    assert (host.log[-1]["by"], host.log[-1]["reason"]) == ("alice@laptop", "runner VM deleted")
    assert operator.remove(by="alice@laptop") is None  # nothing left to remove


def test_unlock_removes_an_expired_lock_without_force() -> None:
    host = FakeLockHost()
    EnvironmentLock(host, "prod", lease=60, me=other(1)).acquire()
    host.now += 61
    removed = EnvironmentLock(host, "prod", me=other(9)).remove(by="alice@laptop")
    assert removed is not None and host.log[-1]["event"] == "removed (its lease had expired)"


def test_a_holder_on_this_host_whose_pid_was_reused_is_gone(sleeper: subprocess.Popen[bytes]) -> None:
    host = FakeLockHost()
    live = Identity.of(sleeper.pid)
    reused = Identity(owner=live.owner, host=HERE, pid=sleeper.pid, pid_start=str(int(live.pid_start) + 1))
    EnvironmentLock(host, "prod", lease=600, me=live).acquire()
    with pytest.raises(LockHeldError, match=f"pid {sleeper.pid}"):
        EnvironmentLock(host, "prod", lease=600).acquire()  # it runs: refused
    host.records.clear()
    EnvironmentLock(host, "prod", lease=600, me=reused).acquire()
    assert process_alive(sleeper.pid) and not process_alive(sleeper.pid, reused.pid_start)
    taken = EnvironmentLock(host, "prod", lease=600).acquire()  # a live PID, another start
    assert taken is not None and taken.pid_start == reused.pid_start
    assert host.log[-1]["event"] == "took over (its process is gone from its host)"
    assert host.records["prod"]["pid"] == os.getpid()


# -- the lease a holder keeps ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_renewal_that_finds_the_lock_taken_over_stops_the_holder() -> None:
    host = FakeLockHost()
    mine = EnvironmentLock(host, "prod", lease=30, me=other(1))
    mine.acquire()
    lease = Lease(mine, clock=Clock())
    lease.start(acquired=100.0)
    lease.stop()  # renewals by hand from here on
    lease.attach(7)
    lease.renew_once()
    assert host.records["prod"]["deployment"] == 7
    lease.check()  # still ours
    EnvironmentLock(host, "prod", me=other(2)).remove(by="bob@x", reason="stuck", force=True)
    EnvironmentLock(host, "prod", me=other(2)).acquire()
    lease.renew_once()
    with pytest.raises(LockLostError, match="holds it now") as lost:
        lease.check()
    assert "deployer status --env prod" in (lost.value.hint or "")


def test_an_unreachable_lock_host_is_tolerated_for_less_than_the_lease() -> None:
    host = FakeLockHost()
    mine = EnvironmentLock(host, "prod", lease=30, me=other(1))
    mine.acquire()
    clock = Clock()
    lease = Lease(mine, clock=clock)
    lease.start(acquired=clock.t)
    lease.stop()
    host.unreachable = True
    clock.t += 25
    lease.renew_once()
    lease.check()  # 25 s without a renewal: the lease still holds
    assert "connection timed out" in lease.last_error
    host.unreachable = False
    lease.renew_once()
    clock.t += 29
    lease.check()  # renewed at 125: 29 s later still inside
    host.unreachable = True
    clock.t += 2
    with pytest.raises(LockLostError, match="longer than its lease"):
        lease.check()


def test_the_lease_renews_in_the_background() -> None:
    host = FakeLockHost()
    mine = EnvironmentLock(host, "prod", lease=30, me=other(1))
    mine.acquire()
    lease = Lease(mine, interval=0.01)
    renewed = threading.Event()
    real_call = host.call

    def call(request: dict[str, object]) -> dict[str, object]:
        answer = real_call(request)  # type: ignore[arg-type]
        if request["op"] == "renew":
            renewed.set()
        return answer

    host.call = call  # type: ignore[method-assign]
    lease.start(acquired=0.0)
    try:
        assert renewed.wait(timeout=30)
    finally:
        lease.stop()
    lease.check()


# -- the real lock program, on this machine ----------------------------------------------------


def program(tmp_path: Path) -> ProgramHost:
    """The lock program as it runs on a lock host: ``python3 -``, fed the program's text."""
    return ProgramHost(str(tmp_path / "locks"), spawn=True)


def lock_file(tmp_path: Path, env: str = "prod") -> Path:
    return tmp_path / "locks" / f"{env}.json"


def test_the_program_keeps_one_holder_and_names_it(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    a = EnvironmentLock(program(tmp_path), "prod", lease=120, me=Identity.of(sleeper.pid))
    b = EnvironmentLock(program(tmp_path), "prod", lease=120)
    assert a.acquire() is None
    a.renew(deployment=3)
    record = json.loads(lock_file(tmp_path).read_text())
    assert {k: record[k] for k in ("env", "deployment", "host", "pid", "pid_start")} == {
        "env": "prod", "deployment": 3, "host": HERE, "pid": sleeper.pid,
        "pid_start": pid_start(sleeper.pid)}
    assert record["owner"].endswith(f"@{HERE}") and record["expires_at"] > record["acquired_at"]
    with pytest.raises(LockHeldError, match=f"deployment 3 .*pid {sleeper.pid}"):
        b.acquire()
    assert b.release() is False and lock_file(tmp_path).exists()
    assert a.release() is True and not lock_file(tmp_path).exists()
    assert b.acquire() is None


def test_the_program_takes_over_a_live_pid_with_another_start_time(tmp_path: Path) -> None:
    """A reused PID: the record names this very process (alive) but another start time."""
    me = Identity.current()
    lock_file(tmp_path).parent.mkdir(parents=True)
    stale = {"env": "prod", "deployment": 9, "owner": me.owner, "host": HERE, "pid": me.pid,
             "pid_start": "1", "acquired_at": 1.0, "expires_at": 4e9, "renewed_at": 1.0}
    lock_file(tmp_path).write_text(json.dumps(stale))
    lock = EnvironmentLock(program(tmp_path), "prod", lease=120)
    view = lock.show()
    assert view.stale and not view.expired
    taken = lock.acquire()
    assert taken is not None and (taken.deployment, taken.pid_start) == (9, "1")
    assert json.loads(lock_file(tmp_path).read_text())["pid_start"] == me.pid_start
    log = [json.loads(line) for line in (tmp_path / "locks" / "prod.log").read_text().splitlines()]
    assert log[-1]["event"] == "took over (its process is gone from its host)"
    assert log[-1]["record"]["pid_start"] == "1"


def test_the_program_takes_over_an_expired_lease_of_another_host(tmp_path: Path) -> None:
    lock_file(tmp_path).parent.mkdir(parents=True)
    expired = {"env": "prod", "deployment": 5, "owner": "ci@far", "host": "far", "pid": 1,
               "pid_start": "1", "acquired_at": 1.0, "expires_at": 2.0, "renewed_at": 1.0}
    lock_file(tmp_path).write_text(json.dumps(expired))
    live = {**expired, "expires_at": 4e9}
    lock = EnvironmentLock(program(tmp_path), "prod")
    taken = lock.acquire()
    assert taken is not None and taken.host == "far"
    lock.release()
    lock_file(tmp_path).write_text(json.dumps(live))  # another host's live lease: not ours to judge
    with pytest.raises(LockHeldError, match="host far"):
        lock.acquire()


def test_an_unreadable_lock_file_is_taken_over_and_kept_in_the_log(tmp_path: Path) -> None:
    lock_file(tmp_path).parent.mkdir(parents=True)
    lock_file(tmp_path).write_text("{half a rec")
    lock = EnvironmentLock(program(tmp_path), "prod")
    assert lock.show().expired
    assert lock.acquire() is not None
    log = json.loads((tmp_path / "locks" / "prod.log").read_text().splitlines()[-1])
    assert log["record"]["unreadable"] == "{half a rec"


def test_the_program_tells_a_holder_that_was_taken_over(tmp_path: Path) -> None:
    first = EnvironmentLock(program(tmp_path), "prod", me=other(1))
    second = EnvironmentLock(program(tmp_path), "prod", me=other(2, "ci-runner-3"))
    first.acquire()
    removed = second.remove(by="alice@laptop", reason="runner lost", force=True)
    assert removed is not None and removed.identity == other(1)
    second.acquire()
    with pytest.raises(LockLostError, match="ci-runner-3"):
        first.renew()
    log = (tmp_path / "locks" / "prod.log").read_text().splitlines()
    assert json.loads(log[-1])["reason"] == "runner lost"


def test_concurrent_acquires_have_exactly_one_winner(tmp_path: Path) -> None:
    clients = [EnvironmentLock(program(tmp_path), "prod", me=other(i)) for i in range(6)]
    results: list[str] = []
    gate = threading.Barrier(len(clients))

    def race(lock: EnvironmentLock) -> None:
        gate.wait()
        try:
            lock.acquire()
            results.append("won")
        except LockHeldError:
            results.append("refused")

    threads = [threading.Thread(target=race, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["refused"] * 5 + ["won"]


def test_a_lock_directory_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    lock = EnvironmentLock(ProgramHost(str(tmp_path / "file" / "locks")), "prod")
    with pytest.raises(LockError, match="cannot create the lock directory") as failed:
        lock.acquire()
    assert "lock.dir" in (failed.value.hint or "")


def test_an_unreachable_lock_host_is_a_lock_error() -> None:
    from deployer.adapters.ssh import SshTarget

    target = SshTarget(host="lb9", address="127.0.0.1", port=1, connect_timeout=2)
    lock = EnvironmentLock(ProgramHost("/var/lib/deployer/locks", target=target, name="lb9"), "prod")
    with pytest.raises(LockError, match="cannot reach the lock at lb9:/var/lib/deployer/locks"):
        lock.show()


def test_the_state_dir_lock_lives_in_the_state_directory_and_meets_the_program(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    """On this machine the program's code runs in-process: same files, same flock, same rules
    as the program started on its own."""
    lock = state_dir_lock(tmp_path, "prod", lease=30)
    assert lock.where == f"{tmp_path / 'locks'}/prod.json" and lock.lease == 30
    other_process = EnvironmentLock(program(tmp_path), "prod", me=Identity.of(sleeper.pid))
    other_process.acquire()
    with pytest.raises(LockHeldError, match=f"pid {sleeper.pid}"):
        lock.acquire()
    assert other_process.release() is True
    lock.acquire()
    assert json.loads(lock_file(tmp_path).read_text())["pid"] == os.getpid()
    with pytest.raises(LockHeldError, match=f"pid {os.getpid()}"):
        other_process.acquire()


def test_a_record_reads_back_as_it_was_written() -> None:
    data = {"env": "prod", "deployment": None, "owner": "a@b", "host": "b", "pid": 3,
            "pid_start": "9", "acquired_at": 10.0, "expires_at": 70.0, "renewed_at": 40.0}
    record = LockRecord.from_dict(data)
    assert record.deployment is None and record.expectation()["acquired_at"] == 10.0
    assert record.to_dict()["acquired_at"] == "1970-01-01T00:00:10Z"
    assert "a deployment of a@b (host b, pid 3" in record.describe()


# -- the journal: deployments abandoned by a process that is gone ---------------------------------


def test_mark_abandoned_uses_the_pid_start_time_and_the_host(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite")
    ours = journal.start_deployment(env="prod", app="a", kind="deploy", version="1", command="x")
    reused = journal.start_deployment(env="prod", app="a", kind="deploy", version="1", command="x")
    elsewhere = journal.start_deployment(env="prod", app="a", kind="deploy", version="1", command="x")
    journal._db.execute("UPDATE deployments SET pid_start = '1' WHERE id = ?", (reused,))
    journal._db.execute("UPDATE deployments SET host = 'far', pid = 1 WHERE id = ?", (elsewhere,))
    gone = journal.mark_abandoned("prod")
    assert [r.id for r in gone] == [reused]
    status = {r.id: r.status for r in journal.deployments("prod")}
    assert status == {ours: "running", reused: "failed", elsewhere: "running"}
    assert journal.deployment(ours).pid_start == pid_start(os.getpid())  # type: ignore[union-attr]


# -- the config's lock section ---------------------------------------------------------------------

CONFIG = """
state_dir: state
environments:
  lab:
    inventory: hosts.yml
    app: {name: hello}
    store: {url: "http://127.0.0.1:8081/"}
    trusted_keys: [release.pub]
    load_balancer: {socket: /run/haproxy/admin.sock, backend: hello%s}
%s"""


def config(tmp_path: Path, lb: str = "", lock: str = "") -> Path:
    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    node1: {}\n")
    (tmp_path / "release.pub").write_text("untrusted comment: x\nRWQ=\n")
    path = tmp_path / "deployer.yml"
    path.write_text(CONFIG % (lb, f"    lock: {lock}\n" if lock else ""))
    return path


def test_the_lock_is_on_the_load_balancers_host_when_the_config_names_one(tmp_path: Path) -> None:
    from deployer import load_config
    from deployer.cli._wiring import lock_for

    cfg = load_config(config(tmp_path))
    assert cfg.environment("lab").lock_at == "state_dir"
    assert lock_for(cfg, "lab").where == f"{tmp_path / 'state' / 'locks'}/lab.json"
    cfg = load_config(config(tmp_path, lb=", hosts: [lb1, lb2]"))
    env = cfg.environment("lab")
    assert (env.lock_at, env.lock_host, env.lock.dir, env.lock.lease) == (
        "load_balancer", "lb1", "/var/lib/deployer/locks", 120)
    assert lock_for(cfg, "lab").where == "lb1:/var/lib/deployer/locks/lab.json"
    cfg = load_config(config(tmp_path, lb=", host: lb1", lock="{host: bastion, dir: /srv/locks/, lease: 30}"))
    lock = lock_for(cfg, "lab")
    assert (lock.where, lock.lease) == ("bastion:/srv/locks/lab.json", 30)
    cfg = load_config(config(tmp_path, lb=", host: lb1", lock="{at: state_dir}"))
    assert lock_for(cfg, "lab").where.endswith("state/locks/lab.json")


@pytest.mark.parametrize(
    ("lock", "field", "says"),
    [
        ("{on: load_balancer}", "lock", "YAML reads the key 'on' as true"),
        ("{at: lb}", "lock.at", "load_balancer"),
        ("{dir: locks}", "lock.dir", "absolute directory"),
        ("{dir: /}", "lock.dir", "absolute directory"),
        ("{lease: 2}", "lock.lease", "greater than or equal to 5"),
        ("{at: state_dir, dir: /srv/locks}", "lock", "state_dir lock lives in <state_dir>/locks"),
        ("{colour: red}", "lock.colour", "Extra inputs"),
    ],
)
def test_a_bad_lock_section_names_the_field(tmp_path: Path, lock: str, field: str, says: str) -> None:
    from deployer import ConfigError, load_config

    path = config(tmp_path, lb=", host: lb1", lock=lock)
    with pytest.raises(ConfigError) as bad:
        load_config(path)
    text = str(bad.value)
    assert str(path) in text and f"environments.lab.{field}" in text and says in text, text


# -- `deployer unlock` -----------------------------------------------------------------------------


def cli(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--env", "lab", "--config", str(path)],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "300"},
    )


def test_unlock_refuses_a_live_holder_and_force_needs_a_reason_that_is_journalled(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    path = config(tmp_path)
    holder = EnvironmentLock(state_dir_lock(tmp_path / "state", "lab").host, "lab",
                             me=Identity.of(sleeper.pid))
    holder.acquire()
    holder.renew(deployment=12)
    refused = cli(path, "unlock")
    assert refused.returncode == 6, refused.stderr
    for part in ("deployment 12", f"host {HERE}", f"pid {sleeper.pid}", "since", "--force --reason"):
        assert part in refused.stderr, refused.stderr
    no_reason = cli(path, "unlock", "--force")
    assert no_reason.returncode == 2 and "--force needs --reason" in no_reason.stderr
    assert lock_file(tmp_path / "state", "lab").exists()  # refused twice: still locked
    forced = cli(path, "unlock", "--force", "--reason", "the runner's VM was deleted")
    assert forced.returncode == 0, forced.stderr
    assert not lock_file(tmp_path / "state", "lab").exists()
    history = json.loads(cli(path, "history", "--json").stdout)
    assert history[0]["kind"] == "unlock" and history[0]["status"] == "succeeded"
    assert "forced" in history[0]["summary"] and "the runner's VM was deleted" in history[0]["summary"]
    assert f"pid {sleeper.pid}" in history[0]["summary"]
    log = json.loads((tmp_path / "state" / "locks" / "lab.log").read_text().splitlines()[-1])
    assert (log["event"], log["reason"]) == ("forced", "the runner's VM was deleted")
    assert cli(path, "unlock").returncode == 0  # nothing left: not locked


def test_unlock_removes_the_lock_of_a_holder_gone_from_this_host(tmp_path: Path) -> None:
    path = config(tmp_path)
    me = Identity.current()
    reused = Identity(owner=me.owner, host=HERE, pid=me.pid, pid_start="1")  # a live PID, reused
    EnvironmentLock(state_dir_lock(tmp_path / "state", "lab").host, "lab", me=reused).acquire()
    done = cli(path, "unlock")
    assert done.returncode == 0, done.stderr
    assert not lock_file(tmp_path / "state", "lab").exists()
    history = json.loads(cli(path, "history", "--json").stdout)
    assert history[0]["kind"] == "unlock" and "removed a stale lock" in history[0]["summary"]


def test_the_program_keeps_the_freeze_beside_the_lock_and_a_renewal_reads_it(tmp_path: Path) -> None:
    host = program(tmp_path)
    board = EnvironmentFreeze(host, "prod")
    assert board.show() is None
    frozen, made = board.freeze(by="oncall@ops", reason="INC-1")
    assert made and (frozen.by, frozen.reason) == ("oncall@ops", "INC-1")
    again, made = board.freeze(by="someone@else", reason="later")
    assert not made and again.by == "oncall@ops"  # the first freeze stays on the record
    lock = EnvironmentLock(host, "prod", lease=120)
    assert lock.acquire() is None
    lock.renew()
    assert lock.freeze_seen is not None and lock.freeze_seen[1]["reason"] == "INC-1"
    lifted = board.unfreeze(by="oncall@ops", reason="over")
    assert lifted is not None and lifted.reason == "INC-1" and board.show() is None
    assert board.unfreeze(by="oncall@ops", reason="again") is None
    log = [json.loads(line) for line in (tmp_path / "locks" / "prod.log").read_text().splitlines()]
    assert [(e["event"], e["by"], e["reason"]) for e in log] == [
        ("froze", "oncall@ops", "INC-1"), ("unfroze", "oncall@ops", "over")]
    lock.release()
