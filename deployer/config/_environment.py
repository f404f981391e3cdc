"""An environment (its fleet, release, load balancer, strategy, analysis and lock; its
pointer, agent and promotion for its runner), and the whole file: ``state_dir``, ``runner``
and ``environments``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .._errors import ConfigError
from ..analysis._config import AnalysisConfig
from ._agent import AgentConfig, PointerConfig, PromotionConfig
from ._app import AppConfig, StoreConfig
from ._base import NAME, Model
from ._gameday import GameDayConfig
from ._gates import GatesConfig
from ._load_balancer import LoadBalancerConfig
from ._lock import LockConfig
from ._strategy import RollingStrategy, StrategyConfig

__all__ = ["Config", "EnvironmentConfig", "RunnerConfig"]


class EnvironmentConfig(Model):
    inventory: Path
    # The inventory group holding the nodes to deploy to.
    group: str = "all"
    app: AppConfig
    store: StoreConfig
    # Public keys (minisign format) whose signatures this environment accepts.
    trusted_keys: list[Path] = Field(min_length=1)
    load_balancer: LoadBalancerConfig
    strategy: StrategyConfig = Field(default_factory=RollingStrategy)
    # Soak analysis after the canary or each batch (deployer.analysis); null: none.
    analysis: AnalysisConfig | None = None
    # Extra variables passed to every playbook run (e.g. ansible_python_interpreter).
    extra_vars: dict[str, Any] = Field(default_factory=dict)
    # The deployment lock: where it is kept and its lease (see LockConfig).
    lock: LockConfig = LockConfig()
    # Where the version to run is written, and the runner's status published (deployer agent).
    pointer: PointerConfig | None = None
    # How the runner polls its pointer.
    agent: AgentConfig = AgentConfig()
    # The environment before this one on the path to live, and this one's promotion records.
    promotion: PromotionConfig | None = None
    # Game days: off unless allowed here (see GameDayConfig).
    gameday: GameDayConfig = GameDayConfig()
    # Governance: release windows, freezes, approvals, change records, decision records and
    # the signing of evidence records (see GatesConfig and deployer.gates).
    gates: GatesConfig = GatesConfig()

    @property
    def lock_at(self) -> Literal["load_balancer", "state_dir"]:
        """Where the lock is kept: as configured, else on the load balancer's host when the
        config names one."""
        if self.lock.at is not None:
            return self.lock.at
        lb = self.load_balancer
        return "load_balancer" if lb.host is not None or lb.hosts is not None else "state_dir"

    @property
    def lock_host(self) -> str:
        """The host keeping a load-balancer lock (lock.host, else the first load balancer)."""
        return self.lock.host or self.load_balancer.all_hosts[0]

    @model_validator(mode="after")
    def _window_rollback_needs_rollback(self) -> EnvironmentConfig:
        if self.gates.on_window_close == "rollback" and self.strategy.on_failure != "rollback":
            raise ValueError(
                "gates.on_window_close: rollback fails the deployment where the window closes, "
                "and the updated nodes go back as strategy.on_failure says: it needs "
                "strategy.on_failure: rollback (or on_window_close: pause or finish)"
            )
        return self

    @model_validator(mode="after")
    def _signed_pointer_needs_requesters(self) -> EnvironmentConfig:
        if self.pointer is not None and self.pointer.require_signed and not (
                self.gates.approvals is not None and self.gates.approvals.requesters):
            raise ValueError(
                "pointer.require_signed needs the requesters' public keys "
                "(gates.approvals.requesters: [{name, key}]) to know who signed a request"
            )
        return self

    @model_validator(mode="after")
    def _blue_green_needs_a_legs_map(self) -> EnvironmentConfig:
        if self.strategy.kind == "blue-green" and not self.load_balancer.legs_map:
            raise ValueError(
                "strategy kind blue-green needs load_balancer.legs_map (the HAProxy map that "
                "names the live backend)"
            )
        return self


_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RunnerConfig(Model):
    """How playbook runs are kept (see deployer.adapters.run_dirs and .redaction)."""

    # Run directories (what ansible-runner kept of each playbook run: events, output) kept under
    # <state_dir>/runs, the most recently finished first; older ones are removed after each run.
    # 0: none is kept.
    keep_runs: int = Field(20, ge=0, le=10000, strict=True)
    # Variables (extra variables at any depth, or environment variables) whose values are secret
    # though their names do not say so; names with SECRET, TOKEN, PASSWORD, KEY, ... are anyway.
    secret_vars: list[str] = Field(default_factory=list)

    @field_validator("secret_vars")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _VARIABLE_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a variable name (letters, digits and '_', not starting "
                    "with a digit)"
                )
        return v


class Config(Model):
    # Where the journal, locks and run directories live; relative to the config file.
    state_dir: Path = Path(".deployer")
    environments: dict[str, EnvironmentConfig]
    runner: RunnerConfig = RunnerConfig()
    # The file this was loaded from (set by load_config).
    source: Path | None = None

    @model_validator(mode="after")
    def _env_names(self) -> Config:
        for name in self.environments:
            if not NAME.match(name):
                raise ValueError(f"environment name {name!r} must be lower-case letters, digits, '-' or '_'")
        if not self.environments:
            raise ValueError("at least one environment is required")
        for name, env in self.environments.items():
            if env.promotion is not None and env.promotion.after == name:
                raise ValueError(f"environment {name!r}: promotion.after names the environment itself")
        return self

    def environment(self, name: str) -> EnvironmentConfig:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            raise ConfigError(
                f"no environment named {name!r} (known: {known})",
                file=str(self.source) if self.source else None,
                field="environments",
            ) from None
