"""Opening an environment's pointer from its ``pointer:`` section: the one place that knows
every kind."""

from __future__ import annotations

from .._errors import ConfigError
from ..config import Config, FilePointerConfig, HttpPointerConfig, SsmPointerConfig
from ._file import FilePointer
from ._http import HttpPointer
from ._pointer import Pointer
from ._ssm import SsmPointer

__all__ = ["open_pointer"]


def open_pointer(config: Config, env_name: str) -> Pointer:
    """The pointer of environment ``env_name``; ConfigError when it has none."""
    pointer = config.environment(env_name).pointer
    if isinstance(pointer, FilePointerConfig):
        return FilePointer(pointer.path, pointer.status_file)
    if isinstance(pointer, HttpPointerConfig):
        return HttpPointer(pointer.url, pointer.status, token_env=pointer.token_env,
                           timeout=pointer.timeout)
    if isinstance(pointer, SsmPointerConfig):
        return SsmPointer(pointer.parameter, pointer.status, region=pointer.region,
                          endpoint_url=pointer.endpoint_url, profile=pointer.profile,
                          credentials_file=pointer.credentials_file)
    raise ConfigError(
        f"environment {env_name!r} has no pointer", file=str(config.source) if config.source else None,
        field=f"environments.{env_name}.pointer",
        hint="add a pointer: section (kind: file, http or ssm); see the README's path to live",
    )
