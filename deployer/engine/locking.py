"""Holding an environment's deployment lock for one deployment, and recording the deployment.

Every command that changes the fleet (a deployment, a rollback, ``resume``, ``recover``) goes
through :func:`locked_deployment`: it takes the lock (or raises
:class:`~deployer.LockHeldError` naming the holder), keeps its lease renewed in the background,
marks deployments of this host that died without finishing as failed, opens the deployment in
the journal, and releases the lock at the end. The safe points confirm the lock with its host
(:class:`~deployer.engine.safepoints.LockCheck`): a deployment that lost it stops there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..adapters.journal import Journal
from ..adapters.lock import DeploymentLock, Lease, held, state_dir_lock

__all__ = ["HeldDeployment", "default_lock", "locked_deployment"]


@dataclass(frozen=True)
class HeldDeployment:
    """A deployment recorded in the journal (its number and uid) and the lease of its lock."""

    deployment_id: int
    uid: str
    lease: Lease
    # What happened on the way in (a lock taken over from a dead holder), one line each.
    notes: list[str] = field(default_factory=list)


def default_lock(journal: Journal, env_name: str) -> DeploymentLock:
    """The lock used when none is given: in the journal's state directory."""
    return state_dir_lock(journal.path.parent, env_name)


@contextmanager
def locked_deployment(
    journal: Journal, lock: DeploymentLock, note: Callable[[str], None], *, env_name: str,
    app: str, kind: str, version: str, command: str, details: dict[str, Any],
) -> Iterator[HeldDeployment]:
    """Hold the environment's lock for one deployment, recorded in the journal; deployments
    that died without finishing are marked failed first."""
    notes: list[str] = []

    def on_note(text: str) -> None:
        notes.append(text)
        note(text)

    with held(lock, on_note=on_note) as lease:
        for gone in journal.mark_abandoned(env_name):
            note(f"deployment {gone.id} ended without finishing; marked failed in the journal")
        deployment_id, uid = journal.start(
            env=env_name, app=app, kind=kind, version=version, command=command,
            details={**details, "lock": {"where": lock.where, "lease": lock.lease}},
        )
        lease.attach(deployment_id)
        yield HeldDeployment(deployment_id, uid, lease, notes)
