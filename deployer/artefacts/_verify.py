"""Verification of a release before any node is touched."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .._errors import UsageError, VerificationError
from .._versions import validate_version
from ._manifest import Manifest, validate_app_name
from ._minisign import load_public_key, signer_key_id, verify_signature
from ._stores import ArtefactStore

__all__ = ["VerifiedRelease", "verified_release", "verify_release"]


@dataclass(frozen=True)
class VerifiedRelease:
    """A release's manifest, verified, and the key that signed it (its minisign key id)."""

    manifest: Manifest
    key_id: str


def verify_release(
    store: ArtefactStore,
    app: str,
    version: str,
    trusted_keys: Sequence[Path],
    *,
    check_tarball: bool = True,
) -> Manifest:
    """Return the manifest of ``app`` ``version`` once its signature is by a trusted key, it
    names that app and version, and (with ``check_tarball``) the tarball matches its digest and
    size. VerificationError saying why otherwise."""
    return verified_release(store, app, version, trusted_keys, check_tarball=check_tarball).manifest


def verified_release(
    store: ArtefactStore,
    app: str,
    version: str,
    trusted_keys: Sequence[Path],
    *,
    check_tarball: bool = True,
) -> VerifiedRelease:
    """:func:`verify_release`, saying which trusted key signed it."""
    validate_app_name(app, where="--app")
    validate_version(version, where="--version")
    if not trusted_keys:
        raise UsageError("at least one trusted public key is needed to verify a release")
    keys = [load_public_key(Path(p)) for p in trusted_keys]
    where = f"{store.url} {app}/{version}"
    manifest_bytes, signature = store.get_manifest(app, version)
    if signature is None:
        raise VerificationError(f"{where}: manifest is not signed (no manifest.json.minisig)")
    try:
        verify_signature(manifest_bytes, signature, keys)
    except VerificationError as exc:
        raise VerificationError(f"{where}: {exc.message}") from None
    manifest = Manifest.from_json(manifest_bytes, source=f"{where}/manifest.json")
    if (manifest.app, manifest.version) != (app, version):
        raise VerificationError(
            f"{where}: signed manifest is for {manifest.app} {manifest.version}, "
            f"not {app} {version}"
        )
    if check_tarball:
        data = store.get_tarball(app, version)
        if len(data) != manifest.size:
            raise VerificationError(
                f"{where}: tarball is {len(data)} bytes, the signed manifest says {manifest.size}"
            )
        digest = hashlib.sha256(data).hexdigest()
        if not hmac.compare_digest(digest, manifest.sha256):
            raise VerificationError(
                f"{where}: tarball sha256 {digest} differs from the signed {manifest.sha256}"
            )
    return VerifiedRelease(manifest, signer_key_id(signature))
