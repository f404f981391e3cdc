"""What is deployed and how it runs (``app:``), and where releases come from (``store:``)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator

from ._base import NAME, Model, parse_size

__all__ = ["AppConfig", "HealthCheckConfig", "StoreConfig"]


class HealthCheckConfig(Model):
    """The smoke check run on each node after activation (the application contract)."""

    path: str = "/health"
    expect_status: int = Field(200, ge=100, le=599)
    # JSON field whose value must equal the release version; null disables the version check.
    version_field: str | None = "version"
    # Seconds one request may take before it counts as failed.
    request_timeout: float = Field(2.0, gt=0, le=60)
    # Seconds a node has to become healthy after a restart.
    deadline: float = Field(30.0, gt=0, le=3600)
    # Seconds between attempts while waiting.
    interval: float = Field(0.2, gt=0, le=60)
    # A healthy answer slower than this fails the check.
    max_latency_ms: int = Field(2000, gt=0)
    # Where the check runs: on the node itself, or on the controller when it reaches the app's
    # address and port (then no remote run is needed while the node is out of the LB).
    run_from: Literal["node", "controller"] = "node"

    @field_validator("path")
    @classmethod
    def _path_is_absolute(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() for c in v):
            raise ValueError("must be a URL path starting with '/' and without spaces")
        return v


class AppConfig(Model):
    """What is deployed and how it runs on a node."""

    name: str
    entry_point: str = "bin/run"
    port: int = Field(8000, ge=1, le=65535)
    # Where releases live on each node; defaults to /opt/<name>.
    base_dir: str | None = None
    keep_releases: int = Field(5, ge=2, le=100)
    supervisor: Literal["supervisord", "systemd"] = "supervisord"
    health: HealthCheckConfig = HealthCheckConfig()
    # Largest tarball a node accepts, and largest unpacked size.
    max_artefact_size: Annotated[int, Field(gt=0)] = 512 * 1024**2

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not NAME.match(v):
            raise ValueError("must be lower-case letters, digits, '-' or '_', starting with a letter")
        return v

    @field_validator("entry_point")
    @classmethod
    def _entry_point_relative(cls, v: str) -> str:
        parts = v.split("/")
        if v.startswith("/") or ".." in parts or not v or any(c.isspace() for c in v):
            raise ValueError("must be a relative path inside the release, without '..' or spaces")
        return v

    @field_validator("base_dir")
    @classmethod
    def _base_dir_absolute(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or v.rstrip("/") in ("", "/")):
            raise ValueError("must be an absolute directory other than '/'")
        return v

    @field_validator("max_artefact_size", mode="before")
    @classmethod
    def _size(cls, v: object) -> int:
        return parse_size(v)

    @property
    def release_root(self) -> str:
        return (self.base_dir or f"/opt/{self.name}").rstrip("/")


class StoreConfig(Model):
    """Where releases are pulled from."""

    # Where the controller reads manifests and signatures (file://, http(s)://, s3://).
    url: str
    # Where nodes download tarballs from, when it differs from `url` (e.g. a mirror per site).
    node_url: str | None = None
    # Seconds a presigned S3 URL handed to nodes stays valid.
    presign_ttl: int = Field(900, ge=60, le=86400)

    @field_validator("url", "node_url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.match(r"^(file|https?|s3)://", v):
            raise ValueError("must start with file://, http://, https:// or s3://")
        return v
