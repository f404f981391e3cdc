"""Reading a config file: YAML, validated as a whole, relative paths taken from its directory.

Every error names the file, the field (as a dotted path, e.g.
``environments.prod.strategy.batch_size``) and the bad value, so a typo never reaches a node.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .._errors import ConfigError
from ._agent import FilePointerConfig, SsmPointerConfig
from ._environment import Config, EnvironmentConfig
from ._gates import GatesConfig

__all__ = ["DEFAULT_CONFIG_NAME", "default_config_path", "load_config"]

DEFAULT_CONFIG_NAME = "deployer.yml"
# The tags of unions told apart by `kind` (the strategy's, the pointer's), which pydantic puts
# into an error's location; a field's path as the user wrote it has none of them.
_UNION_TAGS = {"strategy": frozenset({"rolling", "blue-green"}),
               "pointer": frozenset({"file", "http", "ssm"})}


def default_config_path() -> Path:
    env = os.environ.get("DEPLOYER_CONFIG")
    return Path(env) if env else Path(DEFAULT_CONFIG_NAME)


def _resolve(base: Path, p: Path) -> Path:
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else (base / p)


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate a config file; relative paths in it are taken from its directory."""
    cfg_path = Path(path) if path is not None else default_config_path()
    if not cfg_path.is_file():
        raise ConfigError(
            "configuration file not found",
            file=str(cfg_path),
            hint="pass --config FILE, set DEPLOYER_CONFIG, or run 'deployer lab up' to write one",
        )
    try:
        raw = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"not valid YAML{where}", file=str(cfg_path)) from None
    if not isinstance(raw, dict):
        raise ConfigError("must be a YAML mapping with an 'environments' key", file=str(cfg_path))
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _field_path(err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input") if err["type"] != "missing" else None
        if isinstance(value, dict):
            value = None
        elif isinstance(value, datetime.date):  # YAML's reading of an unquoted date
            value = value.isoformat()
        raise ConfigError(msg, file=str(cfg_path), field=field, value=value) from None

    base = cfg_path.resolve().parent
    envs = {}
    for name, env in cfg.environments.items():
        inv = _resolve(base, env.inventory)
        if not inv.exists():
            raise ConfigError(
                "inventory file not found", file=str(cfg_path),
                field=f"environments.{name}.inventory", value=str(env.inventory),
            )
        keys = []
        for i, key in enumerate(env.trusted_keys):
            kp = _resolve(base, key)
            if not kp.is_file():
                raise ConfigError(
                    "trusted key file not found", file=str(cfg_path),
                    field=f"environments.{name}.trusted_keys.{i}", value=str(key),
                )
            keys.append(kp)
        envs[name] = env.model_copy(update={
            "inventory": inv, "trusted_keys": keys,
            **_runner_paths(env, base, cfg_path, name),
            "gates": _resolve_gates(base, cfg_path, name, env),
            **_gameday_paths(env, base),
        })
    return cfg.model_copy(
        update={
            "environments": envs,
            "state_dir": _resolve(base, cfg.state_dir),
            "source": cfg_path.resolve(),
        }
    )


def _resolve_gates(base: Path, cfg_path: Path, name: str, env: EnvironmentConfig) -> GatesConfig:
    """The gates' key and credential files, taken from the config's directory; a key file that
    is not there is named with its field."""
    gates = env.gates
    prefix = f"environments.{name}.gates"

    def existing(path: Path, field: str) -> Path:
        resolved = _resolve(base, path)
        if not resolved.is_file():
            raise ConfigError("file not found", file=str(cfg_path), field=f"{prefix}.{field}",
                              value=str(path))
        return resolved

    update: dict[str, Any] = {}
    if gates.approvals is not None:
        approvals = gates.approvals
        update["approvals"] = approvals.model_copy(update={
            "approvers": [a.model_copy(update={"key": existing(a.key, f"approvals.approvers.{i}.key")})
                          for i, a in enumerate(approvals.approvers)],
            "requesters": [r.model_copy(update={"key": existing(r.key, f"approvals.requesters.{i}.key")})
                           for i, r in enumerate(approvals.requesters)],
        })
    if gates.change_api is not None:
        api = gates.change_api
        update["change_api"] = api.model_copy(update={
            field: existing(value, f"change_api.{field}")
            for field in ("user_file", "password_file", "token_file")
            if (value := getattr(api, field)) is not None
        })
    if gates.evidence.key is not None:
        update["evidence"] = gates.evidence.model_copy(
            update={"key": existing(gates.evidence.key, "evidence.key")})
    return gates.model_copy(update=update)


def _runner_paths(env: EnvironmentConfig, base: Path, cfg_path: Path, name: str) -> dict[str, Any]:
    """The pointer's and the promotion's files, taken from the config's directory; the public
    keys of the environment before this one must exist (the gate reads them)."""
    update: dict[str, Any] = {}
    pointer = env.pointer
    if isinstance(pointer, FilePointerConfig):
        update["pointer"] = pointer.model_copy(update={
            "path": _resolve(base, pointer.path),
            "status_path": _resolve(base, pointer.status_path) if pointer.status_path else None,
        })
    elif isinstance(pointer, SsmPointerConfig) and pointer.credentials_file is not None:
        update["pointer"] = pointer.model_copy(
            update={"credentials_file": _resolve(base, pointer.credentials_file)})
    promotion = env.promotion
    if promotion is not None:
        keys = []
        for i, key in enumerate(promotion.trusted_keys):
            kp = _resolve(base, key)
            if not kp.is_file():
                raise ConfigError(
                    "public key file not found", file=str(cfg_path),
                    field=f"environments.{name}.promotion.trusted_keys.{i}", value=str(key),
                )
            keys.append(kp)
        signing = _resolve(base, promotion.signing_key) if promotion.signing_key else None
        update["promotion"] = promotion.model_copy(update={"trusted_keys": keys, "signing_key": signing})
    return update


def _gameday_paths(env: EnvironmentConfig, base: Path) -> dict[str, Any]:
    """The game days' store directory, taken from the config's directory."""
    gameday = env.gameday
    if gameday.store_dir is None:
        return {}
    return {"gameday": gameday.model_copy(
        update={"store_dir": str(_resolve(base, Path(gameday.store_dir)))})}


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[Any] = list(loc)
    kept = [p for i, p in enumerate(parts)
            if not (i and p in _UNION_TAGS.get(str(parts[i - 1]), frozenset()))]
    return ".".join(str(p) for p in kept)
