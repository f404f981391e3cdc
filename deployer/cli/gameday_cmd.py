"""`deployer gameday list|run|cleanup`: rehearse the failure paths of a release on an
environment that allows it (see :mod:`deployer.gameday`)."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import click
from rich.markup import escape
from rich.table import Table

from .._errors import GameDayUnsafe, Interrupted
from ..gameday import SCENARIOS, GameDay, GameDayReport
from ..gameday import cleanup as undo_left_faults
from ._common import cell, config_option, console, env_option, get_config, out, print_json
from ._wiring import build_environment

__all__ = ["gameday"]


@click.group()
def gameday() -> None:
    """Rehearse failures of a release with real faults, under load (a lab or staging only)."""


@gameday.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
def list_scenarios(as_json: bool) -> None:
    """The scenarios a game day can run."""
    if as_json:
        print_json([{"name": s.name, "title": s.title, "strategies": list(s.strategies)}
                    for s in SCENARIOS])
        return
    table = Table(title="game-day scenarios (in the order `run all` runs them)")
    for col in ("scenario", "what it rehearses", "strategies"):
        table.add_column(col)
    for s in SCENARIOS:
        table.add_row(s.name, s.title, ", ".join(s.strategies))
    out.print(table)


@contextmanager
def _stop_on_signals(game: GameDay) -> Iterator[None]:
    """Ctrl-C/SIGTERM once: the scenario under way stops at its next safe point, its faults are
    undone, no other starts. Twice: its deployment aborts at once (faults still undone)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if game.request_stop():
            console.print("[bold red]aborting the deployment under way[/]; undoing the faults")
        else:
            console.print("stopping: the scenario under way ends at its next safe point, its faults "
                          "are undone; press Ctrl-C again to abort its deployment at once")

    old_int = signal.signal(signal.SIGINT, handler)
    old_term = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


@gameday.command()
@click.argument("scenarios", nargs=-1, required=True, metavar="SCENARIO... | all")
@env_option
@click.option("--report", "report_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Where to write the report (default: <state_dir>/gameday/"
              "reports/<time>).")
@click.option("--load", "load_url", default=None, metavar="URL",
              help="The service through its load balancer (default: gameday.load_url, else "
              "analysis.target_url).")
@click.option("--rate", type=float, default=None, metavar="N",
              help="Requests per second of load (default: gameday.rate, 20).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout.")
@config_option
def run(scenarios: tuple[str, ...], env_name: str, report_dir: Path | None, load_url: str | None,
        rate: float | None, as_json: bool, config_path: Path | None) -> None:
    """Run SCENARIO... (or all) on the environment, each under load with its fault, and report.

    Exit 0 when every scenario that ran ended safely; 20 when one did not, or could not tell."""
    config = get_config(config_path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    where = report_dir or Path(config.state_dir) / "gameday" / "reports" / stamp

    def say(text: str) -> None:
        console.print(escape(text), soft_wrap=True)

    game = GameDay(config, env_name, wire=build_environment, load_url=load_url, rate=rate,
                   report_dir=where, say=say)
    with _stop_on_signals(game):
        report = game.run(list(scenarios))
    md, js = report.write(where)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_summary(report)
    console.print(f"report: {md} (and {js.name})", soft_wrap=True)
    if report.interrupted:
        raise Interrupted(f"{report.line()}; the faults it put in were undone")
    if not report.safe:
        bad = [r.name for r in report.results if r.verdict in ("unsafe", "inconclusive")]
        raise GameDayUnsafe(f"{report.line()}: not safe: {', '.join(bad)}",
                            hint=f"read {md} for what happened in each")


def _print_summary(report: GameDayReport) -> None:
    table = Table(title=report.line())
    rows = report.summary_rows()
    for col in ("scenario", "verdict", "outcome", "detected", "restored", "requests sent / failed",
                "left out", "journal = live"):
        table.add_column(col)
    for row, result in zip(rows, report.results, strict=True):
        colour = {"safe": "green", "unsafe": "bold red", "inconclusive": "yellow"}.get(
            result.verdict, "dim")
        values = list(row.values())
        values[1] = f"[{colour}]{values[1]}[/]"
        values[2] = escape(cell(values[2], 60))
        table.add_row(*values)
    out.print(table)


@gameday.command()
@env_option
@config_option
def cleanup(env_name: str, config_path: Path | None) -> None:
    """Put right what a game day that was killed left: undo its faults, then resume its
    rehearsal deployment if that was interrupted too."""
    undone, failed = undo_left_faults(get_config(config_path), env_name, build_environment,
                                      say=lambda text: console.print(escape(text), soft_wrap=True))
    for line in undone:
        console.print(f"done: {escape(line)}", soft_wrap=True)
    if not undone and not failed:
        console.print("no fault of a game day is in place")
    if failed:
        raise GameDayUnsafe("could not undo: " + "; ".join(failed),
                            hint="undo them by hand (each line says what and where)")
