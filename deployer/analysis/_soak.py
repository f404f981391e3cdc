"""The soak: the judge's rounds and the further smoke tests, each at its own interval, in
background threads for a bounded time, while the caller gets on with other work.

::

    soak = Soak(judge, duration=60, interval=2, smoke=[...], context=...).start()
    ...                       # roll the next batches; between them:
    if soak.breached(): ...   # fast, never blocks
    verdict = soak.wait()     # until the end of the soak (or its first breach)
    verdict = soak.stop()     # or end it now

A breach ends the soak at once (every thread stops); :meth:`stop` ends it within a fraction
of a second (waits are on an Event, never sleeps); a running smoke command is killed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType

from ._haproxy import HAProxySource
from ._judge import Judge
from ._model import Clock, RuleResult, Status, Verdict
from ._smoke import SmokeCheck, SmokeContext

__all__ = ["Soak"]

# Real seconds stop() and wait() give threads beyond their own bounds (a smoke command's
# timeout) before giving up on them.
_JOIN_GRACE = 5.0


class Soak:
    """Soak analysis over ``duration`` seconds; see the module documentation."""

    def __init__(
        self,
        judge: Judge,
        *,
        duration: float,
        interval: float = 2.0,
        smoke: Sequence[SmokeCheck] = (),
        context: SmokeContext | None = None,
        clock: Clock | None = None,
    ) -> None:
        if duration <= 0 or interval <= 0:
            raise ValueError("a soak needs a positive duration and interval")
        self.judge = judge
        self.duration = duration
        self.interval = interval
        self.smoke = list(smoke)
        self.context = context or SmokeContext()
        self.clock = clock or judge.clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._deadline = 0.0
        self._stopped_by = ""
        self._final: Verdict | None = None
        self._lock = threading.Lock()
        # Set by build_soak: comparison rules left out (no baseline), and the HAProxy source
        # (whose groups the caller updates as batches move to the new release).
        self.skipped: list[str] = []
        self.haproxy: HAProxySource | None = None

    # -- life cycle -----------------------------------------------------------------------

    def start(self, *, strict: bool = True) -> Soak:
        """Take the first sample of every source (``strict``: raising at once if one cannot be
        read; otherwise counting it as a round without data), then start the background threads
        and return."""
        if self._threads:
            raise RuntimeError("this soak was already started")
        self.judge.start(strict=strict)
        self._deadline = self.clock.now() + self.duration
        self._spawn("soak-analysis", self._analysis_loop)
        for i, check in enumerate(self.smoke):
            self._spawn(f"soak-smoke-{i}", lambda c=check: self._smoke_loop(c))  # type: ignore[misc]
        return self

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def breached(self) -> bool:
        """Whether the soak has failed so far. Fast and non-blocking."""
        return self.judge.breached()

    def verdict(self) -> Verdict:
        """The verdict so far (non-blocking); final once the soak has ended."""
        with self._lock:
            if self._final is not None:
                return self._final
        return self.judge.verdict()

    def wait(self, timeout: float | None = None) -> Verdict:
        """Block until the soak ends (its duration, or its first breach); return the final
        verdict. With ``timeout`` (real seconds) and the soak still running, the verdict so far."""
        bound = self.duration + self._longest_smoke() + _JOIN_GRACE if timeout is None else timeout
        self._join(bound)
        if self.running:
            return self.judge.verdict()
        return self._finish("")

    def stop(self) -> Verdict:
        """End the soak now and return its final verdict."""
        if self.running:
            self._stopped_by = "stopped before the end of the soak"
        self._stop.set()
        self._join(self._longest_smoke() + _JOIN_GRACE)
        return self._finish(self._stopped_by)

    def __enter__(self) -> Soak:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _longest_smoke(self) -> float:
        return max((getattr(c, "timeout", 0.0) for c in self.smoke), default=0.0)

    def _join(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        for t in self._threads:
            t.join(max(0.0, end - time.monotonic()))

    def _finish(self, reason: str) -> Verdict:
        with self._lock:
            if self._final is None:
                self._final = self.judge.verdict(final=True, reason=reason)
            return self._final

    # -- loops ----------------------------------------------------------------------------

    def _over(self) -> bool:
        return self._stop.is_set() or self.clock.now() >= self._deadline

    def _pause_until(self, when: float) -> bool:
        """Wait until ``when`` (capped at the deadline); False when the soak should end."""
        remaining = min(when, self._deadline) - self.clock.now()
        if remaining > 0 and self.clock.wait(self._stop, remaining):
            return False
        return not self._stop.is_set()

    def _analysis_loop(self) -> None:
        next_round = self.clock.now() + self.interval
        while self._pause_until(next_round):
            try:
                self.judge.evaluate()
            except Exception as exc:  # a bug must not end the soak silently: count it as no data
                self.judge.record(RuleResult(
                    rule="analysis", status=Status.NO_DATA, indicator="analysis",
                    detail=f"internal error: {exc!r}",
                ), smoke=False)
            if self.judge.breached() or self.clock.now() >= self._deadline:
                break
            now = self.clock.now()
            next_round = max(next_round + self.interval, now + self.interval / 10)
        self._end_if_breached()

    def _smoke_loop(self, check: SmokeCheck) -> None:
        while not self._over():
            started = self.clock.now()
            try:
                result = check.run(self.context, self._stop)
            except Exception as exc:  # same as above: a crashing check is a failing check
                result = RuleResult(rule=check.name, status=Status.BREACH, indicator="smoke",
                                    source="smoke", detail=f"internal error: {exc!r}")
            if self._stop.is_set() and not self.judge.breached():
                break  # interrupted by stop(): not the release's fault
            self.judge.record(result, smoke=True)
            if self.judge.breached() or not self._pause_until(started + check.interval):
                break
        self._end_if_breached()

    def _end_if_breached(self) -> None:
        if self.judge.breached():
            self._stop.set()
