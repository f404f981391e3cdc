"""The lab's node identity: cgroup v2 discovery and naming, and the errors a dead node gives.
(Starting and stopping real nodes in their cgroups: tests/e2e/test_lab_isolation.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deployer import LabError
from deployer.lab import NodeState
from deployer.lab._cgroup import _mountinfo_cgroup2, new_lab_cgroup_name
from deployer.lab._nodes import NodeProcesses
from deployer.lab._procs import ProcessRef

HYBRID = """\
25 30 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup rw,relatime shared:9 - tmpfs tmpfs rw,mode=755
32 31 0:27 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory
40 31 0:35 / /sys/fs/cgroup/unified rw,relatime shared:18 - cgroup2 cgroup2 rw
"""
UNIFIED = "28 22 0:25 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"
V1_ONLY = "32 31 0:27 / /sys/fs/cgroup/memory rw,relatime shared:10 - cgroup cgroup rw,memory\n"
ESCAPED = "40 31 0:35 / /mnt/my\\040cgroups rw,relatime - cgroup2 none rw\n"


@pytest.mark.parametrize(
    ("mountinfo", "expected"),
    [
        (HYBRID, Path("/sys/fs/cgroup/unified")),
        (UNIFIED, Path("/sys/fs/cgroup")),
        (V1_ONLY, None),
        (ESCAPED, Path("/mnt/my cgroups")),
    ],
)
def test_the_cgroup2_mount_is_found_in_mountinfo(mountinfo: str, expected: Path | None) -> None:
    assert _mountinfo_cgroup2(mountinfo) == expected


def test_each_lab_gets_a_cgroup_name_of_its_own() -> None:
    names = {new_lab_cgroup_name(Path("/tmp/pytest-3/lab 1")) for _ in range(50)}
    assert len(names) == 50
    for name in names:
        parent, leaf = name.split("/")
        assert parent == "deployer-lab"
        assert leaf.startswith("lab_1-") and "/" not in leaf and " " not in leaf


def test_a_node_whose_sshd_died_says_so_instead_of_waiting_for_supervisord(tmp_path: Path) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    node = NodeState(
        name="node1", address="127.0.1.1", ssh_port=22,
        sshd=ProcessRef(pid=gone.pid, start_time=1), cgroup="deployer-lab/x-1/node1",
    )
    nodes = NodeProcesses(
        lab_dir=tmp_path, lab_cgroup=None, launcher=tmp_path / "in-cgroup",
        init_script=tmp_path / "node-init", authorized_keys=tmp_path / "authorized_keys",
    )
    with pytest.raises(LabError, match="node1's sshd died while waiting for supervisord"):
        nodes.start_supervisords([node])
