"""What the gates' unit tests share: a deployment of the unit world (see conftest) with the
environment's gates registered as the CLI's wiring registers them, a clock the test moves by
hand, the emergency freeze kept beside the lock by the real lock program, and approvers' keys.
Fakes only at the seams: the runner, the load balancer, the change API."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import Deployment, build

from deployer import load_config
from deployer.adapters.freeze import EnvironmentFreeze
from deployer.adapters.lock import EnvironmentLock, state_dir_lock
from deployer.artefacts import KeyPair, generate_keypair, load_secret_key
from deployer.cli._wiring import release_verifier
from deployer.config import GatesConfig
from deployer.gates import GateRequest, Gates, build_gates
from deployer.gates.approvals import Approval, make_approval, requester_from_key
from deployer.gates.changes import ChangeProvider
from deployer.gates.evidence import EvidenceSigner
from deployer.testing import ReplayRunner, RunScript

# Tuesday 8 December 2026, 15:50 UTC: ten minutes before the end of a 09:00-16:00 window.
TUESDAY_1550 = 1_796_745_000.0
HOUR = 3600.0


class Clock:
    """Wall-clock time that moves only when the test says."""

    def __init__(self, t: float = TUESDAY_1550) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class People:
    """Approvers (sam: change and service management; eve: change and engineering
    management; olu: break-glass) and a requester (ci), each a minisign key pair."""

    root: Path
    keys: dict[str, KeyPair]

    @classmethod
    def make(cls, root: Path) -> People:
        return cls(root, {n: generate_keypair(root / "people", n) for n in ("sam", "eve", "olu", "ci")})

    def approvers(self) -> list[dict[str, Any]]:
        roles = {"sam": ["change", "service_management"], "eve": ["change", "engineering_management"],
                 "olu": ["break_glass"]}
        return [{"name": n, "key": str(self.keys[n].public_path), "roles": r} for n, r in roles.items()]

    def requester(self, name: str = "ci") -> GateRequest:
        requester, secret = requester_from_key(self.keys[name].secret_path, {})
        return GateRequest(requester=requester, requester_secret=secret)

    def approve(self, name: str, env: Any, version: str, *, now: float, expires_in: float = 8 * HOUR,
                change: str | None = None, high_risk: bool = False, break_glass: bool = False,
                requester: str | None = None) -> Approval:
        sha256 = release_verifier(env)(version).sha256
        document, _ = make_approval(
            key_path=self.keys[name].secret_path, app="hello", version=version, sha256=sha256,
            environment="lab", change=change, expires=now + expires_in, high_risk=high_risk,
            break_glass=break_glass, requester=requester, now=now)
        return Approval(f"{name}.approval", document["approval"], document["signature"].encode())


@dataclass
class Gated:
    """A deployment with its gates."""

    d: Deployment
    gates: Gates
    clock: Clock
    freeze: EnvironmentFreeze
    said: list[str]

    def deploy(self, version: str, **kw: Any) -> Any:
        return self.d.deploy(version, **kw)


def gated(
    config: Path, scripts: Sequence[RunScript] | ReplayRunner, *, gates: dict[str, Any],
    request: GateRequest | None = None, clock: Clock | None = None,
    change_provider: ChangeProvider | None = None, signer_key: Path | None = None,
    lock: EnvironmentLock | None = None, group_sizes: dict[str, int] | None = None,
    **build_kw: Any,
) -> Gated:
    """A deployment of the world's ``lab`` with ``gates`` (the gates: section, as data)."""
    cfg = load_config(config)
    lock = lock or state_dir_lock(cfg.state_dir, "lab")
    gates_config = GatesConfig.model_validate(gates)
    d = build(config, scripts, lock=lock, env_update={"gates": gates_config}, **build_kw)
    clock = clock or Clock()
    d.lifecycle.clock = clock
    assert isinstance(lock, EnvironmentLock)
    freeze = EnvironmentFreeze(lock.host, "lab", lock=lock)
    said: list[str] = []
    nodes = {n.name: (leg or None) for leg, f in d.fleets.items() for n in f.nodes}
    signer = EvidenceSigner(load_secret_key(signer_key), signer_key) if signer_key else None
    the_gates = build_gates(
        env_name="lab", env=d.env, journal=d.journal, freeze=freeze,
        request=request or GateRequest(), nodes=nodes,
        group_sizes=group_sizes or {leg: len(f.nodes) for leg, f in d.fleets.items()},
        actor="tester@here", change_provider=change_provider, signer=signer, say=said.append,
        clock=clock,
    )
    d.lifecycle.checks.extend(the_gates.checks)
    d.lifecycle.subscribers.extend(the_gates.subscribers)
    return Gated(d, the_gates, clock, freeze, said)


def with_approvals(request: GateRequest, *approvals: Approval, **fields: Any) -> GateRequest:
    return dataclasses.replace(request, approvals=tuple(approvals), **fields)


# Every day, 09:00 to 16:00 UTC.
DAY_WINDOW = {"windows": [{"from": "09:00", "to": "16:00"}]}


def at_batch(d: Deployment, index: int, action: Callable[[], None]) -> None:
    """Do ``action`` as batch ``index`` starts."""
    d.recorder.after_batch(index, action)


__all__ = ["DAY_WINDOW", "HOUR", "TUESDAY_1550", "Clock", "Gated", "People", "at_batch", "gated",
           "with_approvals"]
