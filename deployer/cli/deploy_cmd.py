"""`deployer deploy|rollback|status|history|plan` (placeholder until the engine lands)."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    pass
