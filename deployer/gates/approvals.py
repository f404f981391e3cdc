"""Signed approvals, and the requester's signature.

An **approval** is a small JSON document signed by an approver's minisign key: it approves one
release (app, version, digest) for one environment and change, until it expires; it may be an
approval *as High Risk* or *for a break-glass deployment*, and may name the requester it
approves (by key id). The file holds the approval and its signature together::

    {"approval": {"kind": "deployer-approval", "app": "hello", "version": "1.4.2",
                  "sha256": "…", "environment": "prod", "change": "CHG0000001",
                  "expires": "2026-12-08T16:00:00Z", "high_risk": false, "break_glass": false,
                  "requester": "8F1C…" | null, "signed_at": "…"},
     "signature": "untrusted comment: …\\n…"}

The signature covers the approval's canonical bytes (:func:`canonical`: sorted keys, no
spaces), so the standard ``minisign`` tool verifies it too. Who approved, and in which roles,
comes from the environment's config (``gates.approvals.approvers``: a name, a public key, its
roles), never from the document: identity is the key.

The **requester** signs the deployment request with their own key at admission
(``deploy --requester-key KEY``): so deployer knows who asks by key, and four eyes compares
keys — an approval signed by the requester's own key does not count. A request to an
environment's runner is signed when it is written to the pointer (``pointer set
--requester-key KEY``: :func:`sign_pointer_request`) and verified by the runner against the
keys of the config's requesters (:func:`verify_pointer_request`)::

    {"request": {"kind": "deployer-pointer-request", "app": "hello", "environment": "prod",
                 "version": "1.4.2", "sha256": "…", "reason": "…", "requester": "…",
                 "set_at": "…", "change": "CHG0000001" | null, "high_risk": "" },
     "signature": "untrusted comment: …\n…"}
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._clock import iso_utc
from .._errors import ConfigError, UsageError, VerificationError
from ..artefacts import (
    PublicKey,
    SecretKey,
    load_public_key,
    load_secret_key,
    sign_bytes,
    signer_key_id,
    verify_signature,
)
from ..config import ApprovalsConfig

__all__ = [
    "APPROVAL_KIND",
    "POINTER_REQUEST_KIND",
    "REQUEST_KIND",
    "Approval",
    "Approver",
    "Approvers",
    "Requester",
    "approval_of",
    "canonical",
    "load_approval",
    "make_approval",
    "parse_expiry",
    "requester_from_key",
    "sign_pointer_request",
    "verify_pointer_request",
]

APPROVAL_KIND = "deployer-approval"
REQUEST_KIND = "deployer-request"
POINTER_REQUEST_KIND = "deployer-pointer-request"
# The environment variable holding a signing key's password (as for `artefact sign`).
KEY_PASSWORD_ENV = "DEPLOYER_KEY_PASSWORD"


def canonical(data: dict[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, UTF-8."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _key_of(secret: SecretKey) -> PublicKey:
    return PublicKey(key_id=secret.key_id, key=secret.public)


def parse_expiry(text: str, *, now: float) -> float:
    """``8h``, ``30m``, ``2d`` from ``now``, or an ISO 8601 time (UTC unless it says)."""
    value = text.strip()
    units = {"m": 60, "h": 3600, "d": 86400}
    if value[:-1].isdigit() and value[-1:] in units:
        return now + int(value[:-1]) * units[value[-1]]
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--expires: {text!r} is neither a duration (8h, 30m, 2d) nor an ISO "
                         "8601 time (2026-12-08T16:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


@dataclass(frozen=True)
class Approver:
    name: str
    key: PublicKey
    roles: tuple[str, ...]

    def describe(self) -> str:
        return f"{self.name} ({', '.join(self.roles)}; key {self.key.key_id_hex})"


@dataclass(frozen=True)
class Approvers:
    """The environment's approvers, by key."""

    people: tuple[Approver, ...] = ()

    @classmethod
    def of(cls, config: ApprovalsConfig | None) -> Approvers:
        if config is None:
            return cls()
        return cls(tuple(Approver(a.name, load_public_key(a.key), tuple(a.roles))
                         for a in config.approvers))

    def with_role(self, role: str) -> list[Approver]:
        return [a for a in self.people if role in a.roles]

    def by_key_id(self, key_id: str) -> Approver | None:
        return next((a for a in self.people if a.key.key_id_hex == key_id), None)


@dataclass(frozen=True)
class Requester:
    """Who asks for a deployment, by key: their name (from the config's requesters, else the
    key id), key, and the signed request (kept in the evidence)."""

    name: str
    key: PublicKey
    request: dict[str, Any] = field(default_factory=dict)
    signature: str = ""

    @property
    def key_id(self) -> str:
        return self.key.key_id_hex

    def describe(self) -> str:
        return f"{self.name} (key {self.key_id})"


def requester_from_key(path: Path, names: dict[str, str]) -> tuple[Requester, SecretKey]:
    """The requester holding the secret key at ``path`` (its password from
    $DEPLOYER_KEY_PASSWORD if it is encrypted); ``names``: key id -> name."""
    secret = load_secret_key(path, password=os.environ.get(KEY_PASSWORD_ENV))
    key = _key_of(secret)
    return Requester(names.get(key.key_id_hex, f"key {key.key_id_hex}"), key), secret


def sign_request(requester: Requester, secret: SecretKey, request: dict[str, Any]) -> Requester:
    """The requester with ``request`` signed by their key."""
    payload = {"kind": REQUEST_KIND, **request}
    signature = sign_bytes(canonical(payload), secret,
                           trusted_comment=f"deployer request {payload.get('environment', '')} "
                           f"{payload.get('version', '')}").decode()
    return Requester(requester.name, requester.key, payload, signature)


def sign_pointer_request(secret: SecretKey, request: dict[str, Any]) -> dict[str, Any]:
    """A request to an environment's runner, signed by the requester's key: what ``pointer
    set --requester-key`` writes in the pointer's ``signed`` field."""
    payload = {"kind": POINTER_REQUEST_KIND, **request}
    signature = sign_bytes(canonical(payload), secret,
                           trusted_comment=f"deployer pointer request {payload.get('environment', '')} "
                           f"{payload.get('version', '')}").decode()
    return {"request": payload, "signature": signature}


def verify_pointer_request(signed: dict[str, Any], requesters: Sequence[tuple[str, PublicKey]]) \
        -> Requester:
    """The requester whose key signed a pointer's request (named as the config names them);
    VerificationError when no requester's key did, or the request was altered."""
    payload, signature = signed.get("request"), signed.get("signature")
    if not isinstance(payload, dict) or not isinstance(signature, str):
        raise VerificationError("the pointer's signed request is not {request, signature}")
    if payload.get("kind") != POINTER_REQUEST_KIND:
        raise VerificationError("the pointer's signed request is not a deployer pointer request")
    if not requesters:
        raise VerificationError("no requesters are configured (gates.approvals.requesters): a "
                                "signed request cannot be checked")
    try:
        verify_signature(canonical(payload), signature.encode(), [k for _, k in requesters])
    except VerificationError as exc:
        raise VerificationError(f"the pointer's signed request: {exc.message}") from None
    key_id = signer_key_id(signature.encode())
    name, key = next((n, k) for n, k in requesters if k.key_id_hex == key_id)
    return Requester(name, key, payload, signature)


@dataclass(frozen=True)
class Approval:
    """An approval document as read from its file (not yet verified)."""

    source: str
    payload: dict[str, Any]
    signature: bytes

    @property
    def signer(self) -> str:
        """The key id the signature names (checked by :meth:`verify`)."""
        try:
            return signer_key_id(self.signature)
        except VerificationError:
            return "?"

    @property
    def expires(self) -> float:
        try:
            return dt.datetime.fromisoformat(str(self.payload.get("expires", "")).replace(
                "Z", "+00:00")).timestamp()
        except ValueError:
            return 0.0

    def verify(self, approvers: Approvers) -> Approver:
        """The approver whose key signed it; VerificationError when no configured approver's
        key did (or it was altered)."""
        keys = [a.key for a in approvers.people]
        if not keys:
            raise VerificationError(f"{self.source}: no approvers are configured "
                                    "(gates.approvals.approvers)")
        try:
            verify_signature(canonical(self.payload), self.signature, keys)
        except VerificationError as exc:
            raise VerificationError(f"{self.source}: {exc.message}") from None
        approver = approvers.by_key_id(self.signer)
        assert approver is not None
        return approver

    def problems(self, *, app: str, version: str, sha256: str, environment: str,
                 change: str | None, now: float) -> list[str]:
        """Why this approval does not approve that deployment now ([]: it does)."""
        p = self.payload
        found = []
        if p.get("kind") != APPROVAL_KIND:
            found.append("it is not an approval")
        for name, want in (("app", app), ("version", version), ("sha256", sha256),
                           ("environment", environment)):
            if p.get(name) != want:
                found.append(f"it approves {name} {p.get(name)!r}, not {want!r}")
        if (p.get("change") or None) != (change or None):
            found.append(f"it approves change {p.get('change') or 'none'}, not "
                         f"{change or 'none'} (--change)")
        if self.expires <= now:
            found.append(f"it expired at {iso_utc(self.expires) or p.get('expires')}")
        return found

    def describe(self) -> str:
        p = self.payload
        what = "High Risk approval" if p.get("high_risk") else (
            "break-glass approval" if p.get("break_glass") else "approval")
        return f"{what} {self.source} (key {self.signer}, expires {p.get('expires')})"


def load_approval(path: Path) -> Approval:
    """Read an approval file; UsageError naming it when it cannot be read or is not one."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--approval: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"--approval: {path} is not an approval file ({exc})") from None
    return approval_of(raw, str(path))


def approval_of(document: object, source: str) -> Approval:
    """An approval from its document ({approval, signature}, as an approval file holds it);
    UsageError naming ``source`` when it is not one."""
    payload = document.get("approval") if isinstance(document, dict) else None
    signature = document.get("signature") if isinstance(document, dict) else None
    if not isinstance(payload, dict) or not isinstance(signature, str):
        raise UsageError(f"--approval: {source} is not an approval file (it needs 'approval' and "
                         "'signature')")
    return Approval(source, payload, signature.encode())


def make_approval(*, key_path: Path, app: str, version: str, sha256: str, environment: str,
                  change: str | None, expires: float, high_risk: bool, break_glass: bool,
                  requester: str | None, now: float) -> tuple[dict[str, Any], str]:
    """An approval signed with the approver's secret key at ``key_path`` (its password from
    $DEPLOYER_KEY_PASSWORD if it is encrypted): the document, and the signing key's id."""
    if expires <= now:
        raise UsageError(f"--expires: {iso_utc(expires)} is in the past")
    try:
        secret = load_secret_key(key_path, password=os.environ.get(KEY_PASSWORD_ENV))
    except ConfigError as exc:
        raise UsageError(f"--key: {exc.message}", hint=exc.hint) from None
    payload = {
        "kind": APPROVAL_KIND, "app": app, "version": version, "sha256": sha256,
        "environment": environment, "change": change, "expires": iso_utc(expires),
        "high_risk": high_risk, "break_glass": break_glass, "requester": requester,
        "signed_at": iso_utc(now),
    }
    signature = sign_bytes(canonical(payload), secret,
                           trusted_comment=f"deployer approval {environment} {app} {version}")
    return {"approval": payload, "signature": signature.decode()}, secret.key_id_hex


def valid_approvals(
    approvals: Sequence[Approval], approvers: Approvers, requester: Requester | None, *,
    app: str, version: str, sha256: str, environment: str, change: str | None, now: float,
    high_risk: bool = False, break_glass: bool = False,
) -> tuple[list[tuple[Approval, Approver]], list[str]]:
    """The approvals (of the kind asked: plain, High Risk or break-glass) that approve this
    deployment now, each with its approver; and why each other one does not count. An
    approval by the requester's own key never counts (four eyes)."""
    good: list[tuple[Approval, Approver]] = []
    rejected: list[str] = []
    for approval in approvals:
        p = approval.payload
        if bool(p.get("high_risk")) != high_risk or bool(p.get("break_glass")) != break_glass:
            continue  # another kind of approval: judged by its own gate
        try:
            approver = approval.verify(approvers)
        except VerificationError as exc:
            rejected.append(exc.message)
            continue
        problems = approval.problems(app=app, version=version, sha256=sha256,
                                     environment=environment, change=change, now=now)
        wanted = p.get("requester")
        if requester is not None and wanted and wanted != requester.key_id:
            problems.append(f"it approves requester key {wanted}, not {requester.key_id}")
        if requester is not None and approver.key.key == requester.key.key:
            problems.append(f"it is signed by the requester's own key ({requester.key_id}): an "
                            "approver may not approve their own request")
        if problems:
            rejected.append(f"{approval.source} by {approver.name}: {'; '.join(problems)}")
            continue
        if any(a.key.key == approver.key.key for _, a in good):
            rejected.append(f"{approval.source}: a second approval by {approver.name} (counts once)")
            continue
        good.append((approval, approver))
    return good, rejected
