"""Immutable, signed artefacts: reproducible builds, minisign signatures and stores."""

from __future__ import annotations

from ._build import BuiltArtefact, build_artefact, sign_manifest
from ._manifest import Manifest
from ._minisign import (
    KeyPair,
    PublicKey,
    SecretKey,
    generate_keypair,
    load_public_key,
    load_secret_key,
    sign_bytes,
    signer_key_id,
    verify_signature,
)
from ._open import open_store
from ._stores import ArtefactStore, PublishResult
from ._verify import VerifiedRelease, verified_release, verify_release

__all__ = [
    "ArtefactStore",
    "BuiltArtefact",
    "KeyPair",
    "Manifest",
    "PublicKey",
    "PublishResult",
    "SecretKey",
    "VerifiedRelease",
    "build_artefact",
    "generate_keypair",
    "load_public_key",
    "load_secret_key",
    "open_store",
    "sign_bytes",
    "sign_manifest",
    "signer_key_id",
    "verified_release",
    "verify_release",
    "verify_signature",
]
