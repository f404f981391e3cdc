"""The commands that only read (history, status) leave the journal as they found it, byte for
byte: opened read-only, not migrated, nothing marked. A deployment whose process died is shown
as abandoned, and only the next command that writes records it as failed. The runner is the one
seam faked here (a replay of the probe); the journal is real."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import NODES

from deployer import LoadBalancerError, load_config
from deployer.adapters.journal import Journal
from deployer.cli import _wiring
from deployer.cli.main import cli
from deployer.testing import ReplayRunner, ev, stats


def files(state: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(state.iterdir()) if p.is_file()}


def unchanged(journal: Path, before: dict[str, bytes]) -> None:
    """The journal's file is byte-identical, and its write-ahead log holds nothing new (a
    read-only reader may leave an empty one, and SQLite's shared-memory index beside it)."""
    after = files(journal.parent)
    assert after[journal.name] == before[journal.name]
    wal = f"{journal.name}-wal"
    assert after.get(wal, b"") == before.get(wal, b""), "something was written to the journal's log"
    assert set(after) - set(before) <= {wal, f"{journal.name}-shm"}, sorted(after)


def run(world: dict[str, Path], *args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--env", "lab", "--config", str(world["config"])])
    return result


def lb_error_exit(result: Any) -> int:
    """The exit code the CLI's entry point gives a command that ended with a load-balancer
    error (the nodes were still shown: the world's load balancer does not exist)."""
    assert isinstance(result.exception, LoadBalancerError), result.output
    return result.exception.exit_code


@pytest.fixture
def probe_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands get a runner that replays one probe.yml run: every node on 1.1.0 and healthy."""

    def replay(**_: object) -> ReplayRunner:
        events = []
        for host in NODES:
            events.append(ev("ok", host, "deployer_release", "facts", facts={
                "deployer_release_current": "1.1.0", "deployer_release_previous": "1.0.0"}))
            events.append(ev("ok", host, "deployer_smoke", "probe", result={"healthy": True}))
        return ReplayRunner([("probe.yml", [*events, stats(NODES)], "successful")])

    monkeypatch.setattr(_wiring, "AnsibleRunner", replay)


def journal_with_an_abandoned_deployment(world: dict[str, Path]) -> tuple[Path, int, int]:
    """A journal holding a finished deployment and one whose process died while it ran."""
    path = load_config(world["config"]).state_dir / "journal.sqlite"
    journal = Journal(path)
    done = journal.start_deployment(env="lab", app="hello", kind="deploy", version="1.1.0",
                                    command="deployer deploy")
    journal.finish_deployment(done, "succeeded", "3 node(s) now run 1.1.0")
    journal.close()
    died = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from pathlib import Path
        from deployer.adapters.journal import Journal
        print(Journal(Path({str(path)!r})).start_deployment(
            env="lab", app="hello", kind="deploy", version="1.2.0", command="deployer deploy"))
    """)], capture_output=True, text=True, check=True)
    return path, done, int(died.stdout)


def test_history_reads_the_journal_without_changing_a_byte(world: dict[str, Path]) -> None:
    path, done, abandoned = journal_with_an_abandoned_deployment(world)
    before = files(path.parent)

    listed = run(world, "history", "--json")
    assert listed.exit_code == 0, listed.output
    shown = {d["id"]: (d["status"], d["summary"]) for d in json.loads(listed.output)}
    assert shown == {done: ("succeeded", "3 node(s) now run 1.1.0"),
                     abandoned: ("abandoned", "the deploying process ended unexpectedly")}
    table = run(world, "history")
    assert table.exit_code == 0 and "abandoned" in table.output, table.output
    one = run(world, "history", "--deployment", str(abandoned), "--json")
    assert one.exit_code == 0 and json.loads(one.output)["status"] == "abandoned", one.output

    unchanged(path, before)
    # Only a command that writes records it as failed (what the next deployment does).
    assert Journal(path, read_only=True).deployment(abandoned).status == "running"  # type: ignore[union-attr]
    writer = Journal(path)
    assert [r.id for r in writer.mark_abandoned("lab")] == [abandoned]
    assert writer.deployment(abandoned).status == "failed"  # type: ignore[union-attr]


def test_status_reads_the_journal_without_changing_a_byte(
    world: dict[str, Path], probe_runner: None
) -> None:
    path, _, _ = journal_with_an_abandoned_deployment(world)
    before = files(path.parent)
    status = run(world, "status", "--json")
    # The world's load balancer is not there: the nodes are shown, and the exit code says so.
    assert lb_error_exit(status) == 7, status.output
    data = json.loads(status.output)
    assert {n["node"]: n["version"] for n in data["nodes"]} == dict.fromkeys(NODES, "1.1.0")
    assert data["load_balancer_error"]  # the world's load balancer is not there: still read-only
    unchanged(path, before)


def test_read_commands_create_no_journal(world: dict[str, Path], probe_runner: None) -> None:
    state = load_config(world["config"]).state_dir
    listed = run(world, "history", "--json")
    assert listed.exit_code == 0 and json.loads(listed.output) == [], listed.output
    assert not state.exists()
    assert lb_error_exit(run(world, "status", "--json")) == 7  # the world has no load balancer
    assert not (state / "journal.sqlite").exists()


def test_an_old_journal_is_read_without_being_migrated(
    world: dict[str, Path], probe_runner: None
) -> None:
    import sqlite3

    from conftest import JOURNAL_SCHEMA_1 as _SCHEMA_1

    path = load_config(world["config"]).state_dir / "journal.sqlite"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA_1)
    before = path.read_bytes()
    listed = run(world, "history", "--json")
    assert listed.exit_code == 0, listed.output
    assert [(d["version"], d["status"], d["deployer_version"]) for d in json.loads(listed.output)] == [
        ("1.0.0", "succeeded", "")]
    assert lb_error_exit(run(world, "status", "--json")) == 7  # the world has no load balancer
    assert path.read_bytes() == before  # still schema 1: the next command that writes migrates it
