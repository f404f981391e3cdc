"""(e) Blue-green on a lab with two legs of 2 nodes, under load through the strict HAProxy:

- a good release: failed requests (goal 0), the switch itself (one runtime-API operation: how
  long it took) and the time from the switch until every new request lands on the new leg;
- ``1.3.0-errors`` (healthy at start, 500 a few seconds later) caught by the soak: time from the
  first failing request to the switch-back (goal <= 5 s at >= 20 requests/s) and the requests
  that failed in that window;
- an operator's switch-back (``deployer rollback``: the idle leg still holds the release):
  failed requests (goal 0).

A probe thread sends one request at a time to the frontend (a new connection each, ~100/s) and
records when each started and which release answered; the switches' moments come from the
deployment's own record (``blue_green.switches``).
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import yaml

from deployer.lab._load import LoadGenerator, LoadReport

from ._harness import BenchLab, DeployRun, bench_lab, median, run_deployer, say

NODES_PER_LEG = 2
CONCURRENCY = 8
SOAK = 20.0
_VERSION = re.compile(r"\(v([^)]+)\)")


@dataclass
class Probe:
    """Sequential requests to the frontend: (start time, HTTP status, release) each."""

    url: str
    samples: list[tuple[float, int, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Probe:
        self._thread = threading.Thread(target=self._loop, name="probe", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        parts = urlsplit(self.url)
        deadline = time.monotonic() + 600  # bounded whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.time()
            status, version = 0, ""
            try:
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=2)
                conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                conn.close()
                status = resp.status
                found = _VERSION.search(body)
                version = found.group(1) if found else ""
            except OSError:
                pass
            self.samples.append((started, status, version))
            self._stop.wait(0.01)

    def first_failure_after(self, moment: float) -> float | None:
        return next((t for t, status, _ in self.samples if t >= moment and status != 200), None)

    def last_old_after(self, moment: float, new_version: str) -> float | None:
        """The start of the last request after ``moment`` that an older release answered."""
        old = [t for t, status, v in self.samples if t >= moment and status == 200 and v != new_version]
        return max(old) if old else None


def _under_load(lab: BenchLab, action: Callable[[], DeployRun]) -> tuple[LoadReport, DeployRun]:
    load = LoadGenerator(
        lab.frontend_url, concurrency=CONCURRENCY, max_requests=1_000_000, max_seconds=600,
        slow_share=0.2, slow_ms=300,
    ).start()
    time.sleep(0.5)
    try:
        result = action()
        time.sleep(0.5)
    finally:
        report = load.stop()
    return report, result


def _switches(run: DeployRun) -> list[dict[str, Any]]:
    return list(run.outcome.get("blue_green", {}).get("switches", []))


def _config(lab: BenchLab) -> Any:
    """The lab's blue-green config, its soak watching HAProxy's counters under the load (no
    further smoke test: the load is the traffic)."""
    data = yaml.safe_load(lab.lab.config_path.read_text())
    data["state_dir"] = "state-bluegreen"
    analysis = data["environments"]["lab"]["analysis"]
    analysis.update(interval=0.5, window=3, failure_limit=2, min_samples=10, smoke={"http": []})
    path = lab.dir / "deployer-bluegreen.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run() -> dict[str, Any]:
    say(f"== bluegreen: 2 legs of {NODES_PER_LEG} nodes, {CONCURRENCY} clients (20% slow), "
        f"soak {SOAK:g}s on HAProxy's 5xx share")
    with bench_lab(NODES_PER_LEG, legs=True, soak=SOAK) as lab:
        config = _config(lab)
        good = lab.publish()
        with Probe(lab.frontend_url) as probe:
            deployed, good_run = _under_load(lab, lambda: run_deployer(lab, config, good))
        if good_run.outcome.get("status") != "succeeded":
            raise RuntimeError(f"the good release did not go live: {good_run.output[-2000:]}")
        (switch,) = _switches(good_run)
        last_old = probe.last_old_after(switch["at"], good)
        settle = max(0.0, (last_old or switch["at"]) - switch["at"])
        say(f"  good release: {deployed.line()}; switch: one operation in "
            f"{switch['seconds'] * 1000:.1f} ms; last request answered by the old leg started "
            f"{settle * 1000:.0f} ms after it")

        with Probe(lab.frontend_url) as probe:
            failing, bad_run = _under_load(lab, lambda: run_deployer(lab, config, "1.3.0-errors"))
        switches = _switches(bad_run)
        if bad_run.outcome.get("status") != "rolled_back" or len(switches) != 2:
            raise RuntimeError(f"1.3.0-errors was not switched back: {bad_run.output[-2000:]}")
        first_fail = probe.first_failure_after(switches[0]["at"])
        back = switches[1]["at"]
        to_switch_back = back - first_fail if first_fail is not None else None
        rate = failing.sent / failing.seconds if failing.seconds else 0.0
        say(f"  1.3.0-errors: {failing.line()} ({rate:.0f} requests/s); first failing request to "
            f"switch-back: {to_switch_back if to_switch_back is None else round(to_switch_back, 2)} s "
            f"(goal <= 5 s)")

        rolled, rollback_run = _under_load(lab, lambda: _rollback(lab, config))
        say(f"  operator's switch-back (rollback, one switch): {rolled.line()}; "
            f"took {rollback_run.seconds:.1f}s")
    return {
        "good": {**deployed.to_dict(), "switch_ms": round(switch["seconds"] * 1000, 2),
                 "old_leg_last_request_after_switch_ms": round(settle * 1000, 1),
                 "deploy_seconds": round(good_run.seconds, 2)},
        "caught": {**failing.to_dict(), "requests_per_s": round(rate, 1),
                   "first_failure_to_switch_back_s": None if to_switch_back is None
                   else round(to_switch_back, 3)},
        "operator_switch_back": {**rolled.to_dict(), "seconds": round(rollback_run.seconds, 2)},
        "probe_interval_ms": round(median([b[0] - a[0] for a, b in zip(
            probe.samples, probe.samples[1:], strict=False)] or [0.0]) * 1000, 1),
    }


def _rollback(lab: BenchLab, config: Any) -> DeployRun:
    import subprocess
    import sys

    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "deployer", "rollback", "--env", "lab", "--config", str(config),
         "--json", "--quiet"], capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"rollback failed: {proc.stdout[-1500:]} {proc.stderr[-1500:]}")
    return DeployRun(tool="deployer", version="rollback", seconds=time.monotonic() - t0,
                     rc=proc.returncode, out_of_lb={})
