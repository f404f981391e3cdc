"""Artefact stores addressed by URL, all with the same layout::

    <root>/index.json                                  {"apps": [...]}
    <root>/<app>/index.json                            {"app": ..., "versions": [manifest, ...]}
    <root>/<app>/<version>/<app>-<version>.tar.gz
    <root>/<app>/<version>/manifest.json
    <root>/<app>/<version>/manifest.json.minisig

Versions are immutable: publishing a version again is a no-op when its tarball is the same
bytes and is refused with ImmutableArtefactError otherwise. The index files are rewritten on
each publish so that read-only stores (plain HTTP servers) can be listed.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .._errors import (
    ArtefactError,
    ArtefactNotFoundError,
    ImmutableArtefactError,
    VerificationError,
)
from .._versions import validate_version
from ._build import MANIFEST_NAME, SIGNATURE_NAME, write_atomically
from ._manifest import APP_NAME_PATTERN, Manifest, tarball_name, validate_app_name
from ._minisign import parse_signature

__all__ = [
    "INDEX_NAME",
    "ArtefactStore",
    "FileStore",
    "HttpStore",
    "PublishResult",
    "StagedRelease",
    "version_sort_key",
]

INDEX_NAME = "index.json"
HTTP_TIMEOUT = 15.0
# The newest versions an error about a missing one lists.
_VERSIONS_SHOWN = 10
_CHECK_THE_URL = ("check the store's URL (store.url in the config, or --store); releases get "
                  "there with `deployer artefact publish DIR --store URL`")


@dataclass(frozen=True)
class PublishResult:
    app: str
    version: str
    # False when the same artefact was already published (nothing changed).
    created: bool


@dataclass(frozen=True)
class StagedRelease:
    """The checked files of one artefact about to be published."""

    manifest: Manifest
    manifest_bytes: bytes
    signature: bytes
    tarball_path: Path

    @classmethod
    def load(cls, artefact_dir: Path) -> StagedRelease:
        """Check an artefact directory: manifest valid, signature present, tarball matches."""
        artefact_dir = Path(artefact_dir)
        manifest_path = artefact_dir / MANIFEST_NAME
        if not manifest_path.is_file():
            raise ArtefactError(f"{manifest_path} not found: not an artefact directory")
        manifest_bytes = manifest_path.read_bytes()
        manifest = Manifest.from_json(manifest_bytes, source=str(manifest_path))
        sig_path = artefact_dir / SIGNATURE_NAME
        if not sig_path.is_file():
            raise VerificationError(
                f"{sig_path} not found: refusing to publish an unsigned artefact",
                hint=f"sign it first: deployer artefact sign {manifest_path} --key KEY",
            )
        signature = sig_path.read_bytes()
        parse_signature(signature)
        tarball_path = artefact_dir / manifest.tarball
        if not tarball_path.is_file():
            raise ArtefactError(f"{tarball_path} not found (named by {manifest_path})")
        size = tarball_path.stat().st_size
        if size != manifest.size:
            raise VerificationError(
                f"{tarball_path}: size {size} differs from the manifest's {manifest.size}"
            )
        if file_sha256(tarball_path) != manifest.sha256:
            raise VerificationError(
                f"{tarball_path}: sha256 differs from the manifest's {manifest.sha256}"
            )
        return cls(manifest=manifest, manifest_bytes=manifest_bytes, signature=signature,
                   tarball_path=tarball_path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def version_sort_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order: 1.10.0 after 1.9.0."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.findall(r"\d+|[^\d]+", version)
    )


def release_key(app: str, version: str, name: str) -> str:
    return f"{app}/{version}/{name}"


def app_index_bytes(app: str, manifests: list[Manifest]) -> bytes:
    ordered = sorted(manifests, key=lambda m: version_sort_key(m.version))
    data = {
        "app": app,
        "versions": [{k: v for k, v in asdict(m).items() if v is not None} for m in ordered],
    }
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def root_index_bytes(apps: list[str]) -> bytes:
    return (json.dumps({"apps": sorted(apps)}, indent=2) + "\n").encode("utf-8")


def same_artefact(existing_manifest: bytes, staged: StagedRelease, *, where: str) -> None:
    """Raise ImmutableArtefactError unless the stored version holds the same tarball bytes."""
    try:
        existing = Manifest.from_json(existing_manifest, source=where)
    except VerificationError:
        existing = None
    m = staged.manifest
    if existing is None or (existing.sha256, existing.size) != (m.sha256, m.size):
        stored = f"sha256 {existing.sha256}" if existing else "an unreadable manifest"
        raise ImmutableArtefactError(
            f"{m.app} {m.version} is already published at {where} with different content "
            f"({stored}, publishing sha256 {m.sha256}); versions are immutable",
            hint="publish under a new version",
        )


class ArtefactStore(ABC):
    """A place releases are published to and pulled from."""

    url: str

    @abstractmethod
    def _read(self, key: str) -> bytes | None:
        """The object at ``key`` (relative to the root), or None when it does not exist."""

    @abstractmethod
    def publish(self, artefact_dir: Path) -> PublishResult:
        """Publish a built and signed artefact directory."""

    @abstractmethod
    def node_url(self, app: str, version: str, *, ttl: int = 900) -> str:
        """The URL a node downloads the tarball from."""

    def put_record(self, key: str, data: bytes) -> bool:
        """Publish a record (evidence, say) at ``key``, once: True if written, False if the
        same bytes were there already; ImmutableArtefactError for other bytes there. Records
        live under keys starting with ``_`` (never an app's name)."""
        raise ArtefactError(f"store {self.url} is read-only: records cannot be published to it")

    def get_record(self, key: str) -> bytes | None:
        _check_record_key(key)
        return self._read(key)

    def list(self, app: str | None = None) -> list[Manifest]:
        """Published releases (of one app, or of all), oldest version first, from the index."""
        if app is not None:
            apps: builtins.list[object] = [validate_app_name(app, where="--app")]
        else:
            raw = self._read(INDEX_NAME)
            apps = [] if raw is None else self._index_field(raw, INDEX_NAME, "apps")
        found: list[Manifest] = []
        for name in apps:
            if not isinstance(name, str) or not APP_NAME_PATTERN.match(name):
                raise ArtefactError(f"{self.url}: {INDEX_NAME} lists an invalid app {name!r}")
            key = f"{name}/{INDEX_NAME}"
            raw = self._read(key)
            if raw is None:
                continue
            for entry in self._index_field(raw, key, "versions"):
                found.append(Manifest.from_json(json.dumps(entry).encode(),
                                                source=f"{self.url} {key}"))
        return found

    def _index_field(self, raw: bytes, key: str, field: str) -> builtins.list[object]:
        try:
            value = json.loads(raw)[field]
        except (ValueError, KeyError, TypeError):
            value = None
        if not isinstance(value, list):
            raise ArtefactError(f"{self.url}: {key} is not a valid index (no '{field}' list)")
        return value

    def get_manifest(self, app: str, version: str) -> tuple[bytes, bytes | None]:
        """(manifest bytes, signature bytes or None when unsigned)."""
        validate_app_name(app, where="--app")
        validate_version(version, where="--version")
        manifest = self._read(release_key(app, version, MANIFEST_NAME))
        if manifest is None:
            raise self.not_found(app, version)
        return manifest, self._read(release_key(app, version, SIGNATURE_NAME))

    def get_tarball(self, app: str, version: str) -> bytes:
        validate_app_name(app, where="--app")
        validate_version(version, where="--version")
        data = self._read(release_key(app, version, tarball_name(app, version)))
        if data is None:
            raise self.not_found(app, version, what="tarball of ")
        return data

    def missing_store(self) -> str | None:
        """Why this is no store at all (its directory or root missing), or None."""
        if self._read(INDEX_NAME) is None:
            return (f"store {self.url} has no {INDEX_NAME} at its root: the URL does not point at "
                    "a store, or nothing was ever published there")
        return None

    def not_found(self, app: str, version: str, *, what: str = "") -> ArtefactNotFoundError:
        """The error for a release (or ``what`` of it) the store does not hold: the store itself
        missing, or the versions of ``app`` it does hold."""
        gone = self.missing_store()
        if gone:
            return ArtefactNotFoundError(f"{what}{app} {version} cannot be fetched: {gone}",
                                         hint=_CHECK_THE_URL)
        if what:  # a file of a release the store lists: nothing to choose from instead
            return ArtefactNotFoundError(f"{what}{app} {version} is not in store {self.url}")
        try:
            held = [m.version for m in self.list(app)]
        except ArtefactError:  # an unreadable index: say only what is missing
            return ArtefactNotFoundError(f"{what}{app} {version} is not in store {self.url}")
        if not held:
            return ArtefactNotFoundError(
                f"{what}{app} {version} is not in store {self.url}, which holds no release of {app}",
                hint=f"publish one with `deployer artefact publish DIR --store {self.url}`",
            )
        shown = held[-_VERSIONS_SHOWN:]
        older = f" (and {len(held) - len(shown)} older)" if len(held) > len(shown) else ""
        return ArtefactNotFoundError(
            f"{what}{app} {version} is not in store {self.url}; it holds {app} "
            f"{', '.join(shown)}{older}",
            hint=f"`deployer artefact list --store {self.url} --app {app}` lists them",
        )


def _check_record_key(key: str) -> None:
    """A record's key: ``_kind/...`` of plain names (no '..', no app's namespace)."""
    parts = key.split("/")
    if not key.startswith("_") or any(not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", p) for p in parts):
        raise ArtefactError(f"{key!r} is not a record key (_<kind>/<name>/..., plain names)")


class FileStore(ArtefactStore):
    """A directory on this machine (``file:///path``); the lab serves one over HTTP."""

    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root

    def _read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise ArtefactError(f"cannot read {self.root / key}: {exc.strerror}") from None

    def node_url(self, app: str, version: str, *, ttl: int = 900) -> str:
        validate_app_name(app, where="--app")
        validate_version(version, where="--version")
        return (self.root / release_key(app, version, tarball_name(app, version))).as_uri()

    def missing_store(self) -> str | None:
        if not self.root.is_dir():
            return f"the store directory {self.root} does not exist (store {self.url})"
        return super().missing_store()

    def list(self, app: str | None = None) -> builtins.list[Manifest]:
        # A directory that is not there is a wrong URL, not an empty store.
        if not self.root.is_dir():
            raise ArtefactNotFoundError(
                f"the store directory {self.root} does not exist (store {self.url})",
                hint=_CHECK_THE_URL,
            )
        return super().list(app)

    def put_record(self, key: str, data: bytes) -> bool:
        _check_record_key(key)
        if not self.root.is_dir():
            raise ArtefactError(f"the store directory {self.root} does not exist (store {self.url})")
        target = self.root / key
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with self._lock():
                if target.exists():
                    if target.read_bytes() != data:
                        raise ImmutableArtefactError(f"{target} exists with other bytes; records are "
                                                     "immutable")
                    return False
                write_atomically(target, data)
        except OSError as exc:
            raise ArtefactError(f"cannot publish {key} into {self.root}: {exc}") from None
        return True

    @contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.root / ".lock", "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def publish(self, artefact_dir: Path) -> PublishResult:
        staged = StagedRelease.load(artefact_dir)
        m = staged.manifest
        target = self.root / m.app / m.version
        if (target / MANIFEST_NAME).exists():
            return self._existing(target, staged)
        app_dir = self.root / m.app
        app_dir.mkdir(parents=True, exist_ok=True)
        # Stage the three files in a private directory, then rename it into place: readers see
        # the whole release or nothing, and of two concurrent publishers exactly one wins.
        staging = app_dir / f".publish-{m.version}-{secrets.token_hex(6)}"
        try:
            staging.mkdir(mode=0o755)
            shutil.copyfile(staged.tarball_path, staging / m.tarball)
            (staging / MANIFEST_NAME).write_bytes(staged.manifest_bytes)
            (staging / SIGNATURE_NAME).write_bytes(staged.signature)
            for child in staging.iterdir():
                child.chmod(0o644)
            try:
                os.rename(staging, target)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                return self._existing(target, staged)
        except OSError as exc:
            raise ArtefactError(f"cannot publish into {app_dir}: {exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._rewrite_indexes(m.app)
        return PublishResult(app=m.app, version=m.version, created=True)

    def _existing(self, target: Path, staged: StagedRelease) -> PublishResult:
        try:
            existing = (target / MANIFEST_NAME).read_bytes()
        except FileNotFoundError:
            existing = b""
        same_artefact(existing, staged, where=str(target))
        # Heal the indexes in case an earlier publish stopped before writing them.
        self._rewrite_indexes(staged.manifest.app)
        return PublishResult(app=staged.manifest.app, version=staged.manifest.version,
                             created=False)

    def _rewrite_indexes(self, app: str) -> None:
        with self._lock():
            manifests: list[Manifest] = []
            app_dir = self.root / app
            for version_dir in sorted(app_dir.iterdir()):
                path = version_dir / MANIFEST_NAME
                if version_dir.name.startswith(".") or not path.is_file():
                    continue
                manifests.append(Manifest.from_json(path.read_bytes(), source=str(path)))
            write_atomically(app_dir / INDEX_NAME, app_index_bytes(app, manifests))
            apps = [
                d.name for d in self.root.iterdir()
                if d.is_dir() and APP_NAME_PATTERN.match(d.name) and (d / INDEX_NAME).is_file()
            ]
            write_atomically(self.root / INDEX_NAME, root_index_bytes(apps))


class HttpStore(ArtefactStore):
    """A read-only store behind any web server that serves the layout (``http(s)://``)."""

    def __init__(self, url: str, *, timeout: float = HTTP_TIMEOUT) -> None:
        self.url = url
        self.base = url.rstrip("/")
        self.timeout = timeout

    def _object_url(self, key: str) -> str:
        return f"{self.base}/{urllib.parse.quote(key)}"

    def _read(self, key: str) -> bytes | None:
        url = self._object_url(key)
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                data: bytes = response.read()
                return data
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ArtefactError(f"store {self.url}: GET {url} answered HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            raise ArtefactError(
                f"store {self.url} cannot be reached: {exc.reason}",
                hint="check the store URL and that its web server is running",
            ) from None
        except TimeoutError:
            raise ArtefactError(
                f"store {self.url}: GET {url} timed out after {self.timeout:g} s"
            ) from None
        except OSError as exc:
            raise ArtefactError(f"store {self.url}: GET {url} failed: {exc}") from None

    def publish(self, artefact_dir: Path) -> PublishResult:
        raise ArtefactError(
            f"store {self.url} is read-only (HTTP); publish to its file:// or s3:// origin"
        )

    def node_url(self, app: str, version: str, *, ttl: int = 900) -> str:
        validate_app_name(app, where="--app")
        validate_version(version, where="--version")
        return self._object_url(release_key(app, version, tarball_name(app, version)))
