"""What a game day needs of an environment wired for one command (the CLI's wiring, handed
in: the game day never picks adapters itself)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..adapters.journal import Journal
from ..adapters.lock import DeploymentLock
from ..config import Config, EnvironmentConfig
from ..engine.events import Subscriber
from ..engine.fleet import Fleet
from ..engine.lifecycle import Lifecycle
from ..engine.safepoints import Check
from ..engine.strategy import Strategy
from ..gates import GateRequest, Gates

__all__ = ["Wired", "Wiring"]


class Wired(Protocol):
    """One environment, wired: its lifecycle, fleets (one per blue-green leg), journal, lock and
    governance gates."""

    @property
    def name(self) -> str: ...

    @property
    def env(self) -> EnvironmentConfig: ...

    @property
    def journal(self) -> Journal: ...

    @property
    def lock(self) -> DeploymentLock: ...

    @property
    def fleets(self) -> dict[str, Fleet]: ...

    @property
    def strategy(self) -> Strategy: ...

    @property
    def lifecycle(self) -> Lifecycle: ...

    @property
    def gates(self) -> Gates | None: ...

    def close(self) -> None: ...


class Wiring(Protocol):
    """Wires an environment of a config, with subscribers and safe-point checks; ``gates``:
    what a command that deploys brings to the environment's governance gates (None: a command
    that only reads)."""

    def __call__(self, config: Config, env_name: str, *, subscribers: Sequence[Subscriber] = (),
                 checks: Sequence[Check] = (), gates: GateRequest | None = None) -> Wired: ...
