"""The error tree of deployer.

Every error a user can cause or meet derives from :class:`DeployerError`; the CLI maps each
branch to an exit code and prints its message without a traceback::

    DeployerError                      exit 1  (anything not listed below)
    ├── UsageError                     exit 2  bad flags or arguments
    ├── ConfigError                    exit 2  a config/inventory file is invalid (names file, field, value)
    ├── VersionError                   exit 2  a version string is not acceptable
    ├── PrerequisiteError              exit 3  the machine lacks something (root, a package)
    ├── ArtefactError                  exit 4  an artefact cannot be built, published or fetched
    │   ├── ImmutableArtefactError     exit 4  publishing different bytes under an existing version
    │   ├── ArtefactNotFoundError      exit 4  no such app/version in the store
    │   └── VerificationError          exit 5  signature, digest or identity check failed
    ├── LockHeldError                  exit 6  another deployment holds the environment's lock
    ├── LockError                      exit 13 the environment's lock cannot be reached (nothing
    │   │                                      was changed)
    │   └── LockLostError              exit 13 a running deployment lost its lock (taken over, or
    │                                          its host unreachable for longer than the lease)
    │                                          and stopped between batches
    ├── LoadBalancerError              exit 7  the load balancer refused or could not be reached
    ├── LabError                       exit 8  the local lab could not be built or inspected
    ├── AnalysisError                  exit 12 a metric source of the soak analysis cannot be queried
    │                                          (unreachable, bad query)
    ├── GateRefused                    exit 14 refused by a gate (a release window, a freeze, an
    │                                          approval, no valid promotion record from the
    │                                          environment before this one); nothing was changed
    ├── DeploymentPaused               exit 15 a gate (a window closing, a freeze) paused a running
    │                                          deployment at a safe point: every node in service,
    │                                          `deployer resume` continues it
    ├── PointerError                   exit 1  an environment's desired-version pointer (or the
    │                                          status beside it) cannot be read or written
    ├── DeploymentFailed               exit 10 the rollout failed after changing nodes; they were
    │   │                                      reverted or rolled back (or left, on_failure: halt)
    │   ├── DeploymentRefused          exit 9  refused before any node left the load balancer
    │   │                                      (unreachable node, capacity floor, an operator's
    │   │                                      maintenance, load balancer unreadable, pre-stage
    │   │                                      failed): nothing in service was changed
    │   └── FleetAtRiskError           exit 11 a node this deployment took out may still be out
    │                                          of service: see the journal
    ├── GameDayUnsafe                  exit 20 a game day found a scenario whose outcome was not
    │                                          the safe one (or could not tell): see its report
    └── Interrupted                    exit 130 the operator stopped the run (Ctrl-C / SIGTERM)
"""

from __future__ import annotations

__all__ = [
    "AnalysisError",
    "ArtefactError",
    "ArtefactNotFoundError",
    "ConfigError",
    "DeployerError",
    "DeploymentFailed",
    "DeploymentPaused",
    "DeploymentRefused",
    "FleetAtRiskError",
    "GameDayUnsafe",
    "GateRefused",
    "ImmutableArtefactError",
    "Interrupted",
    "LabError",
    "LoadBalancerError",
    "LockError",
    "LockHeldError",
    "LockLostError",
    "PointerError",
    "PrerequisiteError",
    "UsageError",
    "VerificationError",
    "VersionError",
]


class DeployerError(Exception):
    """Root of every error deployer raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(DeployerError):
    exit_code = 2


class ConfigError(DeployerError):
    """A configuration or inventory file is invalid."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        field: str | None = None,
        value: object = None,
        hint: str | None = None,
    ) -> None:
        where = []
        if file:
            where.append(str(file))
        if field:
            where.append(f"field '{field}'")
        prefix = ": ".join(where)
        text = f"{prefix}: {message}" if prefix else message
        if value is not None:
            text += f" (got {value!r})"
        super().__init__(text, hint=hint)
        self.file = file
        self.field = field
        self.value = value


class VersionError(DeployerError):
    exit_code = 2


class PrerequisiteError(DeployerError):
    exit_code = 3


class ArtefactError(DeployerError):
    exit_code = 4


class ImmutableArtefactError(ArtefactError):
    exit_code = 4


class ArtefactNotFoundError(ArtefactError):
    exit_code = 4


class VerificationError(ArtefactError):
    exit_code = 5


class LockHeldError(DeployerError):
    exit_code = 6


class LockError(DeployerError):
    """The environment's lock cannot be read or changed (its host unreachable, its directory
    not writable)."""

    exit_code = 13


class LockLostError(LockError):
    """A deployment lost its lock while it ran, and stopped at the next safe point."""

    exit_code = 13


class LoadBalancerError(DeployerError):
    exit_code = 7


class LabError(DeployerError):
    exit_code = 8


class AnalysisError(DeployerError):
    """A metric source of the soak analysis cannot be reached or rejects a query."""

    exit_code = 12


class GateRefused(DeployerError):
    """A gate refused the deployment after its release was verified, before the lock was
    taken (a release window, a freeze, an approval, the promotion gate), or before anything
    changed at a later safe point: nothing was changed, and the refusal is on the record."""

    exit_code = 14

    def __init__(self, message: str, *, hint: str | None = None, gate: str = "",
                 opens_at: float | None = None) -> None:
        super().__init__(message, hint=hint)
        # Which gate refused (window, freeze, approval, promotion, ...), and when it may let the
        # deployment through (the next window opening), for a caller that waits (the agent).
        self.gate = gate
        self.opens_at = opens_at


class DeploymentPaused(DeployerError):
    """A gate paused a running deployment at a safe point; ``deployer resume`` continues it."""

    exit_code = 15

    def __init__(self, message: str, *, hint: str | None = None, gate: str = "",
                 opens_at: float | None = None) -> None:
        super().__init__(message, hint=hint)
        self.gate = gate
        self.opens_at = opens_at


class PointerError(DeployerError):
    """The desired-version pointer, or the status published beside it, cannot be read or
    written (its file, URL or parameter named)."""

    exit_code = 1


class DeploymentFailed(DeployerError):
    exit_code = 10


class DeploymentRefused(DeploymentFailed):
    """Stopped before any node was taken out of the load balancer; nothing in service changed."""

    exit_code = 9


class FleetAtRiskError(DeploymentFailed):
    exit_code = 11


class GameDayUnsafe(DeployerError):
    """A game day's scenario did not end safely, or could not tell."""

    exit_code = 20


class Interrupted(DeployerError):
    exit_code = 130
