"""Signing promotion records (minisign, as releases are signed), publishing them, reading them
back and verifying them against an environment's public keys."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .._clock import iso_utc
from .._errors import ArtefactError, VerificationError
from ..artefacts._minisign import (
    PublicKey,
    _key_id_hex,
    load_secret_key,
    parse_signature,
    sign_bytes,
    verify_signature,
)
from ._record import PromotionRecord
from ._store import RecordStore, open_record_store

__all__ = ["PromotionRecorder", "Recorded", "SignedRecord", "publish_record", "read_records",
           "sign_record"]

SIGNATURE_SUFFIX = ".minisig"
# The password of an encrypted signing key, as for `deployer artefact sign`.
PASSWORD_ENV = "DEPLOYER_KEY_PASSWORD"


@dataclass(frozen=True)
class SignedRecord:
    """A record as read from a store, with its signature; not verified yet."""

    where: str
    data: bytes
    signature: bytes | None
    # None when the bytes are not a record (``problem`` says why).
    record: PromotionRecord | None
    problem: str = ""

    @property
    def key_id(self) -> str:
        """The id of the key that signed it ("" when unsigned or malformed)."""
        if self.signature is None:
            return ""
        try:
            return _key_id_hex(parse_signature(self.signature).key_id)
        except VerificationError:
            return ""

    def verified(self, keys: Sequence[PublicKey]) -> PromotionRecord:
        """The record, once its signature is by one of ``keys``; VerificationError saying why
        not otherwise (unsigned, another key, altered, not a record)."""
        if self.signature is None:
            raise VerificationError(f"{self.where}: not signed (no {SIGNATURE_SUFFIX} beside it)")
        try:
            verify_signature(self.data, self.signature, keys)
        except VerificationError as exc:
            raise VerificationError(f"{self.where}: {exc.message}") from None
        if self.record is None:
            raise VerificationError(self.problem)
        return self.record


def sign_record(record: PromotionRecord, secret_key: Path) -> bytes:
    """A minisign signature of the record's bytes by ``secret_key``."""
    key = load_secret_key(secret_key, password=os.environ.get(PASSWORD_ENV))
    comment = (f"promotion\tapp:{record.app}\tversion:{record.version}\tenv:{record.environment}"
               f"\tsha256:{record.sha256}\tdeployment:{record.deployment}")
    return sign_bytes(record.to_json(), key, trusted_comment=comment)


def publish_record(store: RecordStore, record: PromotionRecord, signature: bytes) -> str:
    """Write the record and its signature (the signature first), never over an existing one;
    where it now is."""
    key = record.key
    data = record.to_json()
    sig_key = key + SIGNATURE_SUFFIX
    if not store.create(sig_key, signature) and store.read(sig_key) != signature:
        raise ArtefactError(f"{store.where(key)}: a different signature is already recorded; "
                            "promotion records are immutable")
    if not store.create(key, data) and store.read(key) != data:
        raise ArtefactError(f"{store.where(key)}: a different record is already there; promotion "
                            "records are immutable")
    return store.where(key)


def read_records(store: RecordStore, app: str, version: str,
                 environment: str | None = None) -> list[SignedRecord]:
    """Every record of ``app`` ``version`` in the store (of one ``environment``, if given),
    oldest deployment first, each with its signature; nothing is verified here."""
    prefix = f"{app}/{version}/" + (f"{environment}/" if environment else "")
    found = []
    for key in store.keys(prefix):
        if not key.endswith(".json"):
            continue
        data = store.read(key)
        if data is None:
            continue
        where = store.where(key)
        try:
            record: PromotionRecord | None = PromotionRecord.from_json(data, source=where)
            problem = ""
        except VerificationError as exc:
            record, problem = None, exc.message
        found.append(SignedRecord(where=where, data=data, signature=store.read(key + SIGNATURE_SUFFIX),
                                  record=record, problem=problem))
    return sorted(found, key=lambda s: s.where.rsplit("/", 1)[-1])


@dataclass(frozen=True)
class Recorded:
    """A record published: where, and the id of the key that signed it."""

    record: PromotionRecord
    where: str
    key_id: str


class PromotionRecorder:
    """Signs and publishes an environment's records of its successful deployments."""

    def __init__(self, *, env_name: str, app: str, signing_key: Path, store_url: str,
                 open_store: Callable[[str], RecordStore] = open_record_store) -> None:
        self.env_name = env_name
        self.app = app
        self.signing_key = signing_key
        self.store_url = store_url
        self._open_store = open_store

    def recorded(self, version: str, deployment: str) -> bool:
        """Whether this environment's record of ``deployment`` is in the store already."""
        key = PromotionRecord(app=self.app, version=version, sha256="0" * 64,
                              environment=self.env_name, deployment=deployment, at="").key
        return self._open_store(self.store_url).read(key) is not None

    def record(self, *, version: str, sha256: str, deployment: str, at: float,
               checks: Sequence[str], nodes: Sequence[str]) -> Recorded:
        record = PromotionRecord(app=self.app, version=version, sha256=sha256,
                                 environment=self.env_name, deployment=deployment, at=iso_utc(at),
                                 checks=tuple(checks), nodes=tuple(nodes))
        signature = sign_record(record, self.signing_key)
        where = publish_record(self._open_store(self.store_url), record, signature)
        return Recorded(record=record, where=where,
                        key_id=_key_id_hex(parse_signature(signature).key_id))
