"""The desired-version pointer: one value per environment, the version to run, written by
whoever may deploy (``deployer pointer set``, or any tool that writes the file, the URL or the
SSM parameter) and read by the environment's own runner.

Its value is a version (``1.4.2``: what a person with only ``ssm:PutParameter`` writes), or the
JSON ``deployer pointer set`` writes, with a reason and the requester::

    {"version": "1.4.2", "reason": "rollback: checkout errors", "requester": "ana@laptop",
     "set_at": "2026-12-07T03:12:09Z"}

and, when the request brings something to the environment's gates (:mod:`deployer.gates`), the
change it implements (``change``), why it is High Risk (``high_risk``), signed approvals
(``approvals``: each as ``deployer approval sign`` writes it) and the requester's signature of
the request (``signed``: ``{"request": {...}, "signature": "..."}``, made with the requester's
key by ``pointer set --requester-key``), so that the runner knows the requester by key.

A :class:`Pointer` is the seam: it reads and writes that text, and the status text the runner
publishes beside it; file, HTTP and SSM implement it (``_file``, ``_http``, ``_ssm``), and
:class:`deployer.testing.FakePointer` stands in for it in unit tests. Every write of the pointer
gives a new *revision* (the file's change time and digest, the HTTP ETag, the SSM parameter's
version): writing the same version again is a new request (a retry after a failure).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Protocol

from .._errors import PointerError, VersionError
from .._versions import validate_version

__all__ = ["Desired", "Pointer", "PointerValue", "desired_from", "get_desired", "set_desired"]

# The longest text a pointer value may be (an SSM standard parameter holds 4 KB).
MAX_VALUE = 4096


@dataclass(frozen=True)
class PointerValue:
    """The pointer's text as read, and the revision it has."""

    text: str
    revision: str


class Pointer(Protocol):
    """One environment's pointer and the status beside it."""

    @property
    def where(self) -> str:
        """The pointer, as messages name it (a path, a URL, ssm:/name)."""
        ...

    @property
    def status_where(self) -> str:
        """Where the status is published."""
        ...

    def read(self) -> PointerValue | None:
        """The pointer's value, or None when it was never written (or is empty)."""
        ...

    def write(self, text: str) -> str:
        """Write a new value; its revision."""
        ...

    def read_status(self) -> str | None:
        """The status last published, or None."""
        ...

    def write_status(self, text: str) -> None:
        """Publish the status."""
        ...


@dataclass(frozen=True)
class Desired:
    """What the pointer asks for."""

    version: str
    reason: str = ""
    requester: str = ""
    set_at: str = ""
    revision: str = ""
    # What the request brings to the gates: its change, why it is High Risk, signed approvals
    # and the requester's signed request ({"request": {...}, "signature": "..."}).
    change: str = ""
    high_risk: str = ""
    approvals: tuple[dict[str, Any], ...] = ()
    signed: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """As the status and the journal keep it (the approvals and the signature themselves
        are in the evidence record)."""
        shown: dict[str, Any] = {"version": self.version, "reason": self.reason,
                                 "requester": self.requester, "set_at": self.set_at,
                                 "revision": self.revision}
        if self.change:
            shown["change"] = self.change
        if self.high_risk:
            shown["high_risk"] = self.high_risk
        if self.approvals:
            shown["approvals"] = len(self.approvals)
        if self.signed is not None:
            shown["signed"] = True
        return shown

    def to_text(self) -> str:
        """The value ``pointer set`` writes (the revision is the store's to give)."""
        value: dict[str, Any] = {"version": self.version, "reason": self.reason,
                                 "requester": self.requester, "set_at": self.set_at}
        if self.change:
            value["change"] = self.change
        if self.high_risk:
            value["high_risk"] = self.high_risk
        if self.approvals:
            value["approvals"] = list(self.approvals)
        if self.signed is not None:
            value["signed"] = self.signed
        return json.dumps(value, sort_keys=True)

    @classmethod
    def parse(cls, value: PointerValue, *, where: str) -> Desired:
        """The pointer's text as a request: a bare version or the JSON of ``pointer set``.
        PointerError naming the pointer and the value otherwise."""
        text = value.text.strip()
        fields: dict[str, str] = {}
        if text.startswith("{"):
            try:
                raw = json.loads(text)
            except ValueError:
                raise PointerError(f"pointer {where}: not JSON nor a version (got {_cut(text)!r})") \
                    from None
            if not isinstance(raw, dict) or not isinstance(raw.get("version"), str):
                raise PointerError(f"pointer {where}: its JSON has no 'version' string (got "
                                   f"{_cut(text)!r})")
            for name in ("reason", "requester", "set_at", "change", "high_risk"):
                if not isinstance(raw.get(name) or "", str):
                    raise PointerError(f"pointer {where}: field {name!r} is not a string")
                fields[name] = str(raw.get(name) or "")
            approvals = raw.get("approvals") or []
            if not isinstance(approvals, list) or not all(
                    isinstance(a, dict) and isinstance(a.get("approval"), dict)
                    and isinstance(a.get("signature"), str) for a in approvals):
                raise PointerError(f"pointer {where}: field 'approvals' is not a list of signed "
                                   "approvals (each as `deployer approval sign` writes it)")
            signed = raw.get("signed")
            if signed is not None and not (isinstance(signed, dict)
                                           and isinstance(signed.get("request"), dict)
                                           and isinstance(signed.get("signature"), str)):
                raise PointerError(f"pointer {where}: field 'signed' is not a signed request "
                                   "({\"request\": {...}, \"signature\": \"...\"})")
            version = raw["version"]
        else:
            version, approvals, signed = text, [], None
        try:
            validate_version(version, where=f"pointer {where}")
        except VersionError as exc:
            raise PointerError(exc.message, hint="write a version with `deployer pointer set`") from None
        return cls(version=version, revision=value.revision, reason=fields.get("reason", ""),
                   requester=fields.get("requester", ""), set_at=fields.get("set_at", ""),
                   change=fields.get("change", ""), high_risk=fields.get("high_risk", ""),
                   approvals=tuple(approvals), signed=signed)

    @classmethod
    def from_dict(cls, data: object) -> Desired | None:
        if not isinstance(data, dict) or not isinstance(data.get("version"), str):
            return None
        text = {k: str(data.get(k) or "") for k in
                ("version", "reason", "requester", "set_at", "revision", "change", "high_risk")}
        return cls(version=text["version"], reason=text["reason"], requester=text["requester"],
                   set_at=text["set_at"], revision=text["revision"], change=text["change"],
                   high_risk=text["high_risk"])


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def desired_from(value: PointerValue | None, *, where: str) -> Desired | None:
    """What a pointer value asks for (None: nothing written yet); PointerError for a value
    that is not a request."""
    if value is None or not value.text.strip():
        return None
    if len(value.text) > MAX_VALUE:
        raise PointerError(f"pointer {where}: its value is longer than {MAX_VALUE} characters")
    return Desired.parse(value, where=where)


def get_desired(pointer: Pointer) -> Desired | None:
    """What the pointer asks for now (None: nothing written yet)."""
    return desired_from(pointer.read(), where=pointer.where)


def set_desired(pointer: Pointer, desired: Desired) -> Desired:
    """Write ``desired``; it as written, with its revision."""
    revision = pointer.write(desired.to_text())
    return replace(desired, revision=revision)
