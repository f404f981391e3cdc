"""The ``strategy:`` section: one model per kind, told apart by ``kind`` (``rolling`` when not
given).

Both kinds share what happens around the nodes (failure, pre-staging, an operator's
maintenance, an interrupted deployment); each adds its own shape: batches for ``rolling``, two
legs and a preview route for ``blue-green``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from ._base import NAME, Model, count_or_percent

__all__ = [
    "BlueGreenStrategy",
    "LegConfig",
    "RollingStrategy",
    "StrategyConfig",
    "StrategyKind",
]

StrategyKind = Literal["rolling", "blue-green"]


class _Common(Model):
    # On a failed batch or leg: roll back the nodes already updated, or halt and leave them.
    on_failure: Literal["rollback", "halt"] = "rollback"
    # Pull, verify and unpack on every node in parallel before the first drain.
    prestage: bool = True
    # Nodes that someone else put in MAINT or DRAIN on the load balancer: refuse to deploy
    # (the default), or skip them and leave them as they are. Either way they count as out of
    # service for min_healthy and are never put back into service by a deployment.
    operator_maintenance: Literal["refuse", "skip"] = "refuse"
    # Ansible forks; defaults to the largest batch (at least the batch size).
    forks: int | None = Field(None, ge=1, le=500)
    # What `deployer resume` does with a deployment whose process died: roll the nodes it
    # changed back to the releases they had, or finish it.
    on_interrupted: Literal["rollback", "finish"] = "rollback"


class RollingStrategy(_Common):
    """Batches through one fleet, never below ``min_healthy`` nodes in service."""

    kind: Literal["rolling"] = "rolling"
    # Nodes per batch: a count ("2") or a share of the fleet ("25%"); at least 1.
    batch_size: str = "1"
    # A first batch of this many nodes (count or percent) before the regular batches; null or
    # "0": none.
    canary: str | None = None
    # Fewest nodes that must stay in service at any time (count or percent of the fleet).
    min_healthy: str = "1"
    # Seconds to wait between batches.
    pause_between_batches: float = Field(0.0, ge=0, le=86400)

    @field_validator("batch_size")
    @classmethod
    def _at_least_one_node_per_batch(cls, v: str) -> str:
        if v == "0":
            raise ValueError("must be at least 1 (a batch of 0 nodes would deploy nothing)")
        return v

    @field_validator("batch_size", "canary", "min_healthy", mode="before")
    @classmethod
    def _count_or_percent(cls, v: object) -> object:
        return count_or_percent(v)


class LegConfig(Model):
    """One leg of a blue-green environment: its nodes and its load-balancer backend."""

    # The inventory group holding the leg's nodes.
    group: str
    # The leg's backend on the load balancer (HAProxy's name characters only: it is written
    # into runtime-API commands).
    backend: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")


class BlueGreenStrategy(_Common):
    """Two legs: release to the idle one, smoke it through the preview route, move live traffic
    in one load-balancer operation, soak, and move it back at once on trouble."""

    kind: Literal["blue-green"] = "blue-green"
    # Exactly two legs, by name (e.g. blue and green).
    legs: dict[str, LegConfig]
    # The URL of the preview route (reaches the idle leg), for the leg's smoke test.
    preview_url: str = Field(pattern=r"^https?://")
    # After a good soak: `uplift` also releases to the old leg, smokes it, moves live traffic
    # back to it and soaks again; `keep` leaves it on the previous release as the fallback
    # (`deployer rollback` is then one switch).
    after_soak: Literal["uplift", "keep"] = "keep"

    @model_validator(mode="after")
    def _two_distinct_legs(self) -> BlueGreenStrategy:
        if len(self.legs) != 2:
            raise ValueError("kind: blue-green needs exactly two legs, e.g. blue and green")
        for name in self.legs:
            if not NAME.match(name):
                raise ValueError(f"leg name {name!r} must be lower-case letters, digits, '-' or '_'")
        groups = [leg.group for leg in self.legs.values()]
        backends = [leg.backend for leg in self.legs.values()]
        if len(set(groups)) != 2 or len(set(backends)) != 2:
            raise ValueError("the two legs must have different groups and different backends")
        return self

    def leg_strategy(self) -> RollingStrategy:
        """How one leg is released: all its nodes at once (an idle leg takes no live traffic),
        with this strategy's failure, pre-staging and maintenance settings."""
        return RollingStrategy(
            batch_size="100%", canary=None, min_healthy="0", on_failure=self.on_failure,
            prestage=self.prestage, operator_maintenance=self.operator_maintenance,
            forks=self.forks, on_interrupted=self.on_interrupted,
        )


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "rolling"))
    return str(getattr(value, "kind", "rolling"))


StrategyConfig = Annotated[
    Annotated[RollingStrategy, Tag("rolling")] | Annotated[BlueGreenStrategy, Tag("blue-green")],
    Discriminator(_kind, custom_error_type="strategy_kind",
                  custom_error_message="kind must be rolling or blue-green"),
]
