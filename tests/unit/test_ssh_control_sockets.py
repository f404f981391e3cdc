"""Where SSH control sockets live (per user, per state directory, per run; short enough for a
unix socket), the inventory's SSH settings coming first, SSH's own reason when a node cannot be
reached, and the fixes for a host key and for a refused SSH key."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer import PrerequisiteError
from deployer.adapters.inventory import Node
from deployer.adapters.runner import AnsibleRunner, RunRequest, close_runner, translate
from deployer.adapters.ssh_masters import (
    MAX_SOCKET_PATH,
    SshMasters,
    control_root,
    host_key_hint,
    is_auth_failure,
    is_host_key_failure,
    known_hosts_file,
    ssh_processes,
    ssh_reason,
)
from deployer.cli._fixes import ssh_fix

# Ansible names a socket with 10 characters; ssh adds ".<16 characters>" while creating it.
LONGEST_SOCKET_NAME = 10 + 17


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A directory with a short path (pytest's own are too long for a unix socket's)."""
    path = Path(tempfile.mkdtemp(prefix="dt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_sockets_live_under_the_state_directory_when_its_path_is_short(short_tmp: Path) -> None:
    state = short_tmp / "state"
    masters = SshMasters(state)
    assert masters.root == state / "ssh"
    run_dir = masters.directory
    assert run_dir.parent == state / "ssh"
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / "ssh").st_mode) == 0o700
    assert len(os.fsencode(f"{run_dir}/")) + LONGEST_SOCKET_NAME <= MAX_SOCKET_PATH
    # Each run (each deployer command) has its own directory: closing one never touches another.
    other = SshMasters(state)
    assert other.directory != run_dir and other.directory.parent == run_dir.parent
    masters.close()
    assert not run_dir.exists() and other.directory.is_dir()
    other.close()


def test_a_long_state_directory_gets_a_short_private_directory_per_user(
    tmp_path: Path, short_tmp: Path
) -> None:
    state = tmp_path / ("a-rather-long-directory-name-" * 4) / "state"
    tmp = short_tmp
    root = control_root(state, tmp=tmp)
    assert root.parent == tmp / f"deployer-{os.geteuid()}"
    assert root == control_root(state, tmp=tmp)  # stable for one state directory
    assert root != control_root(tmp_path / ("b-rather-long-directory-name-" * 4), tmp=tmp)
    masters = SshMasters(state, tmp=tmp)
    run_dir = masters.directory
    assert len(os.fsencode(f"{run_dir}/")) + LONGEST_SOCKET_NAME <= MAX_SOCKET_PATH
    for d in (root.parent, root, run_dir):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    # A socket really fits there (with ssh's temporary suffix).
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(run_dir / ("x" * LONGEST_SOCKET_NAME)))
    finally:
        sock.close()
    masters.close()
    assert not run_dir.exists()


def test_a_shared_directory_left_open_to_others_is_made_private(
    tmp_path: Path, short_tmp: Path
) -> None:
    state = tmp_path / ("a-rather-long-directory-name-" * 4)
    tmp = short_tmp
    base = tmp / f"deployer-{os.geteuid()}"
    base.mkdir(parents=True)
    base.chmod(0o777)
    SshMasters(state, tmp=tmp).directory  # noqa: B018 (creates it)
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create another user's directory")
def test_another_users_directory_is_refused(tmp_path: Path, short_tmp: Path) -> None:
    state = tmp_path / ("a-rather-long-directory-name-" * 4)
    tmp = short_tmp
    base = tmp / f"deployer-{os.geteuid()}"
    base.mkdir(parents=True)
    os.chown(base, 65534, 65534)
    with pytest.raises(PrerequisiteError, match="not a directory owned by this user"):
        SshMasters(state, tmp=tmp).directory  # noqa: B018


def test_the_runner_lets_the_inventory_settings_win(short_tmp: Path) -> None:
    tmp_path = short_tmp
    runner = AnsibleRunner(artifacts_root=tmp_path / "state" / "runs")
    assert not runner.ssh.opened  # nothing is created until a playbook runs
    env = runner._envvars(RunRequest("probe.yml", tmp_path / "hosts.yml", [], {}))
    # Nothing goes before the inventory's ansible_ssh_common_args (ssh keeps the first value).
    assert env["ANSIBLE_SSH_ARGS"] == ""
    assert "ControlPersist=" in env["ANSIBLE_SSH_EXTRA_ARGS"]
    cp_dir = Path(env["ANSIBLE_SSH_CONTROL_PATH_DIR"])
    assert cp_dir.parent == tmp_path / "state" / "ssh" and cp_dir.is_dir()
    # Later runs of the same runner (the batches of one deployment) share the masters.
    again = runner._envvars(RunRequest("deploy_batch.yml", tmp_path / "hosts.yml", [], {}))
    assert again["ANSIBLE_SSH_CONTROL_PATH_DIR"] == str(cp_dir)
    close_runner(runner)
    assert not cp_dir.exists()
    close_runner(runner)  # twice is fine


def test_the_known_hosts_file_and_the_fix_for_a_host_key_failure() -> None:
    hv = {"ansible_ssh_common_args": "-o UserKnownHostsFile=/srv/kh -o StrictHostKeyChecking=yes"}
    assert known_hosts_file(hv) == "/srv/kh"
    assert known_hosts_file({"ansible_ssh_extra_args": "-o 'UserKnownHostsFile /k2'"}) == "/k2"
    assert known_hosts_file({"ansible_ssh_args": "-oUserKnownHostsFile=/k3"}) == "/k3"
    assert known_hosts_file({"ansible_ssh_common_args": "-o ControlPersist=60s"}) is None
    assert is_host_key_failure("Failed to connect to the host via ssh: Host key verification failed.")
    assert not is_host_key_failure("Failed to connect to the host via ssh: Connection refused")
    hint = host_key_hint("10.0.1.11", 2222, "/srv/kh")
    assert "ssh-keyscan -p 2222 10.0.1.11 >> /srv/kh" in hint
    assert "ssh-keygen -R [10.0.1.11]:2222 -f /srv/kh" in hint
    assert "~/.ssh/known_hosts" in host_key_hint("web1", None, None)


# Messages of unreachable hosts as ansible-core 2.19 gives them (over a pipelining connection,
# and the classic form), and what ssh itself said in each.
@pytest.mark.parametrize(("message", "reason"), [
    ('Task failed: Data could not be sent to remote host "10.0.1.11". Make sure this host can be '
     "reached over ssh: root@10.0.1.11: Permission denied (publickey).",
     "root@10.0.1.11: Permission denied (publickey)."),
    ('Task failed: Data could not be sent to remote host "10.0.1.11".\nMake sure this host can be '
     "reached over ssh: deploy@10.0.1.11: Permission denied (publickey,password).",
     "deploy@10.0.1.11: Permission denied (publickey,password)."),
    ("Failed to connect to the host via ssh: Warning: Identity file /srv/k not accessible: No such "
     "file or directory.\r\nroot@10.0.1.11: Permission denied (publickey).\r\n",
     "root@10.0.1.11: Permission denied (publickey)."),
    ("Failed to connect to the host via ssh: No ED25519 host key is known for [10.0.1.11]:2222 and "
     "you have requested strict checking.\r\nHost key verification failed.",
     "Host key verification failed."),
    ("Failed to connect to the host via ssh: ssh: connect to host 10.0.1.11 port 22: Connection "
     "refused", "ssh: connect to host 10.0.1.11 port 22: Connection refused"),
    ("Failed to connect to the host via ssh: Warning: Permanently added '10.0.1.11' (ED25519) to "
     "the list of known hosts.\r\nsomething else went wrong", "something else went wrong"),
    ('Task failed: Data could not be sent to remote host "10.0.1.11". Make sure this host can be '
     "reached over ssh: ", 'Task failed: Data could not be sent to remote host "10.0.1.11". Make '
     "sure this host can be reached over ssh:"),
])
def test_the_reason_of_an_unreachable_node_is_what_ssh_said(message: str, reason: str) -> None:
    assert ssh_reason(message) == reason
    event = translate({"event": "runner_on_unreachable", "event_data": {
        "host": "node1", "task": "Read", "res": {"msg": message, "unreachable": True}}})
    assert event is not None and event.message == reason


def test_the_fix_for_a_refused_ssh_key_names_the_inventorys_key_setting() -> None:
    refused = "deploy@10.0.1.11: Permission denied (publickey)."
    assert is_auth_failure(refused) and not is_host_key_failure(refused)
    assert not is_auth_failure("Host key verification failed.")
    node = Node(name="web1", address="10.0.1.11", app_host="10.0.1.11", lb_server="web1",
                ssh_port=2222, known_hosts="/srv/kh", user="deploy", private_key="/srv/deploy_key")
    fix = ssh_fix([(node, refused)])
    assert fix is not None and fix.startswith("web1: the node refused the SSH key (Permission "
                                              "denied (publickey)): ")
    assert "ansible_ssh_private_key_file (/srv/deploy_key)" in fix
    assert "'ssh -i /srv/deploy_key -p 2222 deploy@10.0.1.11 true'" in fix
    # Without a key in the inventory, ssh offers the user's own keys: the hint says so.
    bare = Node(name="web2", address="web2", app_host="web2", lb_server="web2")
    fix = ssh_fix([(bare, refused)])
    assert fix is not None and "ansible_ssh_private_key_file (not set" in fix
    assert "'ssh web2 true'" in fix
    # A host-key failure and a refused key each get their fix; other failures none.
    both = ssh_fix([(node, "Host key verification failed."), (bare, refused)])
    assert both is not None and both.startswith("web1: the node's SSH host key is not in /srv/kh")
    assert "; web2: the node refused the SSH key" in both
    assert ssh_fix([(node, "ssh: connect to host 10.0.1.11 port 22: Connection refused")]) is None


def test_nodes_know_the_user_and_key_the_inventory_gives_them(tmp_path: Path) -> None:
    from deployer.adapters.inventory import load_nodes

    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    web:\n"
        "      vars: {ansible_user: deploy, ansible_ssh_private_key_file: /srv/deploy_key}\n"
        "      hosts:\n        web1: {ansible_host: 10.0.1.11}\n"
        "        web2: {ansible_host: 10.0.1.12, ansible_user: other, ansible_ssh_private_key_file: /k}\n"
        "    db:\n      hosts:\n        db1: {ansible_ssh_user: dba, ansible_private_key_file: /d}\n"
    )
    web1, web2 = load_nodes(inventory, "web")
    assert (web1.user, web1.private_key) == ("deploy", "/srv/deploy_key")  # the group's
    assert (web2.user, web2.private_key) == ("other", "/k")  # the host's own
    [db1] = load_nodes(inventory, "db")
    assert (db1.user, db1.private_key) == ("dba", "/d")  # the older names


def test_close_ends_a_master_its_socket_no_longer_reaches(short_tmp: Path) -> None:
    """A run cancelled while ssh set up its master (Ctrl-C while pre-staging): the master can
    listen on a socket the directory's removal unlinked, or detach after the sockets were
    listed. close() ends every ssh process of this user that names the run's directory, and
    only those."""
    masters = SshMasters(short_tmp / "state")
    run_dir = masters.directory
    # Stand-ins for ssh processes (a process is named after the file it runs): one of this
    # run, one of another run of the same state directory.
    ssh = short_tmp / "bin" / "ssh"
    ssh.parent.mkdir()
    ssh.symlink_to(sys.executable)
    other = SshMasters(short_tmp / "state").directory
    sleeper = "import time; time.sleep(60)"
    ours = subprocess.Popen([str(ssh), "-c", sleeper, "-o", f"ControlPath={run_dir}/0123456789"])
    theirs = subprocess.Popen([str(ssh), "-c", sleeper, "-o", f"ControlPath={other}/0123456789"])
    try:
        deadline = time.monotonic() + 10
        while ours.pid not in ssh_processes(run_dir) and time.monotonic() < deadline:
            time.sleep(0.02)  # until the interpreter has started under the ssh name
        assert ssh_processes(run_dir) == [ours.pid]
        masters.close()
        assert ours.wait(timeout=10) == -signal.SIGTERM
        assert theirs.poll() is None and not run_dir.exists()
    finally:
        for proc in (ours, theirs):
            proc.kill()
            proc.wait()


def test_runs_started_side_by_side_share_one_directory(tmp_path: Path) -> None:
    """A rollout's run starts while the pre-stage run does: both ask for the directory at once,
    and both must get the one close() cleans up."""
    masters = SshMasters(tmp_path / "state")
    start = threading.Barrier(8)
    seen: list[Path] = []

    def ask() -> None:
        start.wait()
        seen.append(masters.directory)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1
    assert [p.name for p in masters.root.iterdir()] == [seen[0].name]
    masters.close()
    assert list(masters.root.iterdir()) == []


def test_what_a_cancelled_run_leaves_behind_is_ended_and_nothing_else(tmp_path: Path) -> None:
    """A worker of a cancelled ansible-playbook in a session of its own (so out of reach of its
    process group) names the run's directory on its command line: it is ended; a process naming
    a sibling directory is not."""
    from deployer.adapters.runner import end_leftover_processes

    run_dir, sibling = tmp_path / "run-abc", tmp_path / "run-abcd"
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    worker = subprocess.Popen([*sleeper, f"{run_dir}/env/extravars"], start_new_session=True)
    other = subprocess.Popen([*sleeper, f"{sibling}/env/extravars"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b"extravars" not in Path(
                f"/proc/{worker.pid}/cmdline").read_bytes():
            time.sleep(0.05)  # until the child has exec'd
        assert end_leftover_processes(run_dir) == [worker.pid]
        assert worker.wait(timeout=10) == -signal.SIGKILL
        assert other.poll() is None
    finally:
        for proc in (worker, other):
            proc.kill()
            proc.wait()
