"""Immutable, signed artefacts: reproducible builds, minisign signatures and stores."""

from __future__ import annotations

from ._build import BuiltArtefact, build_artefact, sign_manifest
from ._manifest import Manifest
from ._minisign import KeyPair, PublicKey, generate_keypair, load_public_key, verify_signature
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
    "VerifiedRelease",
    "build_artefact",
    "generate_keypair",
    "load_public_key",
    "open_store",
    "sign_manifest",
    "verified_release",
    "verify_release",
    "verify_signature",
]
