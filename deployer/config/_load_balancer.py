"""The ``load_balancer:`` section, one model per kind of load balancer.

HAProxy (``kind: haproxy``, through its runtime API) is the one kind today. Another kind
(a cloud target group, a command) becomes a model of its own here, and
:data:`LoadBalancerConfig` a union of them told apart by ``kind``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ._base import HAPROXY_NAME, Model

__all__ = ["HAProxyConfig", "LoadBalancerConfig"]


class HAProxyConfig(Model):
    """HAProxy, driven through its runtime API."""

    kind: Literal["haproxy"] = "haproxy"
    # The HAProxy runtime API: a unix socket path, or tcp://host:port.
    socket: str
    backend: str
    # The Ansible host that can reach the socket (the load balancer itself on a real fleet).
    host: str | None = None
    # Several load balancers in front of the same nodes (e.g. an HA pair), instead of `host`:
    # drains and enables go to every one, and a node counts as in service only if it is on all.
    hosts: list[str] | None = Field(None, min_length=1)
    # How the controller reads the runtime API: `direct` (the socket path on this machine, or
    # tcp://), `ssh` (a small program run on each load-balancer host over SSH, with the
    # inventory's connection settings), or `auto`: direct for localhost or a tcp:// address,
    # ssh otherwise.
    connect: Literal["auto", "direct", "ssh"] = "auto"
    # Seconds to wait for in-flight sessions to finish before a node is put in maintenance.
    drain_timeout: float = Field(30.0, ge=0, le=3600)
    # Seconds to wait for HAProxy to report a node UP after it is put back.
    up_timeout: float = Field(30.0, gt=0, le=3600)
    # Blue-green: the HAProxy map (its path as HAProxy loaded it) whose `live_key` entry names the
    # backend taking live traffic (`use_backend %[str(live),map(FILE)]`) and whose `preview_key`
    # entry names the backend of the preview route. One `set map` moves all live traffic.
    legs_map: str | None = None
    live_key: str = Field("live", pattern=r"^[A-Za-z0-9_.-]+$")
    preview_key: str | None = Field("preview", pattern=r"^[A-Za-z0-9_.-]+$")

    @field_validator("backend")
    @classmethod
    def _backend_name(cls, v: str) -> str:
        if not HAPROXY_NAME.match(v):
            raise ValueError("must be an HAProxy backend name: letters, digits, '.', ':', '_' or '-'")
        return v

    @model_validator(mode="after")
    def _one_way_to_name_hosts(self) -> HAProxyConfig:
        if self.host is not None and self.hosts is not None:
            raise ValueError("set either host or hosts, not both")
        if self.hosts is not None and len(set(self.hosts)) != len(self.hosts):
            raise ValueError("hosts must not repeat a host")
        return self

    @property
    def all_hosts(self) -> list[str]:
        """Every load-balancer host, in the order given (``host`` alone: one)."""
        if self.hosts is not None:
            return list(self.hosts)
        return [self.host or "localhost"]


# One kind so far; a union of kinds (discriminated by `kind`) when a second arrives.
LoadBalancerConfig = HAProxyConfig
