"""Change records in a change-management system: the seam, and a ServiceNow-style Table API.

A deployment that needs an approved change names it (``--change CHG0000001``). The change is
read by its number::

    GET {url}/api/now/table/change_request?sysparm_query=number=CHG0000001&sysparm_limit=1
    -> {"result": [{"sys_id": "…", "number": "CHG0000001", "state": "-1", "approval": "approved",
                    "risk": "3", "start_date": "2026-12-08 09:00:00", "end_date": "…", …}]}

and at the end the deployment's outcome is written to it (work notes; and the close code and
notes once it succeeded or failed)::

    PATCH {url}/api/now/table/change_request/<sys_id>   {"work_notes": "…", "close_code": …}

Credentials (a user and password, or a bearer token) come from environment variables or files
named in the config, are read when a request is made, go only into its ``Authorization``
header, and never into a message, the journal or a command line: an error from the API is
reported by its status and the API's own message, with any credential value cut out.

- :class:`ChangeProvider`: the seam (one fake in :mod:`deployer.testing`);
- :class:`ChangeApi`: the HTTP client.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from .._errors import GateRefused, UsageError
from ..config import ChangeApiConfig

__all__ = ["CHANGE_NUMBER", "ChangeApi", "ChangeProvider", "ChangeRecord", "check_change_number"]

# What a change number may be (it goes into a query: no operators).
CHANGE_NUMBER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")


def check_change_number(value: str) -> str:
    if not CHANGE_NUMBER.match(value):
        raise UsageError(f"--change: {value!r} is not a change number (letters, digits, '.', '_' "
                         "or '-', e.g. CHG0000001)")
    return value


@dataclass(frozen=True)
class ChangeRecord:
    """A change as the change-management system has it (times: seconds since the epoch)."""

    number: str
    sys_id: str
    state: str
    approval: str
    risk: str = ""
    start: float | None = None
    end: float | None = None
    short_description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ChangeProvider(Protocol):
    """Where change records are read and written."""

    @property
    def where(self) -> str: ...

    def read(self, number: str) -> ChangeRecord | None:
        """The change ``number`` (None: there is none); GateRefused when it cannot be read."""
        ...

    def update(self, sys_id: str, fields: Mapping[str, str]) -> None:
        """Write ``fields`` (work_notes, close_code, close_notes) to the change; GateRefused
        when it cannot."""
        ...


def _parse_time(value: object) -> float | None:
    """The API's times: ``2026-12-08 09:00:00`` (UTC), or ISO 8601."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _field(raw: Mapping[str, Any], name: str) -> str:
    """A field's value; with ``sysparm_display_value=all`` a field is {value, display_value}."""
    value = raw.get(name, "")
    if isinstance(value, dict):
        value = value.get("value", "")
    return "" if value is None else str(value)


class ChangeApi:
    """A ServiceNow-style Table API (see the module documentation)."""

    def __init__(self, config: ChangeApiConfig, *, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self._environ = environ if environ is not None else os.environ

    @property
    def where(self) -> str:
        return f"{self.config.url.rstrip('/')}/api/now/table/{self.config.table}"

    def _secret(self, env: str | None, file: Path | None, what: str) -> str:
        if env:
            value = self._environ.get(env, "")
            if not value:
                raise GateRefused(f"the change API's {what} is not set: ${env} is empty",
                                  hint=f"set {env} in deployer's environment", gate="change")
            return value
        assert file is not None
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise GateRefused(f"cannot read the change API's {what} from {file}: {exc.strerror}",
                              gate="change") from None

    def _secrets(self) -> list[str]:
        """The credential values, to keep them out of any message."""
        found = []
        c = self.config
        for env, file, what in ((c.user_env, c.user_file, "user"),
                                (c.password_env, c.password_file, "password"),
                                (c.token_env, c.token_file, "token")):
            if env or file:
                with contextlib.suppress(GateRefused):
                    found.append(self._secret(env, file, what))
        return [s for s in found if len(s) >= 4]

    def _authorization(self) -> str:
        c = self.config
        if c.token_env or c.token_file:
            return "Bearer " + self._secret(c.token_env, c.token_file, "token")
        user = self._secret(c.user_env, c.user_file, "user")
        password = self._secret(c.password_env, c.password_file, "password")
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={
            "Accept": "application/json", "Content-Type": "application/json",
            "Authorization": self._authorization(),
        })
        what = f"{method} {url.split('?')[0]}"
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout) as response:
                answer = json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise GateRefused(self._clean(f"the change API answered {what} with HTTP {exc.code}"
                                          + _api_message(exc)), gate="change") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise GateRefused(self._clean(f"cannot reach the change API ({what}): {reason}"),
                              hint="check gates.change_api.url and that this machine reaches it",
                              gate="change") from None
        except ValueError:
            raise GateRefused(f"the change API's answer to {what} is not JSON", gate="change") from None
        if not isinstance(answer, dict):
            raise GateRefused(f"the change API's answer to {what} is not a JSON object", gate="change")
        return answer

    def _clean(self, text: str) -> str:
        for secret in self._secrets():
            text = text.replace(secret, "<redacted>")
        return text

    def read(self, number: str) -> ChangeRecord | None:
        check_change_number(number)
        query = urllib.parse.urlencode({"sysparm_query": f"number={number}", "sysparm_limit": "1"})
        answer = self._request("GET", f"{self.where}?{query}")
        results = answer.get("result")
        if not isinstance(results, list):
            raise GateRefused(f"the change API's answer for {number} has no 'result' list",
                              gate="change")
        if not results:
            return None
        raw = results[0]
        if not isinstance(raw, dict):
            raise GateRefused(f"the change API's record for {number} is not an object", gate="change")
        return ChangeRecord(
            number=_field(raw, "number") or number, sys_id=_field(raw, "sys_id"),
            state=_field(raw, "state"), approval=_field(raw, "approval"), risk=_field(raw, "risk"),
            start=_parse_time(_field(raw, "start_date")), end=_parse_time(_field(raw, "end_date")),
            short_description=_field(raw, "short_description")[:200],
        )

    def update(self, sys_id: str, fields: Mapping[str, str]) -> None:
        if not re.match(r"^[A-Za-z0-9_-]{1,64}$", sys_id):
            raise GateRefused(f"the change's sys_id {sys_id!r} is not one", gate="change")
        self._request("PATCH", f"{self.where}/{sys_id}", dict(fields))


def _api_message(exc: urllib.error.HTTPError) -> str:
    """The API's own error message (ServiceNow: {"error": {"message": …}}), if it gave one."""
    try:
        body = json.loads(exc.read() or b"{}")
        message = body.get("error", {}).get("message", "")
    except (ValueError, AttributeError, OSError):
        return ""
    return f": {str(message)[:200]}" if message else ""
