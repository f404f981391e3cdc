"""The ``gates:`` section: the governance an environment's deployments go through.

Release windows and calendar freezes, approvals (signed, or from a change-management system's
change records), High Risk approvals, break-glass, the decision record of an environment that
cannot deploy with zero downtime, and how each deployment's evidence record is signed. What
each means, and when it is checked, is :mod:`deployer.gates`; here is only what may be written.

Two YAML traps are refused with a message that says what to write: an unquoted time such as
``16:00`` (YAML 1.1 reads it as the number 960) and an unquoted date such as ``2026-12-20``
(read as a date): both must be quoted.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, field_validator, model_validator

from ._base import Model

__all__ = [
    "DAYS",
    "ApprovalsConfig",
    "ApproverConfig",
    "ChangeApiConfig",
    "DecisionRecordConfig",
    "EvidenceConfig",
    "FreezeConfig",
    "GatesConfig",
    "HighRiskConfig",
    "RequesterConfig",
    "WindowConfig",
    "time_zone",
]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$")
_DATE_OR_TIME = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ][0-9]{2}:[0-9]{2})?$")
_ROLE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_FULL = {"monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu",
         "friday": "fri", "saturday": "sat", "sunday": "sun"}


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ValueError saying what is wrong (an unknown name, or no
    time-zone data on this machine)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/London, "
            "America/New_York or UTC (the time-zone data comes with the tzdata package)"
        ) from None


def _clock_time(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60 + 1:
        hh, mm = divmod(value, 60)
        raise ValueError(
            f"YAML reads an unquoted {hh}:{mm:02d} as the number {value}: quote the time, "
            f'e.g. "{hh:02d}:{mm:02d}"'
        )
    if not isinstance(value, str) or not _TIME.match(value.strip()):
        raise ValueError('must be a time of day "HH:MM" (24-hour, quoted), e.g. "09:00"')
    return value.strip()


def _date_or_time(value: object) -> str:
    if isinstance(value, dt.date | dt.datetime):
        text = value.isoformat()
        raise ValueError(
            f'YAML reads an unquoted {text} as a date: quote it, e.g. "{text}"'
        )
    if not isinstance(value, str) or not _DATE_OR_TIME.match(value.strip()):
        raise ValueError('must be a date "YYYY-MM-DD" or a time "YYYY-MM-DDTHH:MM" (quoted)')
    text = value.strip().replace(" ", "T")
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r} is not a real date") from None
    return text


ApprovedKind = Literal["deploy", "rollback"]
WindowedKind = Literal["deploy", "rollback", "known_good_rollback"]


def _deploys() -> list[ApprovedKind]:
    return ["deploy"]


def _deploys_and_rollbacks() -> list[WindowedKind]:
    return ["deploy", "rollback"]


class _Aliased(Model):
    """A span from ``from`` to ``to`` in ``tz`` (gates.timezone when not given)."""

    # `from` is a Python keyword: the field is `start`, written `from` in the file.
    model_config = ConfigDict(populate_by_name=True)

    start: str = Field(alias="from")
    end: str = Field(alias="to")
    tz: str | None = None

    @field_validator("tz")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            time_zone(v)
        return v


class WindowConfig(_Aliased):
    """A weekly release window: on ``days`` (the days it opens), from ``from`` to ``to`` in
    ``tz`` (a window whose end is not after its start ends the next day: it crosses
    midnight)."""

    days: list[str] = Field(default_factory=lambda: list(DAYS), min_length=1)

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, v: object) -> object:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list):
            raise ValueError(f"must be a list of days ({', '.join(DAYS)})")
        days = []
        for day in v:
            name = str(day).strip().lower() if isinstance(day, str) else ""
            name = _FULL.get(name, name)
            if name not in DAYS:
                raise ValueError(f"{day!r} is not a day: use {', '.join(DAYS)}")
            days.append(name)
        return days

    @field_validator("start", "end", mode="before")
    @classmethod
    def _time(cls, v: object) -> str:
        return _clock_time(v)

    @model_validator(mode="after")
    def _not_empty(self) -> WindowConfig:
        if self.start == self.end:
            raise ValueError(f"from and to are both {self.start}: the window would be empty")
        return self


class FreezeConfig(_Aliased):
    """A calendar freeze: no deployment from ``from`` to ``to`` (dates are whole days, both
    included; or times ``YYYY-MM-DDTHH:MM``), in ``tz``."""

    reason: str = Field(min_length=1, max_length=300)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _when(cls, v: object) -> str:
        return _date_or_time(v)

    @model_validator(mode="after")
    def _ordered(self) -> FreezeConfig:
        if self.end < self.start and not (len(self.end) == 10 and self.start.startswith(self.end)):
            raise ValueError(f"to ({self.end}) is before from ({self.start})")
        return self


class ApproverConfig(Model):
    """Someone who approves: a name for people, a minisign public key (the identity), roles."""

    name: str = Field(min_length=1, max_length=80)
    key: Path
    roles: list[str] = Field(min_length=1)

    @field_validator("roles")
    @classmethod
    def _roles(cls, v: list[str]) -> list[str]:
        for role in v:
            if not _ROLE.match(role):
                raise ValueError(f"role {role!r} must be lower-case letters, digits or '_'")
        return v


class RequesterConfig(Model):
    """Someone who requests deployments: a name and a minisign public key."""

    name: str = Field(min_length=1, max_length=80)
    key: Path


class ApprovalsConfig(Model):
    """An approved change before a deployment."""

    # signed: approvals signed by approvers' keys (`deployer approval sign`); change_api: the
    # change record in a change-management system (see change_api), approved and in its window.
    provider: Literal["signed", "change_api"] = "signed"
    # The kinds of deployment that need one (a resume counts as what it acts as).
    required_for: list[ApprovedKind] = Field(default_factory=_deploys)
    # signed: how many approvals by different approvers holding `role`.
    min_approvals: int = Field(1, ge=1, le=10)
    role: str = Field("change", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    approvers: list[ApproverConfig] = Field(default_factory=list)
    # People whose keys may request a deployment (named in the evidence); an unlisted key is
    # named by its id.
    requesters: list[RequesterConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct(self) -> ApprovalsConfig:
        names = [a.name for a in self.approvers]
        if len(set(names)) != len(names):
            raise ValueError("approvers: each name once")
        keys = [str(a.key) for a in self.approvers]
        if len(set(keys)) != len(keys):
            raise ValueError("approvers: each key once (a key is one person's identity)")
        return self


class ChangeApiConfig(Model):
    """A change-management system with a ServiceNow-style Table API: the change record is read
    by its number, and written to (work notes, close code and notes) at the end. Credentials
    come from environment variables or files, never from this file."""

    url: str = Field(pattern=r"^https?://[^/@\s]+(/[^@\s]*)?$")
    table: str = Field("change_request", pattern=r"^[a-z][a-z0-9_]{0,79}$")
    # Basic authentication (user and password), or a bearer token: each from the environment
    # variable or the file named.
    user_env: str | None = None
    user_file: Path | None = None
    password_env: str | None = None
    password_file: Path | None = None
    token_env: str | None = None
    token_file: Path | None = None
    # The change's `approval` field value that means approved, and the `state` values in which
    # it may be implemented (ServiceNow: -1 is Implement).
    approved: str = "approved"
    states: list[str] = Field(default_factory=lambda: ["-1", "implement", "Implement"],
                              min_length=1)
    timeout: float = Field(10.0, gt=0, le=120)

    @field_validator("user_env", "password_env", "token_env")
    @classmethod
    def _variable(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_NAME.match(v):
            raise ValueError(f"{v!r} is not an environment variable name")
        return v

    @model_validator(mode="after")
    def _one_credential(self) -> ChangeApiConfig:
        basic = (self.user_env or self.user_file) and (self.password_env or self.password_file)
        token = self.token_env or self.token_file
        if bool(basic) == bool(token):
            raise ValueError(
                "give either a user and a password (user_env or user_file, and password_env or "
                "password_file) or a token (token_env or token_file): credentials never go in "
                "this file"
            )
        for env, file, what in ((self.user_env, self.user_file, "user"),
                                (self.password_env, self.password_file, "password"),
                                (self.token_env, self.token_file, "token")):
            if env and file:
                raise ValueError(f"{what}: give {what}_env or {what}_file, not both")
        return self


class HighRiskConfig(Model):
    """A High Risk deployment (a release with no rollback path, or one declared so) needs one
    High Risk approval from each of these roles, by different approvers."""

    roles: list[str] = Field(default_factory=lambda: ["service_management", "engineering_management"],
                             min_length=1)


class DecisionRecordConfig(Model):
    """The decision record accepting that this environment cannot deploy with zero downtime."""

    id: str = Field(min_length=1, max_length=80)
    # Where it is: a path (in the repository) or a URL.
    ref: str = Field(min_length=1, max_length=500)


class EvidenceConfig(Model):
    """How each deployment's evidence record is signed and published."""

    # The environment's evidence-signing key (minisign secret key); without one the record is
    # kept unsigned in the journal.
    key: Path | None = None
    # The key's password, from this environment variable, if it is encrypted.
    password_env: str = Field("DEPLOYER_EVIDENCE_KEY_PASSWORD", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Publish each signed record to a store (_evidence/<env>/<uid>.json and .json.minisig).
    publish: bool = True
    # Where: a file:// or s3:// store (an http:// store is read-only); default: the promotion
    # store (promotion.store), else the environment's store.
    store: str | None = Field(None, pattern=r"^(file|s3)://")


class GatesConfig(Model):
    # The time zone of windows and freezes that do not name one.
    timezone: str = "UTC"
    # Weekly release windows; none: deployments are not bound to windows.
    windows: list[WindowConfig] = Field(default_factory=list)
    freezes: list[FreezeConfig] = Field(default_factory=list)
    # Which deployments windows and calendar freezes bind: deploy, rollback, and
    # known_good_rollback (a rollback to a release that ran successfully here: allowed outside
    # windows unless listed, and recorded as such).
    windows_apply_to: list[WindowedKind] = Field(default_factory=_deploys_and_rollbacks)
    # When a window closes (or a freeze, or the change's planned window, begins) while a
    # deployment runs: finish it, pause it at the next safe point (`deployer resume` continues
    # it), or fail it there (rolled back as strategy.on_failure says).
    on_window_close: Literal["finish", "pause", "rollback"] = "pause"
    approvals: ApprovalsConfig | None = None
    change_api: ChangeApiConfig | None = None
    high_risk: HighRiskConfig = HighRiskConfig()
    # The role whose approval a break-glass deployment needs.
    break_glass_role: str = Field("break_glass", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    decision_record: DecisionRecordConfig | None = None
    evidence: EvidenceConfig = EvidenceConfig()

    @model_validator(mode="before")
    @classmethod
    def _no_yaml_on(cls, data: Any) -> Any:
        if isinstance(data, dict) and True in data:
            raise ValueError("YAML reads the key 'on' as true: write on_window_close")
        return data

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        time_zone(v)
        return v

    @model_validator(mode="after")
    def _provider_has_its_api(self) -> GatesConfig:
        if self.approvals is not None and self.approvals.provider == "change_api" \
                and self.change_api is None:
            raise ValueError("approvals.provider change_api needs the change_api section")
        return self

    @property
    def approvers(self) -> list[ApproverConfig]:
        return list(self.approvals.approvers) if self.approvals is not None else []
