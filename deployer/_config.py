"""The deployer configuration file: one YAML document describing each environment.

Loading validates everything up front and raises :class:`ConfigError` naming the file, the
field (as a dotted path) and the bad value, so a typo never reaches a node.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ._errors import ConfigError
from .analysis._config import AnalysisConfig

__all__ = [
    "AppConfig",
    "Config",
    "EnvironmentConfig",
    "HealthCheckConfig",
    "LegConfig",
    "LoadBalancerConfig",
    "LockConfig",
    "RunnerConfig",
    "StoreConfig",
    "StrategyConfig",
    "default_config_path",
    "load_config",
]

DEFAULT_CONFIG_NAME = "deployer.yml"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# What HAProxy accepts as a proxy or server name; the name is written into runtime-API commands,
# where ';' or a newline would start another command.
_HAPROXY_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
_COUNT_OR_PERCENT = re.compile(r"^(?:[1-9][0-9]*|(?:100|[1-9][0-9]?)%)$")
_SIZE = re.compile(r"^([0-9]+)\s*([KMG]i?B|B)?$", re.IGNORECASE)
_SIZE_UNITS = {
    None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
    "gb": 1000**3, "gib": 1024**3,
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _parse_size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value.strip())
        if m:
            unit = m.group(2).lower() if m.group(2) else None
            return int(m.group(1)) * _SIZE_UNITS[unit]
    raise ValueError("must be a positive size such as 536870912, '512MiB' or '2GB'")


class HealthCheckConfig(_Model):
    """The smoke check run on each node after activation (the application contract)."""

    path: str = "/health"
    expect_status: int = Field(200, ge=100, le=599)
    # JSON field whose value must equal the release version; null disables the version check.
    version_field: str | None = "version"
    # Seconds one request may take before it counts as failed.
    request_timeout: float = Field(2.0, gt=0, le=60)
    # Seconds a node has to become healthy after a restart.
    deadline: float = Field(30.0, gt=0, le=3600)
    # Seconds between attempts while waiting.
    interval: float = Field(0.2, gt=0, le=60)
    # A healthy answer slower than this fails the check.
    max_latency_ms: int = Field(2000, gt=0)
    # Where the check runs: on the node itself, or on the controller when it reaches the app's
    # address and port (then no remote run is needed while the node is out of the LB).
    run_from: Literal["node", "controller"] = "node"

    @field_validator("path")
    @classmethod
    def _path_is_absolute(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() for c in v):
            raise ValueError("must be a URL path starting with '/' and without spaces")
        return v


class AppConfig(_Model):
    """What is deployed and how it runs on a node."""

    name: str
    entry_point: str = "bin/run"
    port: int = Field(8000, ge=1, le=65535)
    # Where releases live on each node; defaults to /opt/<name>.
    base_dir: str | None = None
    keep_releases: int = Field(5, ge=2, le=100)
    supervisor: Literal["supervisord", "systemd"] = "supervisord"
    health: HealthCheckConfig = HealthCheckConfig()
    # Largest tarball a node accepts, and largest unpacked size.
    max_artefact_size: Annotated[int, Field(gt=0)] = 512 * 1024**2

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("must be lower-case letters, digits, '-' or '_', starting with a letter")
        return v

    @field_validator("entry_point")
    @classmethod
    def _entry_point_relative(cls, v: str) -> str:
        parts = v.split("/")
        if v.startswith("/") or ".." in parts or not v or any(c.isspace() for c in v):
            raise ValueError("must be a relative path inside the release, without '..' or spaces")
        return v

    @field_validator("base_dir")
    @classmethod
    def _base_dir_absolute(cls, v: str | None) -> str | None:
        if v is not None and (not v.startswith("/") or v.rstrip("/") in ("", "/")):
            raise ValueError("must be an absolute directory other than '/'")
        return v

    @field_validator("max_artefact_size", mode="before")
    @classmethod
    def _size(cls, v: object) -> int:
        return _parse_size(v)

    @property
    def release_root(self) -> str:
        return (self.base_dir or f"/opt/{self.name}").rstrip("/")


class StoreConfig(_Model):
    """Where releases are pulled from."""

    # Where the controller reads manifests and signatures (file://, http(s)://, s3://).
    url: str
    # Where nodes download tarballs from, when it differs from `url` (e.g. a mirror per site).
    node_url: str | None = None
    # Seconds a presigned S3 URL handed to nodes stays valid.
    presign_ttl: int = Field(900, ge=60, le=86400)

    @field_validator("url", "node_url")
    @classmethod
    def _scheme(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.match(r"^(file|https?|s3)://", v):
            raise ValueError("must start with file://, http://, https:// or s3://")
        return v


class LoadBalancerConfig(_Model):
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
        if not _HAPROXY_NAME.match(v):
            raise ValueError("must be an HAProxy backend name: letters, digits, '.', ':', '_' or '-'")
        return v

    @model_validator(mode="after")
    def _one_way_to_name_hosts(self) -> LoadBalancerConfig:
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


class LegConfig(_Model):
    """One leg of a blue-green environment: its nodes and its load-balancer backend."""

    # The inventory group holding the leg's nodes.
    group: str
    # The leg's backend on the load balancer (HAProxy's name characters only: it is written
    # into runtime-API commands).
    backend: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")


class StrategyConfig(_Model):
    """How a rollout is cut into batches and what happens when one fails."""

    # rolling: batches through one fleet. blue-green: two legs; release to the idle leg,
    # smoke-test it through the preview route, move live traffic in one load-balancer
    # operation, soak, and move it back at once on trouble.
    kind: Literal["rolling", "blue-green"] = "rolling"
    # blue-green: exactly two legs, by name (e.g. blue and green).
    legs: dict[str, LegConfig] | None = None
    # blue-green: the URL of the preview route (reaches the idle leg), for the leg's smoke test.
    preview_url: str | None = Field(None, pattern=r"^https?://")
    # blue-green, after a good soak: `uplift` also releases to the old leg; `keep` leaves it on
    # the previous release as the fallback (`deployer rollback` is then one switch).
    after_soak: Literal["uplift", "keep"] = "keep"

    # Nodes per batch: a count ("2") or a share of the fleet ("25%"); at least 1.
    batch_size: str = "1"
    # A first batch of this many nodes (count or percent) before the regular batches; null or
    # "0": none.
    canary: str | None = None
    # Fewest nodes that must stay in service at any time (count or percent of the fleet).
    min_healthy: str = "1"
    # Seconds to wait between batches (soak).
    pause_between_batches: float = Field(0.0, ge=0, le=86400)
    # On a failed batch: roll back the nodes already updated, or halt and leave them.
    on_failure: Literal["rollback", "halt"] = "rollback"
    # Ansible forks; defaults to the largest batch (at least the batch size).
    forks: int | None = Field(None, ge=1, le=500)
    # Pull, verify and unpack on every node in parallel before the first batch.
    prestage: bool = True
    # Nodes that someone else put in MAINT or DRAIN on the load balancer: refuse to deploy
    # (the default), or skip them and leave them as they are. Either way they count as out of
    # service for min_healthy and are never put back into service by a deployment.
    operator_maintenance: Literal["refuse", "skip"] = "refuse"

    @model_validator(mode="after")
    def _legs_for_blue_green(self) -> StrategyConfig:
        if self.kind != "blue-green":
            if self.legs is not None:
                raise ValueError("legs are for kind: blue-green")
            return self
        if self.legs is None or len(self.legs) != 2:
            raise ValueError("kind: blue-green needs exactly two legs, e.g. blue and green")
        for name in self.legs:
            if not _NAME.match(name):
                raise ValueError(f"leg name {name!r} must be lower-case letters, digits, '-' or '_'")
        groups = [leg.group for leg in self.legs.values()]
        backends = [leg.backend for leg in self.legs.values()]
        if len(set(groups)) != 2 or len(set(backends)) != 2:
            raise ValueError("the two legs must have different groups and different backends")
        if self.preview_url is None:
            raise ValueError("kind: blue-green needs preview_url (the route to the idle leg)")
        return self

    @field_validator("batch_size")
    @classmethod
    def _at_least_one_node_per_batch(cls, v: str) -> str:
        if v == "0":
            raise ValueError("must be at least 1 (a batch of 0 nodes would deploy nothing)")
        return v

    @field_validator("batch_size", "canary", "min_healthy", mode="before")
    @classmethod
    def _count_or_percent(cls, v: object) -> object:
        if v is None:
            return v
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or not _COUNT_OR_PERCENT.match(v.strip()):
            if v == "0":
                return v
            raise ValueError("must be a positive count such as 1 or a percentage such as 25%")
        return v.strip()


# Where a lock on the load balancer's host is kept, unless `lock.dir` says otherwise.
DEFAULT_LOCK_DIR = "/var/lib/deployer/locks"


class LockConfig(_Model):
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


class EnvironmentConfig(_Model):
    inventory: Path
    # The inventory group holding the nodes to deploy to.
    group: str = "all"
    app: AppConfig
    store: StoreConfig
    # Public keys (minisign format) whose signatures this environment accepts.
    trusted_keys: list[Path] = Field(min_length=1)
    load_balancer: LoadBalancerConfig
    strategy: StrategyConfig = StrategyConfig()
    # Soak analysis after the canary or each batch (deployer.analysis); null: none.
    analysis: AnalysisConfig | None = None
    # Extra variables passed to every playbook run (e.g. ansible_python_interpreter).
    extra_vars: dict[str, Any] = Field(default_factory=dict)
    # The deployment lock: where it is kept and its lease (see LockConfig).
    lock: LockConfig = LockConfig()

    @property
    def lock_at(self) -> Literal["load_balancer", "state_dir"]:
        """Where the lock is kept: as configured, else on the load balancer's host when the
        config names one."""
        if self.lock.at is not None:
            return self.lock.at
        lb = self.load_balancer
        return "load_balancer" if lb.host is not None or lb.hosts is not None else "state_dir"

    @property
    def lock_host(self) -> str:
        """The host keeping a load-balancer lock (lock.host, else the first load balancer)."""
        return self.lock.host or self.load_balancer.all_hosts[0]

    @model_validator(mode="after")
    def _blue_green_needs_a_legs_map(self) -> EnvironmentConfig:
        if self.strategy.kind == "blue-green" and not self.load_balancer.legs_map:
            raise ValueError(
                "strategy kind blue-green needs load_balancer.legs_map (the HAProxy map that "
                "names the live backend)"
            )
        return self


_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class RunnerConfig(_Model):
    """How playbook runs are kept (see deployer.adapters.run_dirs and .redaction)."""

    # Run directories (what ansible-runner kept of each playbook run: events, output) kept under
    # <state_dir>/runs, the most recently finished first; older ones are removed after each run.
    # 0: none is kept.
    keep_runs: int = Field(20, ge=0, le=10000, strict=True)
    # Variables (extra variables at any depth, or environment variables) whose values are secret
    # though their names do not say so; names with SECRET, TOKEN, PASSWORD, KEY, ... are anyway.
    secret_vars: list[str] = Field(default_factory=list)

    @field_validator("secret_vars")
    @classmethod
    def _names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not _VARIABLE_NAME.match(name):
                raise ValueError(
                    f"{name!r} is not a variable name (letters, digits and '_', not starting "
                    "with a digit)"
                )
        return v


class Config(_Model):
    # Where the journal, locks and run directories live; relative to the config file.
    state_dir: Path = Path(".deployer")
    environments: dict[str, EnvironmentConfig]
    runner: RunnerConfig = RunnerConfig()
    # The file this was loaded from (set by load_config).
    source: Path | None = None

    @model_validator(mode="after")
    def _env_names(self) -> Config:
        for name in self.environments:
            if not _NAME.match(name):
                raise ValueError(f"environment name {name!r} must be lower-case letters, digits, '-' or '_'")
        if not self.environments:
            raise ValueError("at least one environment is required")
        return self

    def environment(self, name: str) -> EnvironmentConfig:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            raise ConfigError(
                f"no environment named {name!r} (known: {known})",
                file=str(self.source) if self.source else None,
                field="environments",
            ) from None


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
        field = ".".join(str(p) for p in err["loc"]) or None
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input") if err["type"] != "missing" else None
        if isinstance(value, dict):
            value = None
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
        envs[name] = env.model_copy(update={"inventory": inv, "trusted_keys": keys})
    return cfg.model_copy(
        update={
            "environments": envs,
            "state_dir": _resolve(base, cfg.state_dir),
            "source": cfg_path.resolve(),
        }
    )


