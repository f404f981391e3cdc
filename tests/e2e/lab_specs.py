"""What end-to-end tests import beside their fixtures: a spec for a test lab on a loopback
network nobody uses, and who holds the default lab's ports during a session.

(Not in conftest.py: tests/unit has one too, and ``from conftest import`` would get whichever
pytest loaded last.)"""

from __future__ import annotations

import itertools
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from deployer.lab import Lab, LabSpec
from deployer.lab._procs import port_is_free
from deployer.lab._spec import DEFAULT_PORTS, split_address

# Third octets tried for lab networks (127.0.1, the default lab, is never used). Each test
# process starts in its own block of 16 (0-10: $DEPLOYER_TEST_NET_BLOCK, which scripts/test
# sets for the two runs it starts side by side; else by process id), so concurrent test runs
# rarely even try the same net.
_FIRST_NET = 70 + int(os.environ.get("DEPLOYER_TEST_NET_BLOCK") or os.getpid() % 11) % 11 * 16
_NETS = itertools.chain(range(_FIRST_NET, 251), range(70, _FIRST_NET))


def next_lab_spec(**overrides: Any) -> LabSpec:
    """A spec on a network nobody uses right now. Its ports are left to the lab, which picks
    free ones (it is not the default lab), so it never takes a port the default lab needs."""
    for octet in _NETS:
        net = f"127.0.{octet}"
        if not any(not port_is_free(f"{net}.{i}", 22) for i in (1, 2, 3)):
            # No soak unless a test asks: most deploy tests judge something else.
            fields: dict[str, Any] = {"net": net, "soak": 0.0, **overrides}
            return LabSpec(**fields)
    raise RuntimeError("no free loopback network left for a test lab")


@dataclass
class DefaultPorts:
    """Who holds the default lab's ports during the session: a lab of the suite's own (``lab``,
    in a temporary directory, never the user's default lab), or, where something else had some
    of them (the user's demo lab, say), that program plus the suite's placeholder sockets."""

    lab: Lab | None = None
    spec: LabSpec | None = None
    # Ports this machine already had in use when the session began.
    held_before: list[str] = field(default_factory=list)
    placeholders: list[socket.socket] = field(default_factory=list)

    @staticmethod
    def addresses() -> dict[str, tuple[str, int]]:
        return {f: split_address(a, what=f) for f, a in DEFAULT_PORTS.items()}

    def all_held(self) -> bool:
        return not any(port_is_free(host, port) for host, port in self.addresses().values())

    def up(self) -> None:
        assert self.lab is not None and self.spec is not None
        self.lab.up(self.spec)

    def release(self) -> None:
        for sock in self.placeholders:
            sock.close()
        self.placeholders.clear()
        if self.lab is not None:
            self.lab.down()
