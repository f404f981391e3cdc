"""The controller (deployer.adapters._haproxy_answers, the reference) and the deployer_haproxy
module (its own copy: it runs on the load balancer's host) read HAProxy's answers alike: fed the
same answers of a real HAProxy 2.6 (tests/unit/fixtures/haproxy/, recorded by record.py there),
both say the same of every server, and what they say is what HAProxy meant."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from role_modules import load_module

from deployer import LoadBalancerError
from deployer.adapters import _haproxy_answers as reference
from deployer.adapters.haproxy import _parse_servers
from deployer.analysis import parse_show_stat

module = load_module("deployer_lb_haproxy", "deployer_haproxy")
ANSWERS = Path(__file__).parent / "fixtures" / "haproxy"
STAT = (ANSWERS / "show-stat.txt").read_text()
ALL_STATES = (ANSWERS / "show-servers-state.txt").read_text()
BACKENDS = ("blue-leg", "checks.v2", "green-leg", "empty-be", "nosuch")


def servers_state(backend: str) -> str:
    return (ANSWERS / f"show-servers-state-{backend}.txt").read_text()


class RecordedApi:
    """The runtime API as the module talks to it, answering from the recorded answers."""

    def command(self, line: str) -> str:
        if line == "show stat":
            return STAT
        assert line.startswith("show servers state "), line
        return servers_state(line.removeprefix("show servers state "))


# What HAProxy meant: (admin state, flags, status, sessions, takes new traffic) of each server.
EXPECTED = {
    "blue-leg": {
        "web-1": ("ready", [], "UP", 2, True),
        "web-2": ("drain", ["drain"], "DRAIN", 0, False),  # an operator's drain
        "web-3": ("maint", ["maint"], "MAINT", 0, False),  # an operator's maintenance
        "web-4.example": ("maint", ["maint"], "MAINT", 0, False),  # drained, then maint
        "node_5": ("maint", ["maint", "maint_config"], "MAINT", 0, False),  # `disabled`
        "web-6": ("ready", [], "no check", 1, True),
        "web-7": ("maint", ["maint_inherited"], "MAINT (via blue-leg/web-3)", 0, False),
    },
    "checks.v2": {
        "web-8": ("ready", [], "DOWN", 0, False),  # its checks fail
        "web-9": ("ready", [], "DOWN 1/30", 0, False),  # on its way back up
    },
    "green-leg": {"web-1": ("ready", [], "no check", 0, True)},  # the same name elsewhere
    "empty-be": {},
}


def test_the_module_carries_the_reference_reading_word_for_word() -> None:
    for name in ("stat_rows", "admin_bits", "admin_state", "takes_traffic"):
        assert inspect.getsource(getattr(module, name)) == inspect.getsource(getattr(reference, name)), name
    for name in ("ADMIN_FLAGS", "MAINT_BITS", "DRAIN_BITS"):
        assert getattr(module, name) == getattr(reference, name), name


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_read_the_answers_of_each_backend_alike(backend: str) -> None:
    state = servers_state(backend)
    assert module.stat_rows(STAT, backend) == reference.stat_rows(STAT, backend)
    assert module.admin_bits(state, backend) == reference.admin_bits(state, backend)
    # `show servers state` of every backend lists the same servers with the same bits.
    assert module.admin_bits(ALL_STATES, backend) == reference.admin_bits(state, backend)
    assert reference.admin_bits(ALL_STATES, backend) == reference.admin_bits(state, backend)


def test_both_sum_up_every_combination_of_flags_alike() -> None:
    for bits in range(128):
        assert module.admin_state(bits) == reference.admin_state(bits), bits
    statuses = {row["status"] for b in BACKENDS for row in (reference.stat_rows(STAT, b) or {}).values()}
    assert {"UP", "DRAIN", "MAINT", "no check", "DOWN", "DOWN 1/30"} <= statuses
    for status in [*statuses, "UP 1/3", "NOLB", ""]:
        for admin in ("ready", "drain", "maint"):
            assert module.takes_traffic(status, admin) == reference.takes_traffic(status, admin)


@pytest.mark.parametrize("backend", [b for b in EXPECTED if EXPECTED[b]])
def test_each_server_is_what_haproxy_meant_for_the_module_and_the_controller(backend: str) -> None:
    controller = _parse_servers("lb1", backend, STAT, servers_state(backend))
    analysis = parse_show_stat(STAT, backend)
    seen = {}
    for name, s in controller.items():
        info = module.read_server(RecordedApi(), backend, name)
        seen[name] = (info["admin_state"], info["status"], info["sessions"], info["up"])
        assert (s.admin, s.status, s.sessions, s.in_service) == (
            reference.admin_state(info["admin_bits"]), info["status"], info["sessions"], info["up"])
        assert analysis[name].status == s.status
    assert seen == {name: e[1:] for name, e in EXPECTED[backend].items()}
    assert {name: s.admin for name, s in controller.items()} == {
        name: e[0] for name, e in EXPECTED[backend].items()}


def test_a_backend_without_servers_and_an_unknown_one() -> None:
    # Without servers the backend is there (so the client says which servers are missing);
    # an unknown name is an error for both.
    assert _parse_servers("lb1", "empty-be", STAT, servers_state("empty-be")) == {}
    with pytest.raises(module.RuntimeApiError, match="backend 'empty-be' has no server 'web-1'"):
        module.read_server(RecordedApi(), "empty-be", "web-1")
    with pytest.raises(LoadBalancerError, match="no backend named 'nosuch'"):
        _parse_servers("lb1", "nosuch", STAT, servers_state("nosuch"))
    with pytest.raises(module.RuntimeApiError, match="no backend 'nosuch'"):
        module.read_server(RecordedApi(), "nosuch", "web-1")
    assert parse_show_stat(STAT, "nosuch") == {} == parse_show_stat(STAT, "empty-be")
