"""The public surface is exactly what is documented; everything else is private."""

from __future__ import annotations

import re

import deployer
import deployer.artefacts
import deployer.lab
from deployer import _errors


def test_top_level_exports() -> None:
    assert sorted(deployer.__all__) == sorted([
        "ArtefactError", "ArtefactNotFoundError", "Config", "ConfigError", "DeployerError",
        "DeploymentFailed", "DeploymentPaused", "DeploymentRefused", "EnvironmentConfig",
        "FleetAtRiskError", "GateRefused", "ImmutableArtefactError",
        "Interrupted", "LabError", "LoadBalancerError", "LockError", "LockHeldError", "LockLostError",
        "PointerError", "PrerequisiteError",
        "UsageError", "VerificationError", "VersionError", "__version__", "load_config",
        "validate_version",
    ])
    for name in deployer.__all__:
        assert hasattr(deployer, name)


def test_every_error_derives_from_the_root_and_has_its_documented_exit_code() -> None:
    errors = [getattr(_errors, n) for n in _errors.__all__]
    assert all(issubclass(e, deployer.DeployerError) for e in errors)
    doc = _errors.__doc__ or ""
    for e in errors:
        documented = re.search(rf"\b{e.__name__}\s+exit (\d+)", doc)
        assert documented is not None and int(documented.group(1)) == e.exit_code, e.__name__
