"""Ctrl-C on a real deployment, through the CLI on the lab: while it pre-stages (every SSH
master it opened ends with it, whenever the signal lands) and during a soak (the first says
what the deployment is waiting for; a second aborts at once, every node back in service)."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable

import pytest
from lab_cli import fleet, read_until, start

from deployer.adapters.ssh_masters import SshMasters, ssh_processes
from deployer.lab import Lab

pytestmark = pytest.mark.e2e


def test_ctrl_c_while_pre_staging_leaves_no_ssh_master_behind(
    make_lab: Callable[..., Lab], lab_ssh_argv: Callable[[Lab, str, str], list[str]],
) -> None:
    """ansible-runner kills a cancelled run's process group while ssh may be setting up a
    master: one that detached after deployer listed the sockets, or whose socket the run
    directory's removal unlinked, used to live on for ControlPersist (300 s) after deployer
    exited. Signals land at several moments of the pre-stage run, where masters are being
    set up; none may remain."""
    lab = make_lab(nodes=3, seed="1.0.0")
    control_root = (lab.dir / "state" / "ssh").resolve()
    for delay in (0.7, 1.0, 1.2, 1.4, 1.7):
        proc = start(lab.config_path, "deploy", "--env", "lab", "--version", "1.1.0")
        try:
            read_until(proc, "pre-staging")
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            _out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode == 0:
            continue  # pre-staging was over already: nothing to look at this time
        assert proc.returncode == 130, err
        if "stopped by the operator before batch 1/" in err:
            # Pre-staging was over: the stop landed at the first safe point, nothing drained.
            assert "nothing was changed" in err or "skipped" in err, err
        else:
            assert "stopped by the operator while pre-staging; nothing was changed" in err, err
        assert ssh_processes(control_root) == [], f"after a Ctrl-C {delay}s into pre-staging"
        assert fleet(lab) == {n: ("1.0.0", "UP") for n in ("node1", "node2", "node3")}

    # The race made certain: a real master whose socket was unlinked before close() looked.
    masters = SshMasters(lab.dir / "state")
    sock = masters.directory / "m"
    argv = lab_ssh_argv(lab, "node1", "true")
    opened = subprocess.run(
        [argv[0], "-o", "ControlMaster=yes", "-o", "ControlPersist=300", "-o", f"ControlPath={sock}",
         *argv[1:]], capture_output=True, text=True, timeout=30, check=False)
    assert opened.returncode == 0, opened.stderr
    assert sock.is_socket() and ssh_processes(masters.directory)
    directory = masters.directory
    sock.unlink()
    masters.close()
    assert ssh_processes(directory) == []


def test_a_first_ctrl_c_during_a_soak_says_so_and_a_second_aborts_at_once(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=3, seed="1.0.0", soak=60)
    proc = start(lab.config_path, "deploy", "--env", "lab", "--version", "1.1.0")
    try:
        read_until(proc, "soaking 1.1.0")
        proc.send_signal(signal.SIGINT)
        said = read_until(proc, "stopping:")
        assert "stopping: waiting for the soak after batch 1 (up to 60s)" in said, said
        assert "press Ctrl-C again to abort at once" in said, said
        assert proc.poll() is None  # still soaking
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _out, err = proc.communicate(timeout=120)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    # Promptly: not the rest of a 60 s soak.
    assert took < 15, f"{took:.1f}s after the second Ctrl-C"
    assert "stopped by the operator" in err, err
    # node1 finished before the stop and keeps the release; every node is in service.
    assert fleet(lab) == {"node1": ("1.1.0", "UP"), "node2": ("1.0.0", "UP"),
                          "node3": ("1.0.0", "UP")}
    assert ssh_processes((lab.dir / "state" / "ssh").resolve()) == []
