"""Callback plugin bench_timeline: every task's start and end per host, with the controller's
wall clock, as JSON lines appended to the file named by $BENCH_TIMELINE (nothing without it).
The benchmarks enable it for the plain playbook (and under Mitogen) to split its time into
phases the way deployer's events split deployer's."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timeline"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        path = os.environ.get("BENCH_TIMELINE")
        self._out = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - closed at the end

    def _write(self, kind: str, host: str, task: str) -> None:
        if self._out is not None:
            self._out.write(json.dumps({"t": time.time(), "kind": kind, "host": host, "task": task}) + "\n")
            self._out.flush()

    def v2_runner_on_start(self, host: Any, task: Any) -> None:
        self._write("start", host.get_name(), task.get_name())

    def _end(self, kind: str, result: Any) -> None:
        self._write(kind, result._host.get_name(), result._task.get_name())

    def v2_runner_on_ok(self, result: Any) -> None:
        self._end("ok", result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._end("failed", result)

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._end("skipped", result)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        self._write("stats", "", "")
        if self._out is not None:
            self._out.close()
            self._out = None
