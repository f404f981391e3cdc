"""The steady state a game day checks before and after each scenario, and whether the journal
agrees with what is live.

The hypothesis: every node is in service on the load balancer and healthy, on a known release
(``gameday.releases``), one release per fleet (per leg, blue-green, with live traffic on one of
them), and at most ``gameday.error_threshold`` of the requests through the load balancer fail.
:func:`steady_problems` says why an observation breaks it (nothing: it holds);
:func:`journal_differences` says where the journal's last word on each node differs from it.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._errors import DeployerError
from ..adapters.journal import Journal, is_abandoned
from ..adapters.loadbalancer import ServerState
from ..config import EnvironmentConfig
from ..engine.bluegreen import BlueGreen
from ..engine.states import NodePhase, updated_by_resumed
from ..engine.variables import base_vars
from ._load import LoadCount
from ._wired import Wired

__all__ = ["NodeView", "Observation", "hypothesis", "journal_differences", "observe",
           "steady_problems"]

P = NodePhase


@dataclass(frozen=True)
class NodeView:
    """One node as the steady state sees it."""

    name: str
    leg: str | None
    lb: str  # the load balancer's word: UP, MAINT, DRAIN, DOWN ... ("" when not read)
    in_service: bool
    version: str | None
    healthy: bool | None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.name, "leg": self.leg, "load_balancer": self.lb,
                "in_service": self.in_service, "version": self.version, "healthy": self.healthy,
                "detail": self.detail}


@dataclass
class Observation:
    """The environment at one moment, and why it breaks the steady state (if it does)."""

    at: float
    nodes: list[NodeView]
    live_leg: str | None = None
    load: LoadCount | None = None
    problems: list[str] = field(default_factory=list)
    # When it was taken, on the monotonic clock the scenario's times are measured with.
    monotonic: float = field(default_factory=time.monotonic)

    @property
    def holds(self) -> bool:
        return not self.problems

    def release(self, leg: str | None = None) -> str | None:
        """The one release the fleet (or ``leg``) runs, if it runs one."""
        versions = {n.version for n in self.nodes if leg is None or n.leg == leg}
        return next(iter(versions)) if len(versions) == 1 else None

    @property
    def out_of_service(self) -> list[str]:
        return [n.name for n in self.nodes if not n.in_service]

    def to_dict(self) -> dict[str, Any]:
        return {"at": self.at, "holds": self.holds, "problems": self.problems,
                "live_leg": self.live_leg, "nodes": [n.to_dict() for n in self.nodes],
                "load": self.load.to_dict() if self.load else None}


def hypothesis(env_name: str, releases: Sequence[str], threshold: float, *, legs: bool) -> str:
    where = "one release per leg, live traffic on one leg" if legs else "all on one release"
    return (f"every node of {env_name} in service on the load balancer and healthy, on a known "
            f"release ({', '.join(releases)}; {where}), and at most {threshold:.1%} of the "
            "requests through the load balancer failing")


def steady_problems(
    nodes: Sequence[NodeView], *, known: Collection[str], threshold: float,
    load: LoadCount | None = None, min_requests: int = 5, legs: bool = False,
    live_leg: str | None = None, lb_error: str = "",
) -> list[str]:
    """Why these readings break the steady state (empty: it holds)."""
    problems: list[str] = []
    if lb_error:
        problems.append(f"the load balancer cannot be read: {lb_error}")
    for n in nodes:
        if not lb_error and not n.in_service:
            problems.append(f"{n.name} is out of the load balancer ({n.lb or 'not found'})")
        if n.healthy is not True:
            problems.append(f"{n.name} is not healthy ({n.detail or 'no answer'})")
        elif n.version not in known:
            problems.append(f"{n.name} runs {n.version or 'nothing'}, not a known release "
                            f"({', '.join(known)})")
    groups = sorted({n.leg for n in nodes}, key=lambda g: g or "") if legs else [None]
    for group in groups:
        members = [n for n in nodes if not legs or n.leg == group]
        versions = {n.version for n in members if n.version}
        if len(versions) > 1:
            where = f"the {group} leg" if group else "the fleet"
            problems.append(f"{where} runs several releases: " + ", ".join(
                f"{n.name} {n.version}" for n in members))
    if legs and live_leg is None:
        problems.append("live traffic is not on one of the legs")
    if load is not None:
        if load.sent < min_requests:
            problems.append(f"too few requests through the load balancer to judge "
                            f"({load.sent} in the window, at least {min_requests})")
        elif load.share > threshold:
            problems.append(f"{load.failed} of {load.sent} requests through the load balancer "
                            f"failed ({load.share:.1%} > {threshold:.1%}): "
                            + ", ".join(f"{k} x{v}" for k, v in load.errors.most_common(3)))
    return problems


def _health(env: EnvironmentConfig, address: str) -> tuple[bool | None, str | None, str]:
    """The node's health check as the smoke check reads it, from this machine."""
    health = env.app.health
    url = f"http://{address}:{env.app.port}{health.path}"
    try:
        with urllib.request.urlopen(url, timeout=health.request_timeout) as resp:
            status, body = int(resp.status), resp.read()
    except urllib.error.HTTPError as exc:
        status, body = int(exc.code), exc.read()
    except (OSError, ValueError) as exc:
        return False, None, f"{url}: {getattr(exc, 'reason', exc)}"
    version: str | None = None
    if health.version_field:
        try:
            data = json.loads(body)
            version = str(data.get(health.version_field)) if isinstance(data, dict) else None
        except ValueError:
            version = None
    ok = status == health.expect_status
    return ok, version, "" if ok else f"{url} answered {status}"


def observe(wired: Wired, *, known: Collection[str], threshold: float,
            load: LoadCount | None = None, min_requests: int = 5) -> Observation:
    """Read the environment: every backend's servers, every node's release and health (from
    this machine when the config runs smoke checks from the controller, else through the probe
    playbook on the nodes), the live leg; judge the steady state on that and ``load``."""
    env = wired.env
    legs = len(wired.fleets) > 1 or "" not in wired.fleets
    states: dict[str, ServerState] = {}
    lb_error = ""
    views: list[NodeView] = []
    for leg, fleet in wired.fleets.items():
        try:
            states.update(fleet.lb_states())
        except DeployerError as exc:
            lb_error = lb_error or str(exc)
        if env.app.health.run_from == "controller":
            read = {n.name: _health(env, n.app_host) for n in fleet.nodes}
        else:
            facts, _ = fleet.survey("probe.yml", base_vars(fleet.env, backend=fleet.backend),
                                    lambda: False)
            read = {name: (f.healthy, f.current or None, f.health_detail) for name, f in facts.items()}
        for node in fleet.nodes:
            s = states.get(node.lb_server)
            healthy, version, detail = read.get(node.name, (None, None, "not read"))
            views.append(NodeView(
                name=node.name, leg=leg or None, lb=s.label if s else "",
                in_service=bool(s and s.in_service), version=version, healthy=healthy,
                detail=detail,
            ))
    live: str | None = None
    if isinstance(wired.strategy, BlueGreen):
        try:
            live = wired.strategy.live_leg()
        except DeployerError:
            live = None
    problems = steady_problems(views, known=known, threshold=threshold, load=load,
                               min_requests=min_requests, legs=legs, live_leg=live,
                               lb_error=lb_error)
    return Observation(at=time.time(), nodes=views, live_leg=live, load=load, problems=problems)


# -- the journal's word --------------------------------------------------------------------

# A node's phase that says which release it runs: its target (done) or what it had.
_ON_TARGET = frozenset({P.DONE.value})
_ON_FROM = frozenset({P.REVERTED.value, P.SKIPPED.value, P.STAGED.value, P.PENDING.value,
                      "rejoined", "left_alone"})
# Phases that leave it between the two (a node caught mid-change, or failed).
_EITHER = frozenset({P.DRAINING.value, P.DEPLOYING.value, P.SMOKE.value, P.REJOINING.value,
                     P.REVERTING.value, P.FAILED.value, "out_of_service"})
_SWITCH = re.compile(r"from (\S+) to (\S+)")

# How many of the environment's latest deployments are read, at most.
LOOKBACK = 200


def journal_claims(journal: Journal, env: str, nodes: Collection[str]) -> tuple[
        dict[str, tuple[set[str], str]], str | None, list[str]]:
    """What the journal last said of each node (the releases it may run, and where it said so),
    of the live leg, and which deployments it shows as still running with their process gone."""
    claims: dict[str, tuple[set[str], str]] = {}
    live: str | None = None
    live_known = False
    abandoned = []
    for record in journal.deployments(env, limit=LOOKBACK):
        if is_abandoned(record):
            abandoned.append(f"deployment {record.id} ({record.kind} {record.version}) is "
                             "recorded as running, and its process is gone")
        for ev in reversed(journal.node_events(record.id)):
            where = f"{ev.phase} in deployment {record.id}"
            if ev.node == "live traffic" and not live_known:
                m = _SWITCH.search(ev.detail)
                if m:
                    live, live_known = m.group(2), True
                continue
            if ev.node not in nodes or ev.node in claims:
                continue
            versions: set[str] = set()
            if ev.to_version and (ev.phase in _ON_TARGET or (
                    ev.phase == P.SKIPPED.value and updated_by_resumed(ev.detail))):
                versions = {ev.to_version}
            elif ev.phase in _ON_FROM and ev.from_version:
                versions = {ev.from_version}
            elif ev.phase in _EITHER:
                versions = {v for v in (ev.from_version, ev.to_version) if v}
            if versions:
                claims[ev.node] = (versions, where)
        if len(claims) == len(nodes) and live_known:
            break
    return claims, live, abandoned


def journal_differences(
    claims: Mapping[str, tuple[set[str], str]], live_claim: str | None,
    abandoned: Sequence[str], observed: Observation, *, left_out: Collection[str] = (),
) -> list[str]:
    """Where the journal's last word differs from the live state (empty: consistent)."""
    diffs = list(abandoned)
    for n in observed.nodes:
        claim = claims.get(n.name)
        if claim is not None and n.version is not None and n.version not in claim[0]:
            diffs.append(f"{n.name}: the journal says {' or '.join(sorted(claim[0]))} "
                         f"({claim[1]}), the node runs {n.version}")
        if not n.in_service and n.lb and n.name not in left_out:
            diffs.append(f"{n.name} is out of the load balancer ({n.lb}) and the journal does not "
                         "say that deployer left it out")
    if live_claim is not None and observed.live_leg is not None and live_claim != observed.live_leg:
        diffs.append(f"the journal says live traffic went to {live_claim}; it is on "
                     f"{observed.live_leg}")
    return diffs
