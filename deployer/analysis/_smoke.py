"""Further smoke tests, run again and again while a release soaks.

- :class:`CommandCheck`: any executable. It gets ``DEPLOYER_TARGET_URL``, ``DEPLOYER_VERSION``,
  ``DEPLOYER_ENV`` and ``DEPLOYER_NODE`` in its environment; a non-zero exit (or running past
  its timeout) is a failure, reported with the tail of its output, the values of its
  environment's secret-looking variables (``AWS_SECRET_ACCESS_KEY``, ``*_TOKEN``...) redacted.
- :class:`HttpCheck`: a GET of a URL that must answer an expected status, and optionally
  contain a text or have a JSON field equal to a value (``{version}`` in it is the release).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..adapters.redaction import Redactor, env_secrets
from ._model import RuleResult, Status

__all__ = ["CommandCheck", "HttpCheck", "SmokeCheck", "SmokeContext"]

_TAIL_LINES = 15
_TAIL_CHARS = 1500


@dataclass(frozen=True)
class SmokeContext:
    """What a further smoke test is told about the release under test."""

    target_url: str = ""
    version: str = ""
    environment: str = ""
    node: str = ""

    def env(self) -> dict[str, str]:
        return {
            "DEPLOYER_TARGET_URL": self.target_url,
            "DEPLOYER_VERSION": self.version,
            "DEPLOYER_ENV": self.environment,
            "DEPLOYER_NODE": self.node,
        }


class SmokeCheck(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def interval(self) -> float: ...

    def run(self, context: SmokeContext, stop: threading.Event) -> RuleResult:
        """Run once; return promptly (a failure) when ``stop`` is set."""
        ...


def _tail(text: str) -> str:
    lines = text.strip().splitlines()[-_TAIL_LINES:]
    return "\n".join(lines)[-_TAIL_CHARS:]


@dataclass(frozen=True)
class CommandCheck:
    """Run ``argv`` (a list, or a string split like a shell would, without a shell)."""

    argv: Sequence[str] | str
    label: str | None = None
    interval: float = 10.0
    timeout: float = 30.0
    cwd: str | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)

    @property
    def args(self) -> list[str]:
        return shlex.split(self.argv) if isinstance(self.argv, str) else list(self.argv)

    @property
    def name(self) -> str:
        return self.label or f"smoke: {shlex.join(self.args)}"

    def run(self, context: SmokeContext, stop: threading.Event) -> RuleResult:
        env = {**os.environ, **self.extra_env, **context.env()}
        base = RuleResult(rule=self.name, status=Status.OK, indicator="smoke_exit_code",
                          threshold=0, comparison="!=", source="smoke", group="")
        try:
            proc = subprocess.Popen(
                self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.cwd, text=True, errors="replace", start_new_session=True,
            )
        except OSError as exc:
            return replace(base, status=Status.BREACH, detail=f"cannot run {self.args[0]!r}: {exc}")
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read() if proc.stdout else ""),
                                  daemon=True)
        reader.start()
        deadline = time.monotonic() + self.timeout
        why = ""
        while proc.poll() is None:
            if stop.is_set():
                why = "stopped"
            elif time.monotonic() >= deadline:
                why = f"timed out after {self.timeout:g} s"
            if why:
                proc.kill()
                break
            stop.wait(0.05)
        code = proc.wait()
        reader.join(timeout=2)
        # The command has deployer's environment: what it prints goes to the journal and the
        # console, so no secret of that environment goes with it.
        tail = Redactor(env_secrets(env)).text(_tail("".join(out)))
        if why:
            return replace(base, status=Status.BREACH, value=None, detail=f"{why}\n{tail}".strip())
        if code != 0:
            return replace(base, status=Status.BREACH, value=float(code),
                            detail=f"exit {code}" + (f"\n{tail}" if tail else ""))
        return replace(base, value=0.0)


@dataclass(frozen=True)
class HttpCheck:
    """GET ``url`` (``{target_url}`` in it is the context's target URL)."""

    url: str
    expect_status: int = 200
    body_contains: str | None = None
    json_field: str | None = None
    # The value the JSON field must have; ``{version}`` is the release version.
    json_equals: str | None = None
    label: str | None = None
    interval: float = 5.0
    timeout: float = 5.0

    @property
    def name(self) -> str:
        """The check as configured; its results name the URL as requested (see :meth:`run`)."""
        return self.label or f"http: {self.url}"

    def requested_url(self, context: SmokeContext) -> str:
        return self.url.replace("{target_url}", context.target_url.rstrip("/"))

    def run(self, context: SmokeContext, stop: threading.Event) -> RuleResult:
        url = self.requested_url(context)
        # Named by the URL it requested, not the template: the verdict, the journal and
        # `history` show this name.
        base = RuleResult(rule=self.label or f"http: {url}", status=Status.OK, indicator="http_status",
                          threshold=float(self.expect_status), comparison="!=", source="smoke")
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                status, body = resp.status, resp.read(1 << 20)
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read(1 << 20)
        except (OSError, ValueError) as exc:
            return replace(base, status=Status.BREACH, detail=f"GET {url}: {getattr(exc, 'reason', exc)}")
        text = body.decode(errors="replace")
        failed = self._problem(status, text, context)
        if failed:
            return replace(base, status=Status.BREACH, value=float(status),
                            detail=f"GET {url}: {failed}\n{_tail(text)}".strip())
        return replace(base, value=float(status))

    def _problem(self, status: int, text: str, context: SmokeContext) -> str:
        if status != self.expect_status:
            return f"status {status}, expected {self.expect_status}"
        if self.body_contains is not None and self.body_contains not in text:
            return f"the answer does not contain {self.body_contains!r}"
        if self.json_field is not None:
            try:
                data: Any = json.loads(text)
                for key in self.json_field.split("."):
                    data = data[key]
            except (ValueError, KeyError, TypeError, IndexError):
                return f"the answer has no JSON field {self.json_field!r}"
            if self.json_equals is not None:
                want = self.json_equals.replace("{version}", context.version)
                if str(data) != want:
                    return f"JSON field {self.json_field!r} is {data!r}, expected {want!r}"
        return ""
