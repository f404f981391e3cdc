"""deployer: zero-downtime rolling releases of signed artefacts onto fleets of VMs."""

from __future__ import annotations

from ._errors import (
    ArtefactError,
    ArtefactNotFoundError,
    ConfigError,
    DeployerError,
    DeploymentFailed,
    DeploymentPaused,
    DeploymentRefused,
    FleetAtRiskError,
    GateRefused,
    ImmutableArtefactError,
    Interrupted,
    LabError,
    LoadBalancerError,
    LockError,
    LockHeldError,
    LockLostError,
    PointerError,
    PrerequisiteError,
    UsageError,
    VerificationError,
    VersionError,
)
from ._versions import validate_version
from .config import Config, EnvironmentConfig, load_config

__version__ = "0.1.0"

__all__ = [
    "ArtefactError",
    "ArtefactNotFoundError",
    "Config",
    "ConfigError",
    "DeployerError",
    "DeploymentFailed",
    "DeploymentPaused",
    "DeploymentRefused",
    "EnvironmentConfig",
    "FleetAtRiskError",
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
    "__version__",
    "load_config",
    "validate_version",
]
