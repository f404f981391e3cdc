"""Helpers shared by the CLI's command modules: output and config options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console, ConsoleDimensions

from .._config import Config, load_config

F = TypeVar("F", bound=Callable[..., Any])

# Width of output that is not a terminal (a pipe, a CI log): wide enough that nothing wraps.
PIPE_WIDTH = 4096


class _Console(Console):
    """A rich console that does not wrap lines when it writes to a pipe or a file: CI logs and
    ``| grep`` get whole lines. A terminal (or an explicit COLUMNS) keeps its own width."""

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        if self._width is None and not self.is_terminal:
            return ConsoleDimensions(PIPE_WIDTH, dims.height)
        return dims

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


# Progress and tables go to stderr so that --json output on stdout stays machine-readable.
console = _Console(stderr=True, highlight=False)
out = _Console(highlight=False)


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def config_option(func: F) -> F:
    """Add --config (default: DEPLOYER_CONFIG, ./deployer.yml, then the local lab's config)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Configuration file (default: $DEPLOYER_CONFIG, ./deployer.yml, or the lab's).",
    )(func)


def env_option(func: F) -> F:
    return click.option(
        "--env", "env_name", required=True, metavar="NAME", help="Environment from the config."
    )(func)


def resolve_config_path(explicit: Path | None) -> Path | None:
    """Pick the config file: --config, $DEPLOYER_CONFIG, ./deployer.yml, then the default lab's."""
    import os

    if explicit is not None:
        return explicit
    if os.environ.get("DEPLOYER_CONFIG"):
        return Path(os.environ["DEPLOYER_CONFIG"])
    local = Path("deployer.yml")
    if local.is_file():
        return local
    from ..lab import default_lab_dir

    lab_cfg = default_lab_dir() / "deployer.yml"
    if lab_cfg.is_file():
        return lab_cfg
    return local


def get_config(explicit: Path | None) -> Config:
    return load_config(resolve_config_path(explicit))
