"""The release manifest: what an artefact is, signed as a whole."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import datetime

from .._errors import UsageError, VerificationError, VersionError
from .._versions import validate_version

__all__ = ["APP_NAME_PATTERN", "Manifest", "tarball_name", "validate_app_name"]

APP_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TEXT_FIELD = re.compile(r"^[\x21-\x7e]{1,128}$")  # printable ASCII, no spaces
_REASON = re.compile(r"^[^\x00-\x1f\x7f]{1,300}$")  # one line of text


def validate_app_name(value: object, *, where: str = "app") -> str:
    if not isinstance(value, str) or not APP_NAME_PATTERN.match(value):
        raise UsageError(
            f"{where}: {value!r} is not a valid app name: use lower-case letters, digits, '-' "
            "or '_', starting with a letter (at most 63 characters)"
        )
    return value


def tarball_name(app: str, version: str) -> str:
    return f"{app}-{version}.tar.gz"


@dataclass(frozen=True)
class Manifest:
    app: str
    version: str
    tarball: str
    sha256: str
    size: int
    created: str
    source_commit: str | None = None
    build_id: str | None = None
    # Why this release has no rollback path (an irreversible data migration, say): a deployment
    # of it is High Risk. Absent (older manifests too): it can be rolled back.
    irreversible: str | None = None

    def to_json(self) -> bytes:
        """Canonical bytes: sorted keys, fixed indentation, optional fields only when set."""
        data = {k: v for k, v in asdict(self).items() if v is not None}
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, *, source: str) -> Manifest:
        """Parse and validate manifest bytes; VerificationError naming ``source`` and the field."""

        def bad(field: str, problem: str, value: object = None) -> VerificationError:
            got = f" (got {value!r})" if value is not None else ""
            return VerificationError(f"{source}: field '{field}': {problem}{got}")

        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VerificationError(f"{source}: manifest is not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise VerificationError(f"{source}: manifest must be a JSON object")
        known = {"app", "version", "tarball", "sha256", "size", "created", "source_commit",
                 "build_id", "irreversible"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise bad(unknown[0], "unknown field in manifest")
        for field in ("app", "version", "tarball", "sha256", "size", "created"):
            if field not in raw:
                raise bad(field, "missing")
        app = raw["app"]
        if not isinstance(app, str) or not APP_NAME_PATTERN.match(app):
            raise bad("app", "not a valid app name", app)
        try:
            version = validate_version(raw["version"], where=f"{source}: field 'version'")
        except VersionError as exc:
            raise VerificationError(exc.message) from None
        if raw["tarball"] != tarball_name(app, version):
            raise bad("tarball", f"must be {tarball_name(app, version)!r}", raw["tarball"])
        sha256 = raw["sha256"]
        if not isinstance(sha256, str) or not _SHA256.match(sha256):
            raise bad("sha256", "must be 64 lower-case hex digits", sha256)
        size = raw["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise bad("size", "must be a non-negative integer", size)
        created = raw["created"]
        try:
            if not isinstance(created, str):
                raise ValueError
            datetime.fromisoformat(created)
        except ValueError:
            raise bad("created", "must be an ISO 8601 timestamp", created) from None
        for field in ("source_commit", "build_id"):
            value = raw.get(field)
            if value is not None and (not isinstance(value, str) or not _TEXT_FIELD.match(value)):
                raise bad(field, "must be printable text without spaces (at most 128)", value)
        irreversible = raw.get("irreversible")
        if irreversible is not None and (
            not isinstance(irreversible, str) or not _REASON.match(irreversible)
        ):
            raise bad("irreversible", "must say why, in one line of printable text (at most "
                      "300 characters)", irreversible)
        return cls(
            app=app, version=version, tarball=raw["tarball"], sha256=sha256, size=size,
            created=created, source_commit=raw.get("source_commit"), build_id=raw.get("build_id"),
            irreversible=irreversible,
        )
