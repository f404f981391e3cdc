"""Which ports a lab binds: given, the default lab's documented ones, or free ones it records."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pytest

from deployer import UsageError
from deployer.lab import Lab, LabSpec
from deployer.lab._procs import free_ports, port_is_free
from deployer.lab._spec import DEFAULT_PORTS, PortPicker
from deployer.lab._state import LabState

DEFAULTS = set(DEFAULT_PORTS.values())


def picker(start: int) -> tuple[list[tuple[int, set[int]]], PortPicker]:
    """A port picker handing out start, start+1, ... (skipping what it must avoid), and its calls."""
    calls: list[tuple[int, set[int]]] = []

    def pick(count: int, avoid: Collection[int]) -> list[int]:
        calls.append((count, set(avoid)))
        ports = [p for p in range(start, start + count + len(avoid)) if p not in avoid]
        return ports[:count]

    return calls, pick


def addresses(spec: LabSpec) -> dict[str, str | None]:
    return {f: getattr(spec, f) for f in DEFAULT_PORTS}


def test_a_spec_leaves_its_ports_unchosen_until_told() -> None:
    spec = LabSpec(legs=True, prometheus=True)
    assert addresses(spec) == dict.fromkeys(DEFAULT_PORTS)
    assert sorted(spec.unchosen) == sorted(DEFAULT_PORTS)
    # Only the addresses the lab binds: no preview without legs, no Prometheus unless asked.
    assert sorted(LabSpec().unchosen) == ["frontend", "metrics", "store"]
    with pytest.raises(ValueError, match="no address chosen yet"):
        _ = spec.metrics_address


def test_the_default_lab_takes_the_documented_ports() -> None:
    calls, pick = picker(40000)
    spec = LabSpec(legs=True, prometheus=True).with_ports(defaults=True, pick=pick)
    assert addresses(spec) == DEFAULT_PORTS and calls == []
    plain = LabSpec().with_ports(defaults=True, pick=pick)
    assert (plain.frontend, plain.store, plain.metrics, plain.preview, plain.prometheus_address) == (
        "127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8404", None, None)


def test_any_other_lab_picks_free_ports_besides_those_it_was_given() -> None:
    calls, pick = picker(40000)
    spec = LabSpec(frontend="127.0.0.1:40001", legs=True, prometheus=True)
    chosen = spec.with_ports(defaults=False, pick=pick)
    assert calls == [(4, {40001})]
    assert chosen.frontend == "127.0.0.1:40001"
    picked = {chosen.store, chosen.metrics, chosen.preview, chosen.prometheus_address}
    assert picked == {"127.0.0.1:40000", "127.0.0.1:40002", "127.0.0.1:40003", "127.0.0.1:40004"}
    assert not picked & DEFAULTS


def test_a_later_up_keeps_the_recorded_ports_unless_given_others() -> None:
    _, pick = picker(41000)
    recorded = LabSpec(legs=True, prometheus=True).with_ports(defaults=False, pick=pick)
    again = LabSpec(legs=True, prometheus=True).with_ports_of(recorded)
    assert again == recorded and again.unchosen == []
    assert again.shape() == recorded.shape()
    moved = LabSpec(legs=True, prometheus=True, metrics="127.0.0.1:42000").with_ports_of(recorded)
    assert moved.metrics == "127.0.0.1:42000" and moved.frontend == recorded.frontend
    assert moved.shape() != recorded.shape()


def test_an_address_the_lab_does_not_bind_is_no_part_of_its_shape() -> None:
    # Labs recorded before ports were chosen had a preview address even without legs.
    old = LabSpec.from_dict({"nodes": 3, "net": "127.0.1", "frontend": "127.0.0.1:8080",
                             "store": "127.0.0.1:8081", "preview": "127.0.0.1:8082",
                             "metrics": "127.0.0.1:8404", "prometheus": None})
    now = LabSpec().with_ports_of(old)
    assert now.preview is None and now.shape() == old.shape()


def test_a_recorded_prometheus_address_is_read_from_the_older_record() -> None:
    old = LabSpec.from_dict({"frontend": "127.0.0.1:8080", "store": "127.0.0.1:8081",
                             "metrics": "127.0.0.1:8404", "prometheus": "127.0.0.1:9191"})
    assert old.prometheus and old.prometheus_address == "127.0.0.1:9191"
    assert old.prometheus_listen == ("127.0.0.1", 9191)
    assert LabSpec.from_dict(LabSpec(prometheus=True).to_dict()).prometheus


def test_bad_addresses_are_refused_naming_the_flag() -> None:
    with pytest.raises(UsageError, match="--metrics and --prometheus-address must differ"):
        LabSpec(metrics="127.0.0.1:9000", prometheus=True, prometheus_address="127.0.0.1:9000")
    with pytest.raises(UsageError, match="--prometheus-address: only with --prometheus"):
        LabSpec(prometheus_address="127.0.0.1:9000")
    with pytest.raises(UsageError, match=r"--store: 10\.0\.0\.1 is not a loopback address"):
        LabSpec(store="10.0.0.1:80")


def test_only_the_default_directory_on_the_default_network_takes_the_default_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("DEPLOYER_LAB_DIR", str(tmp_path / "elsewhere"))
    standard = Lab(tmp_path / "data" / "deployer" / "lab")

    def chosen(the_lab: Lab, spec: LabSpec, recorded: LabSpec | None = None) -> LabSpec:
        state = LabState(dir=the_lab.dir, spec=recorded) if recorded else None
        return the_lab._choose_ports(spec, state)

    assert addresses(chosen(standard, LabSpec(legs=True))) == {
        **DEFAULT_PORTS, "prometheus_address": None}
    for other, spec in ((standard, LabSpec(net="127.0.9")),  # its own network
                        (Lab(tmp_path / "elsewhere"), LabSpec()),  # its own directory
                        (Lab(tmp_path / "x"), LabSpec(legs=True, prometheus=True))):
        picked = {v for v in addresses(chosen(other, spec)).values() if v}
        assert len(picked) == len(spec.unchosen) and not picked & DEFAULTS, (other.dir, picked)
    # What a lab recorded is kept.
    recorded = chosen(Lab(tmp_path / "x"), LabSpec())
    assert chosen(Lab(tmp_path / "x"), LabSpec(), recorded) == recorded


def test_free_ports_are_distinct_free_and_avoid_what_they_must() -> None:
    first = free_ports(3)
    ports = free_ports(20, avoid=first)
    assert len(set(ports)) == 20 and not set(ports) & set(first)
    assert all(port_is_free("127.0.0.1", p) for p in ports)
