"""The promotion gate: an environment with a predecessor on the path to live deploys a release
only if the predecessor's promotion record for the same digest verifies against the
predecessor's public key (all this environment holds of it).

It is a :class:`~deployer.engine.safepoints.Check` that decides at ``admission`` (the release
verified, nothing locked, recorded or changed): a refusal there is :class:`~deployer.GateRefused`
(exit 14). It lets through without a record:

- a rollback to a release this environment already ran successfully (its own verified record
  for that digest, or a successful deployment of it in the journal);
- a resume, which continues a deployment that passed its gates.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from .._errors import DeployerError, GateRefused, VerificationError
from ..adapters.journal import Journal
from ..artefacts import PublicKey, load_public_key
from ..artefacts._minisign import load_secret_key
from ..config import PromotionConfig
from ..engine.history import successful_history
from ..engine.model import Release
from ..engine.safepoints import Decision, SafePoint, SafePointContext, Verdict
from ._signed import PASSWORD_ENV, read_records
from ._store import RecordStore, open_record_store

__all__ = ["PromotionGate", "public_half"]


class PromotionGate:
    """See the module documentation."""

    name = "promotion"

    def __init__(self, *, env_name: str, app: str, config: PromotionConfig,
                 journal: Journal | None = None,
                 open_store: Callable[[str], RecordStore] = open_record_store) -> None:
        self.env_name = env_name
        self.app = app
        self.config = config
        self.journal = journal
        self._open_store = open_store

    def check(self, ctx: SafePointContext) -> Verdict:
        after = self.config.after
        if ctx.point is not SafePoint.ADMISSION or after is None or ctx.deployment.kind == "resume":
            return Verdict.go()
        release = ctx.release
        assert release is not None  # the lifecycle verifies the release before admission
        what = f"{self.app} {release.version} (sha256 {release.sha256[:12]}...)"
        try:
            passed, problems = self._passed(after, release)
            if passed:
                return Verdict(Decision.CONTINUE, reason=passed)
            if ctx.deployment.kind == "rollback":
                ran = self._ran_here(release)
                if ran:
                    return Verdict(Decision.CONTINUE, reason=ran)
        except DeployerError as exc:
            return Verdict.stop(GateRefused(
                f"promotion: cannot read {after}'s promotion records for {what}: {exc.message}",
                hint=exc.hint or f"check promotion.store ({self.config.store})",
            ))
        why = "; ".join(problems) if problems else f"none in {self.config.store}"
        return Verdict.stop(GateRefused(
            f"promotion: {what} has no valid promotion record from {after}: {why}",
            hint=f"deploy it to {after} first (its agent records a successful deployment), or "
            f"check promotion.trusted_keys (the public key {after} signs its records with)",
        ))

    def _passed(self, after: str, release: Release) -> tuple[str, list[str]]:
        """Why the predecessor passed this release ("" if it did not), and what was wrong with
        each record found."""
        keys = [load_public_key(p) for p in self.config.trusted_keys]
        store = self._open_store(self.config.store)
        problems: list[str] = []
        for signed in reversed(read_records(store, self.app, release.version, after)):
            try:
                record = signed.verified(keys)
            except VerificationError as exc:
                problems.append(exc.message)
                continue
            mismatch = _mismatch(record.app, record.version, record.environment, record.sha256,
                                 (self.app, release.version, after, release.sha256))
            if mismatch:
                problems.append(f"{signed.where}: {mismatch}")
                continue
            return (f"{after} passed {release.version} (sha256 {release.sha256[:12]}...): "
                    f"deployment {record.deployment} at {record.at}"), problems
        return "", problems

    def _ran_here(self, release: Release) -> str:
        """Why this environment already ran the release successfully ("" if it did not): its
        own verified record for the digest, or a successful deployment in the journal."""
        signing = self.config.signing_key
        if signing is not None and signing.is_file():
            own = public_half(signing)
            store = self._open_store(self.config.store)
            for signed in read_records(store, self.app, release.version, self.env_name):
                try:
                    record = signed.verified([own])
                except VerificationError:
                    continue
                if record.sha256 == release.sha256 and record.environment == self.env_name:
                    return (f"a rollback to {release.version}, which ran here successfully "
                            f"(deployment {record.deployment} at {record.at})")
        if self.journal is not None:
            for rec in reversed(successful_history(self.journal, self.env_name)):
                if rec.version == release.version and rec.details.get("sha256") == release.sha256:
                    return (f"a rollback to {release.version}, which ran here successfully "
                            f"(deployment {rec.uid or rec.id})")
                # What the nodes ran when a deployment succeeded here (a store never holds two
                # artefacts under one version: the version names the digest).
                if release.version in (rec.details.get("from_versions") or {}).values():
                    return (f"a rollback to {release.version}, which ran here before deployment "
                            f"{rec.uid or rec.id}")
        return ""


def public_half(secret_key: Path) -> PublicKey:
    """The public key of a minisign secret key (an environment verifies its own records)."""
    secret = load_secret_key(secret_key, password=os.environ.get(PASSWORD_ENV))
    return PublicKey(key_id=secret.key_id, key=secret.public)


def _mismatch(app: str, version: str, env: str, sha256: str,
              expected: tuple[str, str, str, str]) -> str:
    want_app, want_version, want_env, want_sha = expected
    if env != want_env:
        return f"the record is {env}'s, not {want_env}'s"
    if (app, version) != (want_app, want_version):
        return f"the record is for {app} {version}"
    if sha256 != want_sha:
        return f"the record is for sha256 {sha256[:12]}..., not this release's {want_sha[:12]}..."
    return ""
