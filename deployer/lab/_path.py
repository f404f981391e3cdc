"""A path-to-live lab (``deployer lab up --envs preprod,prod``): one small fleet per environment,
as on real runner hosts, sharing one artefact store and one promotion store.

::

    <dir>/path.json                what was built (the environments, the SSM endpoint)
    <dir>/envs/<env>/              each environment: a lab of its own (nodes, HAProxy with its
                                   own frontend, SSH keys, lock, state directory, pointer and
                                   deployer.yml holding only that environment); the first one
                                   also serves the artefact store the others share
    <dir>/envs/<env>/keys/         its promotion key pair, and the previous environment's
                                   public key (all it holds of that environment)
    <dir>/promotions/              the promotion store (file://)
    <dir>/moto/                    with --ssm: moto's server on loopback, for SSM pointers

Environment N's nodes live on the network after environment N-1's (``--net 127.0.3``: the first
on 127.0.3, the second on 127.0.4). ``lab down`` removes every environment and all of the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .._errors import DeployerError, LabError, PrerequisiteError, UsageError
from ._lab import Lab
from ._procs import ProcessRef, free_ports, port_accepts, stop_processes, wait_until
from ._render import path_env_sections
from ._spec import DEFAULT_NET, LabSpec
from ._state import LabStatus
from ._sys import atomic_write

__all__ = ["PathLab", "PathSpec", "PathStatus"]

_MOTO_TIMEOUT = 30.0


@dataclass(frozen=True)
class PathSpec:
    """The environments, in path order, and what each one's fleet looks like."""

    envs: tuple[str, ...]
    nodes: int = 1
    net: str = DEFAULT_NET
    app: str = "hello"
    seed: str | None = None
    legs: bool = False
    soak: float = 0.0
    topology: str = "lab"
    # SSM pointers in moto's server on loopback instead of file pointers.
    ssm: bool = False

    def __post_init__(self) -> None:
        if not self.envs:
            raise UsageError("--envs: name at least one environment, e.g. --envs preprod,prod")
        if len(set(self.envs)) != len(self.envs):
            raise UsageError(f"--envs: an environment is named twice ({','.join(self.envs)})")
        parts = self.net.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise UsageError(f"--net: {self.net!r} must be three octets such as 127.0.1")
        if int(parts[2]) + len(self.envs) - 1 > 254:
            raise UsageError(f"--net: {self.net} leaves no room for {len(self.envs)} networks, one "
                             "per environment (the next ones up): pass a lower --net")
        for i in range(len(self.envs)):
            self.env_spec(i, store=None, shared=None)  # each environment's name and network

    def net_of(self, index: int) -> str:
        first, second, third = self.net.split(".")
        return f"{first}.{second}.{int(third) + index}"

    def env_spec(self, index: int, *, store: str | None, shared: str | None) -> LabSpec:
        return LabSpec(nodes=self.nodes, net=self.net_of(index), app=self.app, seed=self.seed,
                       legs=self.legs, soak=self.soak, topology=self.topology,
                       env=self.envs[index], store=store, shared_store=shared)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "envs": list(self.envs)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PathSpec:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["envs"] = tuple(fields.get("envs", ()))
        return cls(**fields)


@dataclass
class PathState:
    spec: PathSpec
    moto: ProcessRef | None = None
    ssm_endpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "moto": self.moto.to_dict() if self.moto else None,
                "ssm_endpoint": self.ssm_endpoint}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PathState:
        return cls(spec=PathSpec.from_dict(data["spec"]),
                   moto=ProcessRef.from_dict(data["moto"]) if data.get("moto") else None,
                   ssm_endpoint=data.get("ssm_endpoint"))


@dataclass(frozen=True)
class PathStatus:
    dir: Path
    exists: bool
    envs: dict[str, LabStatus] = field(default_factory=dict)
    store_url: str | None = None
    promotion_store: str | None = None
    ssm_endpoint: str | None = None
    ssm_up: bool = False

    @property
    def healthy(self) -> bool:
        return self.exists and all(s.healthy for s in self.envs.values()) and (
            self.ssm_endpoint is None or self.ssm_up)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dir": str(self.dir), "exists": self.exists, "healthy": self.healthy,
            "envs": {name: s.to_dict() for name, s in self.envs.items()},
            "store_url": self.store_url, "promotion_store": self.promotion_store,
            "ssm_endpoint": self.ssm_endpoint, "ssm_up": self.ssm_up,
        }


class PathLab:
    """A path-to-live lab kept in one directory; see the module documentation."""

    def __init__(self, dir: Path) -> None:
        self.dir = Path(dir).absolute()

    @staticmethod
    def holds_one(dir: Path) -> bool:
        """Whether ``dir`` holds a path-to-live lab (not a plain one); False when it cannot be
        looked into (a user without root: `lab up` then says it needs root)."""
        try:
            return (Path(dir) / "path.json").is_file() or (Path(dir) / "envs").is_dir()
        except PermissionError:
            return False

    @property
    def state_path(self) -> Path:
        return self.dir / "path.json"

    @property
    def promotion_dir(self) -> Path:
        return self.dir / "promotions"

    def env_lab(self, env: str) -> Lab:
        return Lab(self.dir / "envs" / env)

    def config_path(self, env: str) -> Path:
        return self.env_lab(env).config_path

    def _load(self) -> PathState | None:
        try:
            return PathState.from_dict(json.loads(self.state_path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, DeployerError) as exc:
            raise LabError(f"the lab state {self.state_path} is damaged ({exc})",
                           hint=f"remove {self.dir} after stopping its processes") from None

    def _save(self, state: PathState) -> None:
        atomic_write(self.state_path, json.dumps(state.to_dict(), indent=2) + "\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- up ---------------------------------------------------------------------------------

    def up(self, spec: PathSpec) -> PathState:
        """Build every environment (or repair what died), their keys, the promotion store, the
        SSM endpoint, and each environment's config."""
        if (self.dir / "lab.json").is_file():
            raise LabError(f"{self.dir} holds a lab of one environment",
                           hint="run `deployer lab down` there first, or pass another --dir")
        moto = _moto_server() if spec.ssm else None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LabError(f"cannot create the lab directory {self.dir}: {exc}") from None
        with self._locked():
            old = self._load()
            shape = (spec.envs, spec.net, spec.ssm, spec.legs, spec.nodes, spec.topology)
            if old is not None and shape != (old.spec.envs, old.spec.net, old.spec.ssm,
                                             old.spec.legs, old.spec.nodes, old.spec.topology):
                raise LabError(f"a path-to-live lab with other settings runs in {self.dir}",
                               hint="run `deployer lab down` first, or pass another --dir")
            state = old or PathState(spec=spec)
            state.spec = spec
            try:
                self._up(state, moto)
            finally:
                self._save(state)
            return state

    def _up(self, state: PathState, moto: Path | None) -> None:
        spec = state.spec
        first = self.env_lab(spec.envs[0])
        first.up(spec.env_spec(0, store=None, shared=None))
        store = first._recorded_spec().store
        for i in range(1, len(spec.envs)):
            self.env_lab(spec.envs[i]).up(spec.env_spec(i, store=store, shared=str(first.dir)))
        self.promotion_dir.mkdir(exist_ok=True)
        self._promotion_keys(spec.envs)
        if moto is not None:
            self._start_moto(state, moto)
        for i, env in enumerate(spec.envs):
            self._configure(env, previous=spec.envs[i - 1] if i else None, state=state)

    def _promotion_keys(self, envs: tuple[str, ...]) -> None:
        """Each environment's promotion key pair; the next one holds its public key."""
        from ..artefacts import generate_keypair

        for i, env in enumerate(envs):
            keys = self.env_lab(env).keys_dir
            if not (keys / "promotion.key").is_file():
                generate_keypair(keys, "promotion", force=True)
            if i:
                previous = self.env_lab(envs[i - 1]).keys_dir / "promotion.pub"
                shutil.copyfile(previous, keys / f"{envs[i - 1]}-promotion.pub")

    def _start_moto(self, state: PathState, binary: Path) -> None:
        if state.moto is not None and state.moto.alive() and state.ssm_endpoint:
            return
        work = self.dir / "moto"
        work.mkdir(exist_ok=True)
        port = free_ports(1)[0]
        with open(work / "moto.log", "ab") as log:
            proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=str(work))
        ready = wait_until(lambda: proc.poll() is not None or port_accepts("127.0.0.1", port),
                           timeout=_MOTO_TIMEOUT, interval=0.1)
        if not ready or proc.poll() is not None:
            stop_processes([proc.pid])
            raise LabError(f"moto's server did not start on 127.0.0.1:{port}: see {work / 'moto.log'}")
        state.moto = ProcessRef.of(proc.pid)
        state.ssm_endpoint = f"http://127.0.0.1:{port}"

    def _configure(self, env: str, *, previous: str | None, state: PathState) -> None:
        """The environment's config: its pointer (a file, or an SSM parameter in moto), its
        runner's poll interval, and its promotion section."""
        lab = self.env_lab(env)
        if state.spec.ssm:
            credentials = lab.dir / "aws" / "credentials"
            credentials.parent.mkdir(exist_ok=True)
            # moto accepts any key: these are the environment's own (dummy) credentials.
            atomic_write(credentials, f"[deployer-{env}]\naws_access_key_id = lab-{env}\n"
                         f"aws_secret_access_key = lab-{env}-secret\n", mode=0o600)
        data = yaml.safe_load(lab.config_path.read_text(encoding="utf-8"))
        data["environments"][env].update(path_env_sections(
            env, previous=previous, promotion_store=f"file://{self.promotion_dir}",
            ssm_endpoint=state.ssm_endpoint if state.spec.ssm else None))
        header = (f"# deployer configuration for environment {env} of a path-to-live lab, written "
                  "by `deployer lab up --envs`.\n")
        atomic_write(lab.config_path, header + yaml.safe_dump(data, sort_keys=False))

    # -- down -------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop everything and remove the lab's files. Safe to repeat."""
        if not self.dir.is_dir():
            return
        with self._locked():
            state = self._load()
            if state is not None and state.moto is not None and state.moto.alive():
                left = stop_processes([state.moto.pid])
                if left:
                    raise LabError(f"moto's server (pid {left[0]}) would not stop")
            envs = list(state.spec.envs) if state is not None else []
            found = sorted(p.name for p in (self.dir / "envs").glob("*") if p.is_dir())
            envs += [e for e in found if e not in envs]
            # The first environment serves the store the others use: it goes last.
            for env in reversed(envs):
                self.env_lab(env).down()
            for name in ("promotions", "moto"):
                shutil.rmtree(self.dir / name, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.dir / "envs").rmdir()
            self.state_path.unlink(missing_ok=True)
        (self.dir / ".lock").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.dir.rmdir()

    # -- status -----------------------------------------------------------------------------

    def status(self) -> PathStatus:
        state = self._load()
        if state is None:
            return PathStatus(dir=self.dir, exists=False)
        envs = {env: self.env_lab(env).status() for env in state.spec.envs}
        first = envs.get(state.spec.envs[0])
        return PathStatus(
            dir=self.dir, exists=True, envs=envs, store_url=first.store_url if first else None,
            promotion_store=f"file://{self.promotion_dir}", ssm_endpoint=state.ssm_endpoint,
            ssm_up=bool(state.moto and state.moto.alive()),
        )


def _moto_server() -> Path:
    """moto's server, installed with deployer's test tools (``moto[server]``)."""
    beside = Path(sys.executable).parent / "moto_server"
    found = beside if beside.is_file() else (Path(p) if (p := shutil.which("moto_server")) else None)
    if found is None:
        raise PrerequisiteError(
            "--ssm needs moto's server (moto_server) for SSM Parameter Store on loopback",
            hint="install it into deployer's virtualenv: pip install 'moto[server]' (scripts/"
            "bootstrap.sh --test does)",
        )
    return found
