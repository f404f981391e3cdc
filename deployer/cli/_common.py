"""Helpers shared by the CLI's command modules: output and config options."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import click
from rich.console import Console, ConsoleDimensions

from .._errors import ConfigError
from ..config import DEFAULT_CONFIG_NAME, Config, load_config

F = TypeVar("F", bound=Callable[..., Any])

# Width of output that is not a terminal (a pipe, a CI log): wide enough that nothing wraps.
PIPE_WIDTH = 4096


class _Console(Console):
    """A rich console that does not wrap lines when it writes to a pipe or a file: CI logs and
    ``| grep`` get whole lines, whatever COLUMNS says (shells and tools export it for their own
    terminal). A terminal keeps its width."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._size_set = False

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        if not self._size_set and not self.is_terminal:
            return ConsoleDimensions(PIPE_WIDTH, dims.height)
        return dims

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._size_set = True
        self._width, self._height = new_size


# Progress and tables go to stderr so that --json output on stdout stays machine-readable.
console = _Console(stderr=True, highlight=False)
out = _Console(highlight=False)


def cell(text: str, limit: int, *, on: Console = out) -> str:
    """``text`` for a table cell printed on ``on``: cut to ``limit`` characters in a terminal
    (one screen line per row), whole anywhere else: a CI log or a pipe keeps every word."""
    if len(text) <= limit or not on.is_terminal:
        return text
    return text[: limit - 3] + "..."


def print_json(data: object) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def config_option(func: F) -> F:
    """Add --config (default: $DEPLOYER_CONFIG, then ./deployer.yml)."""
    return click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Configuration file (default: $DEPLOYER_CONFIG, else ./deployer.yml).",
    )(func)


def env_option(func: F) -> F:
    return click.option(
        "--env", "env_name", required=True, metavar="NAME", help="Environment from the config."
    )(func)


class ConfigSource(NamedTuple):
    """The config file a command uses and how it was found."""

    path: Path
    found_by: str  # "--config", "$DEPLOYER_CONFIG", "./deployer.yml" or "the local lab"


def resolve_config_path(explicit: Path | None, *, lab_fallback: bool = False) -> ConfigSource:
    """Pick the config file: --config, $DEPLOYER_CONFIG, then ./deployer.yml.

    With ``lab_fallback`` (for code that works on the local lab on purpose; the demo instead
    sets $DEPLOYER_CONFIG for its commands) the local lab's config is the last resort. Without
    it, no config is refused, naming where it looked: on a shared host, the local lab may be
    someone else's."""
    if explicit is not None:
        return ConfigSource(explicit, "--config")
    from_env = os.environ.get("DEPLOYER_CONFIG")
    if from_env:
        return ConfigSource(Path(from_env), "$DEPLOYER_CONFIG")
    local = Path(DEFAULT_CONFIG_NAME)
    if local.is_file():
        return ConfigSource(local.resolve(), f"./{DEFAULT_CONFIG_NAME}")
    from ..lab import default_lab_dir

    lab_cfg = default_lab_dir() / DEFAULT_CONFIG_NAME
    if lab_fallback and lab_cfg.is_file():
        return ConfigSource(lab_cfg, "the local lab")
    lab_note = (
        f"; the local lab's config ({lab_cfg}) is used only by the lab and the demo"
        if lab_cfg.is_file() else ""
    )
    raise ConfigError(
        "no configuration file: --config was not given, $DEPLOYER_CONFIG is not set and there "
        f"is no {DEFAULT_CONFIG_NAME} in {Path.cwd()}{lab_note}",
        hint=f"pass --config FILE, or set DEPLOYER_CONFIG=FILE, or run from the directory "
        f"holding {DEFAULT_CONFIG_NAME}",
    )


def get_config(explicit: Path | None, *, lab_fallback: bool = False) -> Config:
    """Load the config for a command; says on stderr which file it is when not given with
    --config."""
    source = resolve_config_path(explicit, lab_fallback=lab_fallback)
    if source.found_by != "--config":
        console.print(f"deployer: using config {source.path} (from {source.found_by})",
                      soft_wrap=True, markup=False)
    return load_config(source.path)
