"""Output that is not a terminal (CI logs, pipes) is not wrapped, and every error has one form."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from artefact_helpers import make_source
from conftest import MINIMAL_CONFIG as GOOD
from conftest import write_config as write

from deployer.adapters.journal import Journal
from deployer.cli.main import main


def piped(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run deployer with stdout and stderr on pipes and no COLUMNS, as a CI job does."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    return subprocess.run([sys.executable, "-m", "deployer", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=60, check=False)


def test_piped_history_keeps_each_deployment_on_one_line(tmp_path: Path) -> None:
    cfg = write(tmp_path, GOOD)
    journal = Journal(tmp_path / "state" / "journal.sqlite")
    summary = ("3 node(s) now run 1.10.0-rc.1+build.20261130; node1 out of the load balancer "
               "0.71s, node2 0.69s, node3 0.74s; pre-staged in parallel")
    dep = journal.start_deployment(env="lab", app="hello", kind="deploy",
                                   version="1.10.0-rc.1+build.20261130", command="deployer deploy")
    journal.record_phase(dep, "node1", "done", from_version="1.0.0",
                         to_version="1.10.0-rc.1+build.20261130",
                         detail="healthy after 0.42s: GET http://127.0.0.1:8000/health -> 200 "
                                "{'version': '1.10.0-rc.1+build.20261130'}")
    journal.finish_deployment(dep, "succeeded", summary)
    journal.close()

    r = piped("history", "--env", "lab", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    row = [line for line in r.stdout.splitlines() if "1.10.0-rc.1+build.20261130" in line]
    assert len(row) == 1 and summary in row[0], r.stdout  # 130 characters, on one line

    r = piped("history", "--env", "lab", "--config", str(cfg), "--deployment", str(dep))
    assert r.returncode == 0, r.stderr
    assert "-> 200 {'version': '1.10.0-rc.1+build.20261130'}" in r.stdout


def test_piped_history_shows_whole_reasons(tmp_path: Path) -> None:
    cfg = write(tmp_path, GOOD)
    journal = Journal(tmp_path / "state" / "journal.sqlite")
    why = ("cannot stage release 1.1.0: cannot download http://mirror.internal.example.com:8099/"
           "releases/hello/1.1.0/hello-1.1.0.tar.gz: [Errno 111] Connection refused")
    summary = f"pre-staging 1.1.0 failed (node1: {why}; node2: {why}); no node was changed"
    dep = journal.start_deployment(env="lab", app="hello", kind="deploy", version="1.1.0",
                                   command="deployer deploy")
    journal.record_phase(dep, "node1", "skipped", from_version="1.0.0", to_version="1.1.0",
                         detail=f"not deployed: pre-staging failed: {why}")
    journal.finish_deployment(dep, "refused", summary)
    journal.close()
    assert len(summary) > 160 and len(f"not deployed: pre-staging failed: {why}") > 120

    r = piped("history", "--env", "lab", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    [row] = [line for line in r.stdout.splitlines() if "refused" in line]
    assert summary in row, r.stdout
    r = piped("history", "--env", "lab", "--config", str(cfg), "--deployment", str(dep))
    assert r.returncode == 0, r.stderr
    [row] = [line for line in r.stdout.splitlines() if "skipped" in line]
    assert f"not deployed: pre-staging failed: {why}" in row, r.stdout


def test_piped_artefact_list_prints_whole_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    src = make_source(tmp_path)
    store = (tmp_path / "store").as_uri()
    out_dir = tmp_path / "dist" / "hello-1.0.0-rc.1"
    for argv in (
        ["keys", "generate", "--out", "keys"],
        ["artefact", "build", str(src), "--app", "hello", "--version", "1.0.0-rc.1",
         "--source-commit", "abc"],
        ["artefact", "sign", str(out_dir / "manifest.json"), "--key", "keys/release.key"],
        ["artefact", "publish", str(out_dir), "--store", store],
    ):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0, capsys.readouterr().err

    r = piped("artefact", "list", "--store", store)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1, r.stdout
    fields = lines[0].split()
    assert fields[:2] == ["hello", "1.0.0-rc.1"]
    assert len(fields[3]) == 64 and fields[4].isdigit()  # the sha256 and the size, unbroken


def test_errors_have_one_form(tmp_path: Path) -> None:
    # A deployer error, a usage error and an unknown command read the same way.
    for argv in (
        ["history", "--env", "lab", "--config", str(tmp_path / "absent.yml")],
        ["deploy", "--version", "1.0.0"],
        ["no-such-command"],
    ):
        r = piped(*argv)
        assert r.returncode == 2, (argv, r.stderr)
        lines = r.stderr.splitlines()
        assert lines[0].startswith("deployer: error: "), (argv, r.stderr)
        assert lines[1].startswith("deployer: hint: "), (argv, r.stderr)
        assert "Error:" not in r.stderr and "Traceback" not in r.stderr


def test_only_a_terminal_gets_long_cells_cut() -> None:
    import io

    from deployer.cli._common import _Console, cell

    terminal = _Console(file=io.StringIO(), force_terminal=True)
    pipe = _Console(file=io.StringIO())
    assert cell("x" * 100, 80, on=terminal) == "x" * 77 + "..."
    assert cell("x" * 100, 80, on=pipe) == "x" * 100
    assert cell("short", 80, on=terminal) == "short"
