"""The deployment lock: one deployment of an environment at a time, whichever controller runs it.

The lock is a small JSON record kept where every controller of the environment meets: on the
load balancer's host (reached over SSH, or on this machine when the load balancer is local), or,
for an environment with a single controller, in the config's state directory. Each operation
runs the lock program (:mod:`deployer.adapters._lock_program`, the host's own ``python3``)
once, and the program does it atomically under ``flock``.

The record names its holder: environment, deployment id, ``user@host``, host, PID and the PID's
start time, when it was taken and when its lease expires. The holder renews the lease in the
background (:class:`Lease`); another controller may take the lock over only once the lease has
expired, or at once when the holder ran on its own host and is gone (its PID no longer runs, or
runs a process started at another time: a reused PID is not the holder). A release removes the
lock only when host, PID and start time are the caller's.

- :class:`DeploymentLock`: what the engine and the CLI need (the Protocol);
- :class:`EnvironmentLock`: the lock of one environment, on a :class:`LockHost`;
- :class:`ProgramHost`: runs the lock program locally or over SSH;
  :class:`deployer.testing.FakeLockHost`: the same rules in memory, for tests;
- :class:`Lease`: renews a held lock every third of its lease and says when it was lost.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .._clock import iso_utc
from .._errors import DeployerError, LockError, LockHeldError, LockLostError
from . import _lock_program
from .process import Identity
from .ssh import SshTarget

__all__ = [
    "DeploymentLock",
    "EnvironmentLock",
    "Lease",
    "LockHost",
    "LockRecord",
    "LockView",
    "ProgramHost",
    "held",
    "state_dir_lock",
]



@functools.cache
def _program_text() -> str:
    """The lock program's source, sent to the lock's host (read once, when first needed)."""
    return Path(_lock_program.__file__).read_text(encoding="utf-8")


@dataclass(frozen=True)
class LockRecord:
    """The holder of an environment's lock, as the lock file says."""

    env: str
    deployment: int | None
    owner: str  # user@host
    host: str
    pid: int
    pid_start: str
    acquired_at: float
    expires_at: float
    renewed_at: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LockRecord:
        dep = data.get("deployment")
        return cls(
            env=str(data.get("env", "")), deployment=int(dep) if dep is not None else None,
            owner=str(data.get("owner", "")), host=str(data.get("host", "")),
            pid=int(data.get("pid", 0)), pid_start=str(data.get("pid_start", "")),
            acquired_at=float(data.get("acquired_at", 0)),
            expires_at=float(data.get("expires_at", 0)),
            renewed_at=float(data.get("renewed_at", 0)),
        )

    @property
    def identity(self) -> Identity:
        return Identity(owner=self.owner, host=self.host, pid=self.pid, pid_start=self.pid_start)

    def expectation(self) -> dict[str, Any]:
        """This exact holder, for an operation that must not touch another one."""
        return {**self.identity.as_dict(), "acquired_at": self.acquired_at}

    def describe(self) -> str:
        dep = f"deployment {self.deployment}" if self.deployment is not None else "a deployment"
        return (f"{dep} of {self.owner} (host {self.host}, pid {self.pid}, since "
                f"{iso_utc(self.acquired_at)}; lease until {iso_utc(self.expires_at)})")

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env, "deployment": self.deployment, "owner": self.owner,
            "host": self.host, "pid": self.pid, "pid_start": self.pid_start,
            "acquired_at": iso_utc(self.acquired_at), "expires_at": iso_utc(self.expires_at),
            "renewed_at": iso_utc(self.renewed_at) if self.renewed_at else None,
        }


@dataclass(frozen=True)
class LockView:
    """The lock as its host sees it now (``now``: that host's clock)."""

    record: LockRecord | None
    now: float
    where: str

    @property
    def expired(self) -> bool:
        return self.record is not None and self.record.expires_at <= self.now

    @property
    def stale(self) -> bool:
        """Held by nobody alive: its lease expired, or its holder is gone from this host."""
        return self.record is not None and (self.expired or self.record.identity.gone())

    def to_dict(self) -> dict[str, Any] | None:
        if self.record is None:
            return None
        return {**self.record.to_dict(), "expired": self.expired, "stale": self.stale,
                "where": self.where}


class LockHost(Protocol):
    """Where an environment's lock lives: runs one operation of the lock program there."""

    @property
    def where(self) -> str: ...

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """The program's answer to ``request`` (raises :class:`LockError` when it cannot run)."""
        ...


class ProgramHost:
    """Runs the lock program on the lock's host: over SSH with the inventory's settings for
    that host, or on this machine (``target`` None, or a local target). On this machine, as this
    user, it runs inside this process (the same code, files and ``flock``; no interpreter to
    start) unless ``spawn`` is set."""

    def __init__(
        self,
        directory: str,
        *,
        target: SshTarget | Callable[[], SshTarget] | None = None,
        name: str = "",
        timeout: float | None = None,
        spawn: bool = False,
    ) -> None:
        self.directory = directory
        self._target = target
        self.name = name
        self._timeout = timeout
        self._spawn = spawn

    @property
    def target(self) -> SshTarget | None:
        if callable(self._target):
            self._target = self._target()
        return self._target

    @property
    def where(self) -> str:
        return f"{self.name}:{self.directory}" if self.name else self.directory

    def _argv(self, request: str) -> list[str]:
        target = self.target
        if target is None:
            return [sys.executable, "-", request]
        return target.argv([target.python, "-", request])

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        target = self.target
        remote = target is not None and not target.local
        here = target is None or (target.local and not target.become_user)
        if here and not self._spawn:
            return self._checked(_lock_program.answer({**request, "dir": self.directory}))
        timeout = self._timeout or ((target.connect_timeout if target else 0) + 20.0)
        argv = self._argv(json.dumps({**request, "dir": self.directory}))
        try:
            done = subprocess.run(
                argv, input=_program_text(), capture_output=True, text=True, timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise LockError(f"the lock at {self.where} did not answer within {timeout:g}s") from None
        except OSError as exc:
            raise LockError(f"cannot run {argv[0]!r} for the lock at {self.where}: {exc}") from None
        answer: dict[str, Any] | None = None
        lines = done.stdout.strip().splitlines()
        if lines:
            try:
                parsed = json.loads(lines[-1])
                answer = parsed if isinstance(parsed, dict) else None
            except ValueError:
                answer = None
        if answer is None:
            why = _failure(done.returncode, done.stderr) if done.returncode else (
                f"unexpected answer {done.stdout[-200:]!r}")
            raise LockError(
                f"cannot reach the lock at {self.where}: {why}",
                hint=_reach_hint(self.name, remote, done.stderr),
            )
        return self._checked(answer)

    def _checked(self, answer: dict[str, Any]) -> dict[str, Any]:
        if "error" in answer:
            raise LockError(
                f"the lock at {self.where} failed: {answer['error']}",
                hint=f"the user deployer runs as there must be able to create and write files in "
                f"{self.directory} (lock.dir in the config)",
            )
        return answer


def _failure(code: int, stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip() and not ln.startswith("Warning:")]
    return "; ".join(lines[-3:]) or f"exit status {code}"


def _reach_hint(name: str, remote: bool, stderr: str) -> str:
    if not remote:
        return "the lock's host needs python3"
    if "host key" in stderr.lower():
        return (f"add {name}'s host key to the known_hosts file the inventory names, after "
                "checking its fingerprint")
    return (f"check that this machine reaches {name} over SSH as the inventory says (address, "
            "port, user, key) and that it has python3; or keep the lock elsewhere (lock.at, "
            "lock.host in the config)")


class DeploymentLock(Protocol):
    """An environment's deployment lock, held by one process at a time."""

    env: str
    lease: float
    me: Identity

    @property
    def where(self) -> str: ...

    def acquire(self) -> LockRecord | None:
        """Take the lock, or raise :class:`LockHeldError` naming its live holder. Returns the
        holder it took over (lease expired, or gone from this host), if any."""
        ...

    def renew(self, deployment: int | None = None) -> None:
        """Push the lease on (and record the deployment holding it); raise
        :class:`LockLostError` when someone else holds it now or it was removed."""
        ...

    def release(self) -> bool:
        """Remove the lock if it is ours (host, PID and start time); True if it was."""
        ...

    def show(self) -> LockView: ...

    def remove(self, *, by: str, reason: str = "", force: bool = False) -> LockRecord | None:
        """Remove the lock of a holder that is gone (lease expired, or its process gone from
        this host), or any holder with ``force``; raise :class:`LockHeldError` for a live holder
        without it. Returns the record removed (None: there was none)."""
        ...


class EnvironmentLock:
    """The deployment lock of one environment, kept on ``host``, held as ``me``."""

    def __init__(
        self, host: LockHost, env: str, *, lease: float = 120.0, me: Identity | None = None
    ) -> None:
        self.host = host
        self.env = env
        self.lease = float(lease)
        self.me = me or Identity.current()
        # The environment's freeze as the last renewal read it: (time.monotonic() then, the
        # freeze record or None); see deployer.adapters.freeze.
        self.freeze_seen: tuple[float, dict[str, Any] | None] | None = None

    @property
    def where(self) -> str:
        return f"{self.host.where}/{self.env}.json"

    def _call(self, op: str, **fields: Any) -> dict[str, Any]:
        return self.host.call({"op": op, "env": self.env, **fields})

    def _held(self, holder: LockRecord) -> LockHeldError:
        return LockHeldError(
            f"environment {self.env!r} is locked by {holder.describe()}; the lock is kept at "
            f"{self.where}",
            hint="wait for that deployment to finish (a holder that died frees the lock when its "
            "lease expires); to remove it now: deployer unlock "
            f"--env {self.env} --force --reason '...'",
        )

    def acquire(self) -> LockRecord | None:
        mine = {"env": self.env, "deployment": None, "owner": self.me.owner,
                **self.me.as_dict()}
        answer = self._call("acquire", record=mine, lease=self.lease, take_over=None)
        if answer["result"] == "held":
            holder = LockRecord.from_dict(answer["record"])
            if not holder.identity.gone():
                raise self._held(holder)
            answer = self._call(
                "acquire", record=mine, lease=self.lease, take_over=holder.expectation()
            )
            if answer["result"] == "held":  # someone else was quicker
                raise self._held(LockRecord.from_dict(answer["record"]))
        previous = answer.get("previous")
        return LockRecord.from_dict(previous) if previous else None

    def renew(self, deployment: int | None = None) -> None:
        answer = self._call("renew", identity=self.me.as_dict(), lease=self.lease,
                            deployment=deployment)
        if "freeze" in answer:
            self.freeze_seen = (time.monotonic(), answer["freeze"])
        if answer["result"] != "renewed":
            now = answer.get("record")
            who = (f"{LockRecord.from_dict(now).describe()} holds it now" if now
                   else "it was removed (deployer unlock --force)")
            raise LockLostError(
                f"this deployment lost the lock of environment {self.env!r} at {self.where}: "
                f"{who}",
            )

    def release(self) -> bool:
        return bool(self._call("release", identity=self.me.as_dict())["result"] == "released")

    def show(self) -> LockView:
        answer = self._call("show")
        record = answer.get("record")
        return LockView(
            record=LockRecord.from_dict(record) if record else None,
            now=float(answer.get("now", time.time())), where=self.where,
        )

    def remove(self, *, by: str, reason: str = "", force: bool = False) -> LockRecord | None:
        view = self.show()
        if view.record is None:
            return None
        expect = view.record.expectation() if view.record.identity.gone() else None
        answer = self._call("remove", by=by, reason=reason, force=force, expect=expect)
        if answer["result"] == "refused":
            holder = LockRecord.from_dict(answer["record"])
            raise LockHeldError(
                f"environment {self.env!r} is locked by {holder.describe()}, whose lease has not "
                f"expired: not removed (the lock is kept at {self.where})",
                hint="wait for that deployment to finish, or for its lease to expire; if you "
                f"know it must go now: deployer unlock --env {self.env} --force --reason '...'",
            )
        previous = answer.get("previous")
        return LockRecord.from_dict(previous) if previous else None


def state_dir_lock(state_dir: Path, env: str, *, lease: float = 120.0) -> EnvironmentLock:
    """The lock of ``env`` in a state directory (one controller's): ``<state_dir>/locks``."""
    return EnvironmentLock(ProgramHost(str(Path(state_dir).resolve() / "locks")), env, lease=lease)


class Lease:
    """Keeps a held lock: renews it every third of its lease in a background thread, so the
    deployment itself never waits for the lock's host. :meth:`check` (called between batches)
    raises :class:`LockLostError` once a renewal found the lock taken or removed, or no renewal
    has reached the host for longer than the lease (someone may have taken it over since)."""

    def __init__(
        self, lock: DeploymentLock, *, clock: Callable[[], float] = time.monotonic,
        interval: float | None = None,
    ) -> None:
        self.lock = lock
        self.clock = clock
        self.interval = interval
        self.lost = ""
        self.last_error = ""
        self._last_ok = 0.0
        self._deployment: int | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # A renewal from a safe point and one from the background thread never cross.
        self._confirming = threading.Lock()

    def start(self, acquired: float) -> None:
        """Start renewing; ``acquired``: the clock's time when the acquiring call was sent."""
        self._last_ok = acquired
        self._thread = threading.Thread(
            target=self._run, name=f"lock-lease-{self.lock.env}", daemon=True
        )
        self._thread.start()

    @property
    def every(self) -> float:
        return self.interval if self.interval is not None else self.lock.lease / 3

    def attach(self, deployment: int) -> None:
        """Record the deployment holding the lock, with the next renewal (sent now)."""
        self._deployment = deployment
        self._wake.set()

    def renew_once(self) -> None:
        """One renewal, as the thread does it (also for tests driving the clock by hand)."""
        if self.lost:
            return
        sent = self.clock()
        try:
            with self._confirming:
                self.lock.renew(self._deployment)
        except LockLostError as exc:
            self.lost = str(exc)
        except Exception as exc:  # unreachable host, or anything else: retried until the lease ends
            self.last_error = str(exc)
            if sent - self._last_ok > self.lock.lease:
                self.lost = self._unreachable_text()
        else:
            self._last_ok = sent
            self.last_error = ""

    def _unreachable_text(self) -> str:
        return (
            f"this deployment could not renew the lock of environment {self.lock.env!r} at "
            f"{self.lock.where} for {self.clock() - self._last_ok:.0f}s, longer than its lease "
            f"({self.lock.lease:g}s): another controller may hold it now"
            + (f" (last error: {self.last_error})" if self.last_error else "")
        )

    def _run(self) -> None:
        while not self._stop.is_set():
            # After a failed renewal, try again sooner: the lease is running out.
            wait = self.every if not self.last_error else min(self.every, 5.0)
            self._wake.wait(timeout=wait)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.renew_once()
            if self.lost:
                return

    def confirm(self) -> None:
        """Confirm the lock with its host now (one renewal, waited for): raise
        :class:`LockLostError` when someone else holds it or it was removed, :class:`LockError`
        when the host cannot be reached (the lease is not counted as lost for that alone)."""
        self.check()
        sent = self.clock()
        with self._confirming:
            try:
                self.lock.renew(self._deployment)
            except LockLostError as exc:
                self.lost = str(exc)
                self.check()
            except LockError as exc:
                self.last_error = str(exc)
                raise
            self._last_ok = max(self._last_ok, sent)
            self.last_error = ""

    def check(self) -> None:
        """Raise :class:`LockLostError` when the lock is lost (a safe point: between batches)."""
        if not self.lost and self.clock() - self._last_ok > self.lock.lease:
            self.lost = self._unreachable_text()
        if self.lost:
            raise LockLostError(
                self.lost,
                hint=f"nothing was changed after that; see who holds it with 'deployer status "
                f"--env {self.lock.env}', and the journal with 'deployer history --env "
                f"{self.lock.env}'",
            )

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


@contextmanager
def held(lock: DeploymentLock, *, on_note: Callable[[str], None] | None = None) -> Iterator[Lease]:
    """Hold ``lock`` for a block: acquire, renew in the background, release at the end (a
    release that cannot reach the lock's host is reported: the lock then ends with its lease)."""
    sent = time.monotonic()
    taken = lock.acquire()
    if taken is not None and on_note is not None:
        why = "its process is gone from this host" if taken.identity.gone() else (
            "its lease had expired")
        on_note(f"took over the lock of {taken.describe()}: {why}")
    lease = Lease(lock)
    lease.start(sent)
    try:
        yield lease
    finally:
        lease.stop()
        try:
            lock.release()
        except DeployerError as exc:
            if on_note is not None:
                on_note(f"could not release the lock at {lock.where} ({exc}); it ends with its "
                        f"lease, {lock.lease:g}s after the last renewal")
