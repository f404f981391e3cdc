"""`deployer lab ...` (placeholder until the lab lands)."""

from __future__ import annotations

import click


@click.group()
def lab() -> None:
    """Build and manage the local lab fleet."""
