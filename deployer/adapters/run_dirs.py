"""Run directories: what ansible-runner keeps of each playbook run, private to the user while it
runs, without secrets once it is over, and only the newest few.

Each run gets its own directory ``<root>/run-XXXXXXXX`` (0700; ``<root>`` is
``<state_dir>/runs``), laid out by ansible-runner::

    env/extravars                     the run's variables (0600) -- removed after the run
    env/envvars                       the environment deployer sets for ansible-playbook
    artifacts/<id>/command            ansible-playbook's command line, working directory and
                                      environment -- rewritten after the run with only the
                                      variables deployer and ansible-runner set
    artifacts/<id>/job_events/*.json  every event of the run (task results, output)
    artifacts/<id>/stdout, stderr, status, rc, fact_cache/<host>

:func:`scrub` makes a finished run's directory safe to keep (see :mod:`.redaction` for what is
secret); :func:`rotate` keeps the newest ``keep`` of them. A run holds a lock on its directory
while it runs, so a rotation by another deployer sharing the state directory never removes it,
and directories left by a run that died (or by an older deployer) are scrubbed on the next
rotation from what they hold themselves.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from .redaction import (
    MIN_LENGTH,
    REDACTED,
    Redactor,
    env_secrets,
    extravar_secrets,
    secret_name,
    write_private,
)

__all__ = ["RECORDED_ENV_PREFIXES", "RunDirectory", "remove_in_background", "rotate", "scrub"]

PREFIX = "run-"
_ROOT_LOCK = ".lock"
_REMOVING = ".removing-"  # a run directory moved aside, being deleted
# The environment variables a kept run's `command` file still names: those of Ansible and
# ansible-runner (how the run was configured), besides those deployer set itself.
RECORDED_ENV_PREFIXES = ("ANSIBLE_", "AWX_")


@contextlib.contextmanager
def _root_locked(root: Path) -> Iterator[None]:
    """Serialise creating and removing run directories among deployers sharing ``root``."""
    fd = os.open(root / _ROOT_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _make_root(root: Path) -> None:
    if not root.is_dir():
        root.mkdir(mode=0o700, parents=True, exist_ok=True)


class RunDirectory:
    """One run's private directory (0700), locked while the run uses it."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def create(cls, root: Path) -> RunDirectory:
        _make_root(root)
        with _root_locked(root):
            path = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))  # mode 0700
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.flock(fd, fcntl.LOCK_SH)
        return cls(path, fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def _claimed(path: Path) -> Iterator[bool]:
    """Whether ``path`` is free (no run holds it); while the caller acts on it, none can take it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield False  # gone or unreadable: leave it
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _commands(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.glob("artifacts/*/command") if p.is_file()]


def _recorded_env(env: dict[str, Any], keep: Collection[str], redactor: Redactor) -> dict[str, Any]:
    kept = {}
    for name, value in env.items():
        if name in keep or name.startswith(RECORDED_ENV_PREFIXES):
            secret = secret_name(name) and len(str(value)) >= MIN_LENGTH
            kept[name] = REDACTED if secret else redactor.value(value)
    return kept


def scrub(
    run_dir: Path, redactor: Redactor, *, recorded_env: Collection[str] = (), events_redacted: bool = False,
) -> None:
    """Make a finished run's directory safe to keep: its variables file removed, its `command`
    file without the controller's environment (only the variables named in ``recorded_env`` and
    Ansible's own, secret-looking values redacted), ansible-runner's leftover partial events
    removed, every secret the ``redactor`` knows taken out of every other file (but the events,
    when they were redacted as they were written), and all of it readable by its owner only
    (ansible-runner leaves some of it readable by all)."""
    (run_dir / "env" / "extravars").unlink(missing_ok=True)
    commands = _commands(run_dir)
    for command in commands:
        try:
            data = json.loads(command.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if not isinstance(data, dict):
            command.unlink(missing_ok=True)
            continue
        env = data.get("env")
        data["env"] = _recorded_env(env if isinstance(env, dict) else {}, recorded_env, redactor)
        data["command"] = redactor.value(data.get("command"))
        write_private(command, json.dumps(data, ensure_ascii=False).encode())
    skip = set(commands)
    for dirpath, _dirs, files in os.walk(run_dir):
        os.chmod(dirpath, 0o700)
        # ansible-runner writes its events 0600 (through the redacting handler, during a run).
        events = events_redacted and os.path.basename(dirpath) == "job_events"
        for name in files:
            if name.endswith("-partial.json"):  # only left by a run that was cut short
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(dirpath, name))
                continue
            if events:
                continue
            path = Path(dirpath, name)
            if path.is_symlink():
                continue
            if path not in skip and redactor:
                redactor.file(path)
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)


def _legacy_redactor(run_dir: Path, secret_vars: Collection[str]) -> Redactor:
    """The secrets of a run directory nobody scrubbed (its run died, or an older deployer made
    it), found in what it holds: its environment and its variables."""
    found: set[str] = set()
    for command in _commands(run_dir):
        with contextlib.suppress(OSError, ValueError):
            env = json.loads(command.read_text(encoding="utf-8")).get("env")
            if isinstance(env, dict):
                found |= env_secrets({str(k): str(v) for k, v in env.items()}, secret_vars)
    with contextlib.suppress(OSError, ValueError):
        extravars = json.loads((run_dir / "env" / "extravars").read_text(encoding="utf-8"))
        if isinstance(extravars, dict):
            found |= extravar_secrets(extravars, secret_vars)
    return Redactor(found)


def rotate(root: Path, keep: int, *, secret_vars: Collection[str] = ()) -> list[Path]:
    """Keep the ``keep`` most recently finished run directories under ``root``; never touch one
    a run is using. Kept directories that were never scrubbed (they still hold their variables
    file) are scrubbed now. The others are only moved aside (renamed, at once): the returned
    directories are the caller's to delete (see :func:`remove_in_background`), with any that an
    earlier deployer moved aside and did not finish deleting."""
    if not root.is_dir():
        return []
    doomed = []
    with _root_locked(root):
        entries = []
        with os.scandir(root) as it:
            for entry in it:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                if entry.name.startswith(_REMOVING):
                    doomed.append(Path(entry.path))
                elif entry.name.startswith(PREFIX):
                    with contextlib.suppress(OSError):
                        entries.append((entry.stat(follow_symlinks=False).st_mtime, entry.path))
        entries.sort(reverse=True)
        for index, (_mtime, name) in enumerate(entries):
            path = Path(name)
            old = index >= keep
            if not old and not (path / "env" / "extravars").exists():
                continue  # kept, and already scrubbed (or a run just starting)
            with _claimed(path) as free:
                if not free:
                    continue
                if old:
                    aside = root / f"{_REMOVING}{path.name}"
                    with contextlib.suppress(OSError):
                        os.rename(path, aside)
                        doomed.append(aside)
                else:
                    scrub(path, _legacy_redactor(path, secret_vars), recorded_env=("PATH",))
    return doomed


_removing: set[Path] = set()  # directories a thread of this process is deleting
_removing_lock = threading.Lock()


def remove_in_background(paths: Collection[Path]) -> None:
    """Delete directories without waiting (deleting a run's few hundred files takes a noticeable
    fraction of a second on a slow disk). If the process ends first, the next rotation finishes."""
    with _removing_lock:
        todo = [p for p in paths if p not in _removing]
        _removing.update(todo)
    if not todo:
        return

    def remove() -> None:
        for path in todo:
            shutil.rmtree(path, ignore_errors=True)
            with _removing_lock:
                _removing.discard(path)

    threading.Thread(target=remove, name="deployer-run-dirs", daemon=True).start()
