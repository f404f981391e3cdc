"""`deployer keys ...` and `deployer artefact ...` (placeholder until artefacts land)."""

from __future__ import annotations

import click


@click.group()
def keys() -> None:
    """Release-signing keys."""


@click.group()
def artefact() -> None:
    """Build, sign, publish and verify artefacts."""
