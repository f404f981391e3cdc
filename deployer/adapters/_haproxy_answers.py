"""Reading HAProxy's runtime-API answers: ``show stat`` (CSV) and ``show servers state``.

The reference reading, used by the controller's load-balancer clients
(:mod:`deployer.adapters.haproxy`) and by the soak analysis (:mod:`deployer.analysis`). The
``deployer_haproxy`` module of the ``deployer_lb_haproxy`` role runs on the load balancer's host,
where deployer is not installed, so it carries the same functions in its own file;
tests/unit/test_haproxy_answers.py feeds both the answers of a real HAProxy
(tests/unit/fixtures/haproxy/) and checks that they read them alike.

- ``show stat``: a header line ``# pxname,svname,...`` then one CSV row per proxy, server,
  FRONTEND and BACKEND. A backend always has its BACKEND row, servers or not.
- ``show servers state [BACKEND]``: a format version line, a header ``# be_id be_name ...``, then
  one line of space-separated fields per server; ``Can't find backend.`` for an unknown one.
  ``srv_admin_state`` is a bit field (HAProxy's SRV_ADMF_* flags, below).
"""

from __future__ import annotations

import csv

__all__ = [
    "ADMIN_FLAGS", "DRAIN_BITS", "MAINT_BITS", "admin_bits", "admin_state", "stat_rows",
    "takes_traffic",
]

ADMIN_FLAGS = {
    0x01: "maint",  # forced (set server ... state maint)
    0x02: "maint_inherited",  # from a tracked server
    0x04: "maint_config",  # `disabled` in the configuration
    0x08: "drain",  # forced (set server ... state drain)
    0x10: "drain_inherited",
    0x20: "maint_resolution",  # its address could not be resolved
    0x40: "maint_hostname",
}
MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20 | 0x40
DRAIN_BITS = 0x08 | 0x10


def stat_rows(text: str, backend: str) -> dict[str, dict[str, str]] | None:
    """The rows of ``backend``'s servers in a ``show stat`` answer, by server name (values
    stripped); ``{}`` for a backend without servers, None when the answer has no such backend."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return None
    found: dict[str, dict[str, str]] | None = None
    for row in csv.DictReader([lines[0][2:], *lines[1:]]):
        if row.get("pxname") != backend:
            continue
        if found is None:
            found = {}
        name = row.get("svname") or ""
        if name in ("FRONTEND", "BACKEND"):
            continue
        found[name] = {k: (v or "").strip() for k, v in row.items() if isinstance(k, str) and k}
    return found


def admin_bits(text: str, backend: str) -> dict[str, int]:
    """``srv_admin_state`` of each server of ``backend`` in a ``show servers state`` answer
    (of that backend or of all), by server name; ``{}`` when it lists none."""
    columns: list[str] = []
    bits: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("# "):
            columns = line[2:].split()
            continue
        row = dict(zip(columns, line.split(), strict=False))
        if row.get("be_name") != backend or "srv_name" not in row:
            continue
        try:
            bits[row["srv_name"]] = int(row.get("srv_admin_state", ""))
        except ValueError:
            continue
    return bits


def admin_state(bits: int) -> str:
    """The administrative state the bits amount to: maint, drain or ready."""
    if bits & MAINT_BITS:
        return "maint"
    if bits & DRAIN_BITS:
        return "drain"
    return "ready"


def takes_traffic(status: str, admin: str) -> bool:
    """Whether HAProxy sends new traffic to a server: ready, and UP ('UP', or 'UP 1/3' on its
    way down) or without checks ('no check')."""
    return admin == "ready" and (status.split(" ")[0] == "UP" or status == "no check")
