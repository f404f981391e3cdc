"""Lab fixtures for end-to-end tests.

- ``lab`` (session): a 3-node lab seeded with release 1.0.0, shared by the whole session.
- ``make_lab`` (function): a factory for fresh labs, ``make_lab(nodes=2, seed=None)``; every lab it
  made is torn down after the test.
- ``lab_ssh``: run a shell command on a lab node over real SSH (``lab_ssh_argv``: its argv).
- ``ansible_env``: environment for the venv's ``ansible``/``ansible-playbook`` (``venv_bin``).
- ``default_ports`` (session, autouse): every port the default lab takes (frontend, store,
  preview, metrics, Prometheus) is held while the end-to-end tests run, as after `scripts/demo`.

Every lab gets its own loopback network (127.0.X.0/24) and ports the lab picks free, so labs
never collide with each other, with a lab started by hand, or with the default lab.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lab_specs import DefaultPorts, next_lab_spec

from deployer import DeployerError
from deployer.lab import Lab, LabSpec
from deployer.lab._procs import port_is_free
from deployer.lab._spec import DEFAULT_PORTS

VENV_BIN = Path(sys.executable).parent


def _default_port_lab_spec() -> LabSpec:
    """A small lab binding every default port: the frontend, store, metrics, preview (legs) and
    Prometheus addresses given explicitly, as `deployer lab up` gives them to the default lab."""
    return next_lab_spec(nodes=1, legs=True, prometheus=True, **DEFAULT_PORTS)


def _hold(host: str, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
        sock.listen(1)
    except OSError:  # taken since it was seen free
        sock.close()
        return None
    return sock


@pytest.fixture(scope="session", autouse=True)
def default_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DefaultPorts]:
    """The README's order on every run: `scripts/demo` leaves the default lab up, then the tests
    run. A default-port lab of the suite's own is up for the whole session (torn down at its
    end), so a test lab that took one of those ports fails its test. Where the machine already
    holds some of them (a user's lab), that is used as it is, and the suite holds the rest."""
    held = DefaultPorts()
    if os.environ.get("DEPLOYER_TEST_DEFAULT_PORTS") == "beside":
        # A run beside the one that holds them (scripts/test): hold nothing, touch nothing.
        yield held
        return
    held.held_before = [f"{h}:{p}" for h, p in held.addresses().values() if not port_is_free(h, p)]
    can_run_a_lab = os.geteuid() == 0 and all(
        shutil.which(c) for c in ("haproxy", "sshd", "nginx", "prometheus"))
    try:
        if not held.held_before and can_run_a_lab:
            held.lab, held.spec = Lab(tmp_path_factory.mktemp("default-ports")), _default_port_lab_spec()
            try:
                held.up()
            except DeployerError:
                held.lab.down()  # another run's lab may have taken them meanwhile: hold the rest
                held.lab = held.spec = None
        if held.lab is None:
            for host, port in held.addresses().values():
                if port_is_free(host, port) and (sock := _hold(host, port)) is not None:
                    held.placeholders.append(sock)
        yield held
    finally:
        held.release()


def _ansible_env() -> dict[str, str]:
    """Environment for the venv's ansible commands (they look for their siblings on PATH)."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env["ANSIBLE_NOCOLOR"] = "1"
    env.pop("ANSIBLE_CONFIG", None)
    return env


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A 3-node lab seeded with 1.0.0, up for the whole session."""
    the_lab = Lab(tmp_path_factory.mktemp("lab"))
    try:
        the_lab.up(next_lab_spec(nodes=3, seed="1.0.0"))
        yield the_lab
    finally:
        the_lab.down()


@pytest.fixture
def make_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Lab]]:
    """Factory of fresh labs: ``make_lab(nodes=3, seed=None, **spec_fields)``."""
    made: list[Lab] = []

    def factory(nodes: int = 3, seed: str | None = None, **fields: Any) -> Lab:
        the_lab = Lab(tmp_path_factory.mktemp("lab"))
        made.append(the_lab)
        the_lab.up(next_lab_spec(nodes=nodes, seed=seed, **fields))
        return the_lab

    yield factory
    errors = []
    for the_lab in made:
        try:
            the_lab.down()
        except Exception as exc:  # tear every lab down even when one fails
            errors.append(exc)
    if errors:
        raise errors[0]


def _ssh_argv(the_lab: Lab, node: str, command: str) -> list[str]:
    """The argv that runs ``command`` on ``node`` of ``the_lab`` over SSH, as Ansible would."""
    status = the_lab.status()
    target = next(n for n in status.nodes if n.name == node)
    return [
        "ssh", "-i", str(the_lab.keys_dir / "id_ed25519"),
        "-o", f"UserKnownHostsFile={the_lab.keys_dir / 'known_hosts'}",
        "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
        "-p", str(target.ssh_port), f"root@{target.address}", command,
    ]


@pytest.fixture
def lab_ssh() -> Callable[..., subprocess.CompletedProcess[str]]:
    """``lab_ssh(lab, "node1", "hostname")`` runs a command on a node over real SSH."""

    def run(the_lab: Lab, node: str, command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _ssh_argv(the_lab, node, command), capture_output=True, text=True, timeout=30,
            check=False,
        )

    return run


@pytest.fixture
def lab_ssh_argv() -> Callable[[Lab, str, str], list[str]]:
    """``lab_ssh_argv(lab, "node1", "true")``: the ssh argv, to add options of your own."""
    return _ssh_argv


@pytest.fixture
def ansible_env() -> dict[str, str]:
    return _ansible_env()


@pytest.fixture
def venv_bin() -> Path:
    return VENV_BIN
