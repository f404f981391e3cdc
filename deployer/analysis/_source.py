"""The seam between the judge and the systems it reads: :class:`MetricSource` (its fake for unit
tests: :class:`deployer.testing.FakeSource`)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from ._model import Measurement

__all__ = ["MetricSource"]


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
