"""The ``lock:`` section: where an environment's deployment lock is kept, and its lease."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ._base import Model

__all__ = ["DEFAULT_LOCK_DIR", "LockConfig"]

# Where a lock on the load balancer's host is kept, unless `lock.dir` says otherwise.
DEFAULT_LOCK_DIR = "/var/lib/deployer/locks"


class LockConfig(Model):
    """Where the environment's deployment lock is kept, and how long a holder's lease lasts."""

    # load_balancer: on the load balancer's host (lock.host), where every controller of the
    # environment meets; state_dir: in this config's state directory (one controller only).
    # Default: load_balancer when load_balancer.host or hosts is set, else state_dir.
    at: Literal["load_balancer", "state_dir"] | None = None
    # The inventory host keeping the lock (default: the first load-balancer host).
    host: str | None = None
    # The directory on that host holding <env>.json (the holder), <env>.guard and <env>.log.
    dir: str = DEFAULT_LOCK_DIR
    # Seconds a holder's lease lasts; it renews it every third of that while it deploys.
    lease: float = Field(120.0, ge=5, le=86400)

    @model_validator(mode="before")
    @classmethod
    def _no_yaml_on(cls, data: Any) -> Any:
        if isinstance(data, dict) and True in data:
            raise ValueError(
                "YAML reads the key 'on' as true: write 'at: load_balancer' or 'at: state_dir'"
            )
        return data

    @field_validator("dir")
    @classmethod
    def _dir_absolute(cls, v: str) -> str:
        if not v.startswith("/") or v.rstrip("/") == "" or any(c in v for c in "\0\n\r"):
            raise ValueError("must be an absolute directory on the lock's host, other than '/'")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _state_dir_has_no_host(self) -> LockConfig:
        if self.at == "state_dir" and ({"host", "dir"} & self.model_fields_set):
            raise ValueError(
                "host and dir are for 'at: load_balancer'; a state_dir lock lives in "
                "<state_dir>/locks"
            )
        return self
