"""The sections of an environment that its runner (``deployer agent``) reads: ``pointer:`` (where
the desired version is written, and the status is published beside it), ``agent:`` (how often
it looks) and ``promotion:`` (the environment before this one on the path to live, the keys,
and where promotion records are kept)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ._base import NAME, Model

__all__ = [
    "AgentConfig",
    "FilePointerConfig",
    "HttpPointerConfig",
    "PointerConfig",
    "PromotionConfig",
    "SsmPointerConfig",
]

# An SSM parameter name with its hierarchy: /a/b/c (AWS's characters).
_SSM_NAME = re.compile(r"^/[A-Za-z0-9_.\-]+(?:/[A-Za-z0-9_.\-]+)*$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class _Pointer(Model):
    """What every kind of pointer shares."""

    # The runner deploys only a request signed by a requester's key (gates.approvals.requesters;
    # `deployer pointer set --requester-key KEY`): so the requester is known by key, and an
    # approver may not approve their own request.
    require_signed: bool = False


class FilePointerConfig(_Pointer):
    """The desired version in a file (on a shared or local disk the runner reads)."""

    kind: Literal["file"]
    # The file holding the desired version; relative to the config file.
    path: Path
    # Where the agent publishes its status (default: <path's stem>.status.json beside it).
    status_path: Path | None = None

    @property
    def status_file(self) -> Path:
        return self.status_path or self.path.with_name(f"{self.path.stem}.status.json")

    @property
    def where(self) -> str:
        return str(self.path)


class HttpPointerConfig(_Pointer):
    """The desired version at an HTTP(S) URL: read with a conditional GET (ETag), written with
    PUT; the status is PUT to ``status_url``."""

    kind: Literal["http"]
    url: str
    # Default: the pointer's URL with ".status" appended.
    status_url: str | None = None
    # An environment variable holding a bearer token sent with every request (never the token
    # itself in this file).
    token_env: str | None = None
    timeout: float = Field(10.0, gt=0, le=300)

    @field_validator("url", "status_url")
    @classmethod
    def _http(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("token_env")
    @classmethod
    def _env_var(cls, v: str | None) -> str | None:
        if v is not None and not _ENV_VAR.match(v):
            raise ValueError("must be the name of an environment variable")
        return v

    @property
    def status(self) -> str:
        return self.status_url or f"{self.url}.status"

    @property
    def where(self) -> str:
        return self.url


class SsmPointerConfig(_Pointer):
    """The desired version in an AWS SSM Parameter Store parameter (a String); the status in
    another. A requester needs only ssm:PutParameter on the one and ssm:GetParameter on both
    (see the README's IAM policy)."""

    kind: Literal["ssm"]
    parameter: str
    # Default: a parameter named "status" beside it (/deployer/prod/version -> /deployer/prod/status).
    status_parameter: str | None = None
    region: str | None = None
    # Another endpoint than AWS's (a VPC endpoint; moto on loopback in the tests and the lab).
    endpoint_url: str | None = None
    # Credentials: the standard AWS chain (instance role, environment, ~/.aws), or a profile,
    # read from credentials_file when given (relative to the config file).
    profile: str | None = None
    credentials_file: Path | None = None

    @field_validator("parameter", "status_parameter")
    @classmethod
    def _ssm_name(cls, v: str | None) -> str | None:
        if v is not None and (not _SSM_NAME.match(v) or len(v) > 1011):
            raise ValueError("must be an SSM parameter name such as /deployer/prod/version")
        return v

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> SsmPointerConfig:
        if self.status == self.parameter:
            raise ValueError(
                f"the status parameter must differ from the pointer's ({self.parameter}): set "
                "status_parameter"
            )
        return self

    @property
    def status(self) -> str:
        return self.status_parameter or self.parameter.rsplit("/", 1)[0] + "/status"

    @property
    def where(self) -> str:
        return f"ssm:{self.parameter}"


PointerConfig = Annotated[
    FilePointerConfig | HttpPointerConfig | SsmPointerConfig, Field(discriminator="kind")
]


class AgentConfig(Model):
    """How the environment's runner polls its pointer."""

    # Seconds between two looks at the pointer and the fleet.
    interval: float = Field(30.0, ge=1, le=86400)
    # Each wait is the interval times a random factor in [1 - jitter, 1 + jitter], so runners
    # started together do not poll together.
    jitter: float = Field(0.1, ge=0, le=0.5)
    # The fleet runs something else than the pointer asked (someone deployed by hand): the
    # agent publishes it as drift; with true it deploys the pointer's version again.
    correct_drift: bool = False


class PromotionConfig(Model):
    """Signed promotion records: what this environment requires of the one before it, and how
    it records its own successful deployments for the one after."""

    # The environment before this one on the path to live (null: the first). A release is
    # deployed here only if that environment's record for its digest verifies.
    after: str | None = None
    # That environment's public key(s) (minisign): all this environment holds of it.
    trusted_keys: list[Path] = Field(default_factory=list)
    # This environment's secret key (minisign), to sign its own records (password, if any, from
    # $DEPLOYER_KEY_PASSWORD). Null: this environment records nothing.
    signing_key: Path | None = None
    # Where records are kept, immutably: file:///dir or s3://bucket/prefix.
    store: str

    @field_validator("after")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and not NAME.match(v):
            raise ValueError("must be an environment name (lower-case letters, digits, '-' or '_')")
        return v

    @field_validator("store")
    @classmethod
    def _writable_store(cls, v: str) -> str:
        if not re.match(r"^(file:///|s3://[^/\s]+)", v):
            raise ValueError("must be a writable store: file:///dir or s3://bucket/prefix")
        return v

    @model_validator(mode="after")
    def _keys_for_after(self) -> PromotionConfig:
        if self.after is not None and not self.trusted_keys:
            raise ValueError(
                f"after: {self.after} needs trusted_keys: the public key(s) {self.after} signs "
                "its promotion records with"
            )
        if self.after is None and self.trusted_keys:
            raise ValueError("trusted_keys are the keys of the environment named by 'after'")
        return self
