"""The variables the engine hands to the playbooks, from an environment's config.

Every playbook run gets :func:`base_vars` (the ``deployer_*`` variables the playbooks read, then
the environment's ``extra_vars``, which win); a run that installs a release adds
:func:`release_vars`.
"""

from __future__ import annotations

from typing import Any

from ..config import EnvironmentConfig
from .model import Release

__all__ = ["base_vars", "release_vars"]


def base_vars(
    env: EnvironmentConfig, *, group: str | None = None, backend: str | None = None
) -> dict[str, Any]:
    """What every run needs: the application, its health check and the load balancer
    (``group`` and ``backend``: those of a blue-green leg)."""
    h = env.app.health
    lb = env.load_balancer
    v: dict[str, Any] = {
        "deployer_hosts": group or env.group,
        "deployer_app": env.app.name,
        "deployer_base_dir": env.app.release_root,
        "deployer_entry_point": env.app.entry_point,
        "deployer_app_port": env.app.port,
        "deployer_supervisor": env.app.supervisor,
        "deployer_keep_releases": env.app.keep_releases,
        "deployer_max_artefact_size": env.app.max_artefact_size,
        "deployer_health_path": h.path,
        "deployer_health_status": h.expect_status,
        "deployer_health_version_field": h.version_field or "",
        "deployer_health_request_timeout": h.request_timeout,
        "deployer_health_deadline": h.deadline,
        "deployer_health_interval": h.interval,
        "deployer_health_max_latency_ms": h.max_latency_ms,
        "deployer_health_run_from": h.run_from,
        "deployer_lb_socket": lb.socket,
        "deployer_lb_backend": backend or lb.backend,
        "deployer_lb_host": lb.all_hosts[0],
        "deployer_lb_hosts": lb.all_hosts,
        "deployer_lb_drain_timeout": lb.drain_timeout,
        "deployer_lb_up_timeout": lb.up_timeout,
        "deployer_version": "",
        "deployer_revert_to": "",
    }
    v.update(env.extra_vars)
    return v


def release_vars(
    env: EnvironmentConfig, release: Release, *, group: str | None = None, backend: str | None = None
) -> dict[str, Any]:
    """:func:`base_vars` plus the release to install: version, download URL, digest, size."""
    v = base_vars(env, group=group, backend=backend)
    v.update(
        deployer_version=release.version,
        deployer_release_url=release.url,
        deployer_release_sha256=release.sha256,
        deployer_release_size=release.size,
    )
    return v
