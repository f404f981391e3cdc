"""The seam between the judge and the systems it reads: :class:`MetricSource`, and the one fake
of it (:class:`FakeSource`) for unit tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from ._model import Measurement

__all__ = ["FakeSource", "MetricSource"]


@runtime_checkable
class MetricSource(Protocol):
    """A system the judge reads indicators from.

    Each round the judge calls :meth:`collect` once (take a sample now; raise
    :class:`~deployer.AnalysisError` or :class:`~deployer.LoadBalancerError` if the system cannot
    be read), then :meth:`measure` for every rule that reads this source.
    """

    @property
    def name(self) -> str: ...

    @property
    def indicators(self) -> frozenset[str]:
        """The indicators :meth:`measure` knows (used to reject rules naming others)."""
        ...

    def collect(self, now: float) -> None: ...

    def measure(self, indicator: str, *, group: str = "all", window: float) -> Measurement: ...


# A scripted value: a constant Measurement, or a function of (time since the first collect,
# group, window) returning one.
Script = Measurement | Callable[[float, str, float], Measurement]


class FakeSource:
    """A metric source whose measurements are scripted: ``FakeSource({"errors": script})``.

    ``fail_collect`` makes :meth:`collect` raise (to test unreachable sources). ``collects``
    counts the calls; ``t`` is the time since the first one.
    """

    def __init__(
        self,
        scripts: Mapping[str, Script],
        *,
        name: str = "fake",
        fail_collect: Exception | None = None,
    ) -> None:
        self._name = name
        self._scripts = dict(scripts)
        self.fail_collect = fail_collect
        self.collects = 0
        self.t = 0.0
        self._t0: float | None = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def indicators(self) -> frozenset[str]:
        return frozenset(self._scripts)

    def collect(self, now: float) -> None:
        with self._lock:
            if self.fail_collect is not None:
                raise self.fail_collect
            if self._t0 is None:
                self._t0 = now
            self.t = now - self._t0
            self.collects += 1

    def measure(self, indicator: str, *, group: str = "all", window: float) -> Measurement:
        script = self._scripts[indicator]
        if isinstance(script, Measurement):
            return script
        with self._lock:
            t = self.t
        return script(t, group, window)
