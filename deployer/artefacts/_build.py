"""Reproducible artefact builds and manifest signing."""

from __future__ import annotations

import gzip
import hashlib
import os
import secrets
import stat
import tarfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .._errors import ArtefactError, UsageError
from .._versions import validate_version
from ._manifest import Manifest, tarball_name, validate_app_name
from ._minisign import load_secret_key, sign_bytes

__all__ = [
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "BuiltArtefact",
    "build_artefact",
    "sign_manifest",
    "write_atomically",
]

MANIFEST_NAME = "manifest.json"
SIGNATURE_NAME = "manifest.json.minisig"
# Never part of a release: VCS metadata and interpreter caches differ between checkouts.
_SKIPPED_NAMES = frozenset({".git", "__pycache__"})


@dataclass(frozen=True)
class BuiltArtefact:
    dir: Path
    tarball: Path
    manifest_path: Path
    manifest: Manifest


def write_atomically(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write to a temporary name beside ``path`` then rename, so readers never see a half file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _build_time() -> int:
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
        if value < 0:
            raise ValueError
    except ValueError:
        raise UsageError(
            f"SOURCE_DATE_EPOCH must be a non-negative integer (got {raw!r})"
        ) from None
    return value


def _entries(src_dir: Path, exclude: Path | None) -> list[tuple[str, Path]]:
    """Every path under ``src_dir`` as (archive name, path), sorted so builds are reproducible."""
    found: list[tuple[str, Path]] = []
    for root, dirs, files in os.walk(src_dir):
        root_path = Path(root)
        dirs[:] = sorted(
            d for d in dirs
            if d not in _SKIPPED_NAMES and (exclude is None or (root_path / d) != exclude)
        )
        for name in dirs + sorted(f for f in files if f not in _SKIPPED_NAMES):
            path = root_path / name
            found.append((path.relative_to(src_dir).as_posix(), path))
    found.sort(key=lambda item: item[0])
    return found


def _tar_info(name: str, path: Path, src_dir: Path, mtime: int) -> tarfile.TarInfo:
    st = path.lstat()
    info = tarfile.TarInfo(name)
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        resolved = os.path.normpath(os.path.join(os.path.dirname(name), target))
        if os.path.isabs(target) or resolved == ".." or resolved.startswith("../"):
            raise ArtefactError(
                f"{path}: symlink to {target!r} points outside the source directory {src_dir}",
                hint="make it a relative link inside the tree, or copy the file",
            )
        info.type = tarfile.SYMTYPE
        info.linkname = target
        info.mode = 0o777
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif stat.S_ISREG(st.st_mode):
        info.size = st.st_size
        # Only the executable bit is kept (like git), so the umask of the build machine
        # does not change the bytes.
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    else:
        raise ArtefactError(f"{path}: only files, directories and symlinks can be packaged")
    return info


def build_artefact(
    src_dir: Path,
    *,
    app: str,
    version: str,
    out_dir: Path,
    source_commit: str | None = None,
    build_id: str | None = None,
    irreversible: str | None = None,
) -> BuiltArtefact:
    """Pack ``src_dir`` into ``out_dir/<app>-<version>.tar.gz`` and write ``out_dir/manifest.json``.

    The same tree gives the same tarball bytes: sorted entries, mtime SOURCE_DATE_EPOCH (or 0),
    owner 0:0 without names, gzip header without time or name.
    """
    validate_app_name(app, where="--app")
    validate_version(version, where="--version")
    # Reject bad optional fields before anything is written.
    Manifest.from_json(
        Manifest(app=app, version=version, tarball=tarball_name(app, version), sha256="0" * 64,
                 size=0, created="1970-01-01T00:00:00Z", source_commit=source_commit,
                 build_id=build_id, irreversible=irreversible).to_json(),
        source="--source-commit/--build-id/--irreversible",
    )
    src_dir = Path(src_dir)
    if not src_dir.is_dir():
        raise UsageError(f"source directory {src_dir} does not exist or is not a directory")
    mtime = _build_time()
    src_real = src_dir.resolve()
    out_real = Path(out_dir).resolve()
    exclude = out_real if out_real.is_relative_to(src_real) else None
    entries = _entries(src_real, exclude)
    if not any(p.is_file() for _, p in entries):
        raise ArtefactError(f"source directory {src_dir} holds no files to package")

    # Check every entry before writing anything.
    infos = [(_tar_info(name, path, src_real, mtime), path) for name, path in entries]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tar_path = out_dir / tarball_name(app, version)
    tmp = out_dir / f".{tar_path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as raw, gzip.GzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0
        ) as gz, tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, path in infos:
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
        digest = hashlib.sha256()
        with open(tmp, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        size = tmp.stat().st_size
        os.chmod(tmp, 0o644)
        created = datetime.fromtimestamp(mtime if mtime else time.time(), UTC)
        manifest = Manifest(
            app=app, version=version, tarball=tar_path.name, sha256=digest.hexdigest(),
            size=size, created=created.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            source_commit=source_commit, build_id=build_id, irreversible=irreversible,
        )
        manifest_bytes = manifest.to_json()
        os.replace(tmp, tar_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    manifest_path = out_dir / MANIFEST_NAME
    if manifest_path.exists() and manifest_path.read_bytes() != manifest_bytes:
        # A signature of the previous manifest would be stale.
        (out_dir / SIGNATURE_NAME).unlink(missing_ok=True)
    write_atomically(manifest_path, manifest_bytes)
    return BuiltArtefact(dir=out_dir, tarball=tar_path, manifest_path=manifest_path,
                         manifest=manifest)


def sign_manifest(manifest_path: Path, secret_key: Path, *, password: str | None = None) -> Path:
    """Sign a manifest with a minisign secret key; writes ``manifest.json.minisig`` next to it."""
    manifest_path = Path(manifest_path)
    try:
        data = manifest_path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"manifest {manifest_path} not found") from None
    manifest = Manifest.from_json(data, source=str(manifest_path))
    key = load_secret_key(Path(secret_key), password=password)
    comment = (
        f"timestamp:{int(time.time())}\tfile:{MANIFEST_NAME}\t"
        f"app:{manifest.app}\tversion:{manifest.version}\thashed"
    )
    signature = sign_bytes(data, key, trusted_comment=comment)
    sig_path = manifest_path.with_name(manifest_path.name + ".minisig")
    write_atomically(sig_path, signature)
    return sig_path
