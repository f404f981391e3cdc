#!/usr/bin/python
"""Ansible module: poll an HTTP health endpoint until it answers as expected (stdlib only)."""

from __future__ import annotations

# ruff: noqa: E402  (Ansible modules put their documentation before the imports)

DOCUMENTATION = r"""
---
module: deployer_http_check
short_description: Wait until an application's health endpoint reports the expected release
description:
  - Requests O(url) every O(interval) seconds until one answer is healthy or O(deadline) has
    passed. An answer is healthy when its status is O(expect_status), its JSON field
    O(version_field) equals O(expected_version) (unless O(version_field) is empty), and it came
    back within O(max_latency_ms).
  - With O(single_attempt), makes exactly one request; with O(fail_on_unhealthy=false), reports
    an unhealthy result without failing. Never reports a change.
options:
  url:
    description: The health URL, for example V(http://127.0.1.1:8000/health).
    type: str
    required: true
  expect_status:
    description: The HTTP status a healthy answer has.
    type: int
    default: 200
  version_field:
    description: The JSON field holding the running version; an empty string disables the check.
    type: str
    default: version
  expected_version:
    description: The version the field must equal.
    type: str
    default: ''
  request_timeout:
    description: Seconds one request may take.
    type: float
    default: 2
  deadline:
    description: Seconds to keep trying.
    type: float
    default: 30
  interval:
    description: Seconds between attempts.
    type: float
    default: 0.2
  max_latency_ms:
    description: A healthy answer slower than this many milliseconds counts as unhealthy.
    type: int
    default: 2000
  single_attempt:
    description: Make one request only.
    type: bool
    default: false
  fail_on_unhealthy:
    description: Fail the task when no healthy answer came before the deadline.
    type: bool
    default: true
author: deployer
"""

EXAMPLES = r"""
- name: Wait until the node serves release 1.1.0
  deployer_http_check:
    url: http://127.0.1.1:8000/health
    expected_version: 1.1.0
    deadline: 30
"""

RETURN = r"""
healthy:
  description: Whether a healthy answer came.
  type: bool
  returned: always
attempts:
  description: Requests made.
  type: int
  returned: always
elapsed:
  description: Seconds spent.
  type: float
  returned: always
status:
  description: HTTP status of the last answer (0 when none came).
  type: int
  returned: always
body:
  description: The last answer's body (first 2000 characters).
  type: str
  returned: always
version:
  description: The version the last answer reported, or an empty string.
  type: str
  returned: always
latency_ms:
  description: Milliseconds the last request took.
  type: float
  returned: always
reason:
  description: Why the last answer was not healthy (empty when healthy).
  type: str
  returned: always
"""

import json
import time
import urllib.error
import urllib.request
from typing import Any

from ansible.module_utils.basic import AnsibleModule

BODY_LIMIT = 2000


def probe(opener: urllib.request.OpenerDirector, url: str, timeout: float) -> tuple[int, str, float, str]:
    """One request: (status, body, latency in ms, transport error or '')."""
    start = time.monotonic()
    try:
        with opener.open(url, timeout=timeout) as response:
            status = int(response.status)
            body = response.read(64 * 1024).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
        try:
            body = exc.read(64 * 1024).decode("utf-8", "replace")
        except OSError:
            body = ""
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return 0, "", (time.monotonic() - start) * 1000, f"request failed: {reason}"
    return status, body, (time.monotonic() - start) * 1000, ""


def judge(params: dict[str, Any], status: int, body: str, latency_ms: float) -> tuple[str, str]:
    """(reason it is unhealthy or '', reported version)."""
    version = ""
    field = params.get("version_field") or ""
    if field:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if isinstance(document, dict) and field in document:
            version = str(document[field])
    if status != int(params["expect_status"]):
        return f"status {status}, expected {params['expect_status']}", version
    if field:
        if not version:
            return f"the answer has no JSON field {field!r}", version
        if version != str(params.get("expected_version") or ""):
            return f"{field} is {version!r}, expected {params.get('expected_version')!r}", version
    if latency_ms > float(params["max_latency_ms"]):
        limit = params["max_latency_ms"]
        return f"answer took {latency_ms:.0f} ms, over the limit of {limit} ms", version
    return "", version


def run(params: dict[str, Any]) -> dict[str, Any]:
    """Poll until healthy or the deadline; returns the module result (never raises for health)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = max(0.0, float(params.get("deadline", 30)))
    interval = max(0.01, float(params.get("interval", 0.2)))
    timeout = float(params.get("request_timeout", 2))
    start = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        status, body, latency_ms, error = probe(opener, params["url"], timeout)
        reason, version = (error, "") if error else judge(params, status, body, latency_ms)
        elapsed = time.monotonic() - start
        if not reason or params.get("single_attempt") or elapsed + interval > deadline:
            break
        time.sleep(interval)
    return {
        "changed": False,
        "url": params["url"],
        "healthy": not reason,
        "attempts": attempts,
        "elapsed": round(time.monotonic() - start, 3),
        "status": status,
        "body": body[:BODY_LIMIT],
        "version": version,
        "latency_ms": round(latency_ms, 1),
        "reason": reason,
    }


ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "url": {"type": "str", "required": True},
    "expect_status": {"type": "int", "default": 200},
    "version_field": {"type": "str", "default": "version"},
    "expected_version": {"type": "str", "default": ""},
    "request_timeout": {"type": "float", "default": 2},
    "deadline": {"type": "float", "default": 30},
    "interval": {"type": "float", "default": 0.2},
    "max_latency_ms": {"type": "int", "default": 2000},
    "single_attempt": {"type": "bool", "default": False},
    "fail_on_unhealthy": {"type": "bool", "default": True},
}


def failure(params: dict[str, Any], result: dict[str, Any]) -> str:
    """The message the task fails with, or '' when it does not fail."""
    if result["healthy"] or not params["fail_on_unhealthy"]:
        return ""
    return (
        f"{params['url']} is not healthy after {result['attempts']} attempt(s) "
        f"in {result['elapsed']:.1f}s: {result['reason']}"
    )


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = run(module.params)
    message = failure(module.params, result)
    if message:
        module.fail_json(msg=message, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
