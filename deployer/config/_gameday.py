"""The ``gameday:`` section: whether game days may inject faults into an environment, and what
they may use there (see :mod:`deployer.gameday`).

Off unless asked: a game day drains nodes, cuts their network, fills their disks and kills
deploying processes, which belongs on a lab or a staging environment, never on production by
accident. ``deployer gameday run`` refuses an environment without ``gameday: {allowed: true}``.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from .._versions import VERSION_PATTERN
from ._base import Model

__all__ = ["GameDayConfig"]

_PERCENT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*%\s*$")


class GameDayConfig(Model):
    """What game days may do to an environment."""

    # Game days may run here (their faults are real: cut traffic, full disks, killed processes).
    allowed: bool = False
    # Known good releases a rehearsal may deploy, back and forth (at least two: the fleet runs
    # one, a rehearsal deploys another). The steady state is every node on one of them.
    releases: list[str] = Field(default_factory=list)
    # The service as users reach it, through the load balancer (default: analysis.target_url).
    load_url: str | None = Field(None, pattern=r"^https?://")
    # Requests per second the load generator sends (at most; --rate overrides it).
    rate: float = Field(20.0, gt=0, le=1000)
    # The steady state allows at most this share of failed requests through the load balancer.
    error_threshold: float = 0.01
    # The application's fault file on each node (the sample service's: /etc/<app>/fault), for
    # the faults the application plays itself (unhealthy, crash, errors).
    fault_file: str | None = None
    # A request the application holds open for {ms} milliseconds (the sample service's /slow),
    # for long-lived connections during the slow-drain scenario.
    slow_path: str = "/slow?ms={ms}"
    # The directory behind the store's URL, for the tampered-artefact scenario when the store is
    # served over HTTP (a file:// store needs none). Relative to the config file.
    store_dir: str | None = None
    # How long the steady state may take to come back after a scenario (its fault undone, the
    # fixes its outcome names run) before the scenario counts as unsafe, in seconds.
    restore_timeout: float = Field(60.0, gt=0, le=3600)

    @field_validator("releases")
    @classmethod
    def _versions(cls, v: list[str]) -> list[str]:
        for version in v:
            if not VERSION_PATTERN.match(version) or ".." in version:
                raise ValueError(f"{version!r} is not a valid release version")
        if len(set(v)) != len(v):
            raise ValueError("lists a release twice")
        return v

    @field_validator("error_threshold", mode="before")
    @classmethod
    def _share(cls, v: object) -> object:
        if isinstance(v, str):
            m = _PERCENT.match(v)
            if m is None:
                raise ValueError("must be a percentage such as 1% or 0.5%")
            return float(m.group(1)) / 100
        if isinstance(v, int | float) and not isinstance(v, bool):
            raise ValueError("write it as a percentage, e.g. 1% (a bare number is ambiguous)")
        return v

    @field_validator("fault_file")
    @classmethod
    def _absolute(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or any(c in v for c in "\0\n'")):
            raise ValueError("must be an absolute path on the nodes")
        return v

    @field_validator("slow_path")
    @classmethod
    def _slow(cls, v: str) -> str:
        if not v.startswith("/") or "{ms}" not in v:
            raise ValueError("must be a URL path starting with '/' holding {ms}, e.g. /slow?ms={ms}")
        return v

    @model_validator(mode="after")
    def _bounded(self) -> GameDayConfig:
        if not 0 < self.error_threshold < 1:
            raise ValueError("error_threshold must be above 0% and below 100%")
        return self
