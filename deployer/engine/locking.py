"""Holding an environment's deployment lock for one deployment, and recording it in the journal.

Both strategies (rolling and blue-green) and ``recover`` go through :func:`locked_deployment`:
it takes the lock (or raises :class:`~deployer.LockHeldError` naming the holder), keeps it
renewed in the background, marks deployments of this host that died without finishing as
failed, opens the deployment in the journal, and releases the lock at the end. The
:class:`~deployer.adapters.lock.Lease` it yields is checked between batches: a deployment that
lost its lock stops there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from ..adapters.journal import Journal
from ..adapters.lock import DeploymentLock, Lease, held, state_dir_lock

__all__ = ["HeldDeployment", "default_lock", "locked_deployment"]


class _Notes(Protocol):
    def message(self, text: str) -> None: ...


@dataclass(frozen=True)
class HeldDeployment:
    """A deployment recorded in the journal (its id) and the lease of the lock it holds."""

    deployment_id: int
    lease: Lease


def default_lock(journal: Journal, env_name: str) -> DeploymentLock:
    """The lock used when none is given: in the journal's state directory."""
    return state_dir_lock(journal.path.parent, env_name)


@contextmanager
def locked_deployment(
    journal: Journal, lock: DeploymentLock, reporter: _Notes, *, env_name: str, app: str,
    kind: str, version: str, command: str, details: dict[str, Any],
) -> Iterator[HeldDeployment]:
    """Hold the environment's lock for one deployment, recorded in the journal; deployments
    that died without finishing are marked failed first."""
    notes: list[str] = []

    def note(text: str) -> None:
        notes.append(text)
        reporter.message(text)

    with held(lock, on_note=note) as lease:
        for gone in journal.mark_abandoned(env_name):
            reporter.message(
                f"deployment {gone.id} ended without finishing; marked failed in the journal"
            )
        deployment_id = journal.start_deployment(
            env=env_name, app=app, kind=kind, version=version, command=command,
            details={**details, "lock": {"where": lock.where, "lease": lock.lease}},
        )
        lease.attach(deployment_id)
        for text in notes:  # a lock taken over from a dead holder is on the record
            journal.record_phase(deployment_id, "lock", "taken_over", detail=text)
        try:
            yield HeldDeployment(deployment_id, lease)
        finally:
            if lease.lost:
                journal.record_phase(deployment_id, "lock", "lost", detail=lease.lost)
