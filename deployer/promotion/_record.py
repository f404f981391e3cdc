"""A promotion record: what an environment attests when a release ran there successfully (soak
included, every serving node on it), signed with that environment's key.

On disk (or in S3) a record is canonical JSON (sorted keys, no spaces), so the bytes that were
signed are the bytes that are read back::

    {"app": "hello", "at": "2026-12-07T10:05:00Z", "checks": ["signature", "smoke", "soak"],
     "deployment": "01JEXS7V8T6Q3M0W2ZB1K9D4RC", "environment": "preprod",
     "nodes": ["node1", "node2"], "schema": 1, "sha256": "9f2c...", "version": "1.4.2"}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .._errors import VerificationError
from .._ids import is_ulid
from .._versions import validate_version
from ..artefacts._manifest import validate_app_name

__all__ = ["RECORD_SCHEMA", "PromotionRecord"]

RECORD_SCHEMA = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_ENV = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class PromotionRecord:
    """One environment's attestation that one release (by digest) ran there successfully."""

    app: str
    version: str
    sha256: str
    environment: str
    # The deployment's global id (the ULID in its journal, events and status).
    deployment: str
    # When it ended, UTC (2026-12-07T10:05:00Z).
    at: str
    # The checks it passed: signature, the gates (promotion), smoke, soak.
    checks: tuple[str, ...] = ()
    # The nodes serving it when the record was made (every one on the release).
    nodes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": RECORD_SCHEMA, "app": self.app, "version": self.version,
                "sha256": self.sha256, "environment": self.environment,
                "deployment": self.deployment, "at": self.at, "checks": list(self.checks),
                "nodes": list(self.nodes)}

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, *, source: str) -> PromotionRecord:
        """Parse a record; VerificationError naming ``source`` and the field when malformed."""

        def bad(problem: str) -> VerificationError:
            return VerificationError(f"{source}: not a promotion record: {problem}")

        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise bad("not JSON") from None
        if not isinstance(raw, dict):
            raise bad("not a JSON object")
        if raw.get("schema") != RECORD_SCHEMA:
            raise bad(f"schema {raw.get('schema')!r}, expected {RECORD_SCHEMA}")
        text = {}
        for name in ("app", "version", "sha256", "environment", "deployment", "at"):
            value = raw.get(name)
            if not isinstance(value, str):
                raise bad(f"field {name!r} missing or not a string")
            text[name] = value
        checks, nodes = raw.get("checks", []), raw.get("nodes", [])
        if not (isinstance(checks, list) and all(isinstance(c, str) for c in checks)):
            raise bad("field 'checks' is not a list of strings")
        if not (isinstance(nodes, list) and all(isinstance(n, str) for n in nodes)):
            raise bad("field 'nodes' is not a list of strings")
        try:
            validate_app_name(text["app"])
            validate_version(text["version"])
        except Exception as exc:
            raise bad(str(exc)) from None
        if not _SHA256.match(text["sha256"]):
            raise bad("field 'sha256' is not a sha256 digest")
        if not _ENV.match(text["environment"]):
            raise bad("field 'environment' is not an environment name")
        if not is_ulid(text["deployment"]):
            raise bad("field 'deployment' is not a deployment id (ULID)")
        return cls(checks=tuple(checks), nodes=tuple(nodes), **text)

    @property
    def key(self) -> str:
        """Where it is kept in a store (immutable: one record per deployment)."""
        return record_key(self.app, self.version, self.environment, self.deployment)


def record_key(app: str, version: str, environment: str, deployment: str) -> str:
    return f"{app}/{version}/{environment}/{deployment}.json"
