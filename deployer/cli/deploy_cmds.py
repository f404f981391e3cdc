"""`deployer deploy|rollback|resume`: the commands that change a fleet.

Each runs one deployment through the engine's lifecycle, shows its events live on stderr (and
as JSON lines with ``--events FILE|-``), and maps its outcome to the exit code. Ctrl-C or
SIGTERM once: stop at the next safe point with every node in service; twice: abort at once.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import IO, Any

import click
from rich.markup import escape

from .._errors import DeployerError, UsageError
from .._versions import validate_version
from ..config import EnvironmentConfig
from ..engine.events import JsonLinesWriter, Subscriber
from ..engine.lifecycle import Lifecycle, raise_for
from ..engine.model import Outcome
from ..engine.resume import resume as resume_interrupted
from ._common import config_option, console, env_option, get_config, print_json
from ._fixes import download_fix, ssh_fix
from ._wiring import Environment, build_environment
from .gate_cmds import GateOptions, gate_options
from .render import ConsoleView, print_outcome

__all__ = ["deploy", "events_option", "finish", "outcome_options", "resume", "rollback", "wired"]


@contextmanager
def _stop_on_signals(lifecycle: Lifecycle) -> Iterator[None]:
    """Ctrl-C/SIGTERM once: stop at the next safe point. Twice: abort at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if lifecycle.request_stop():
            console.print("[bold red]aborting now[/]: nodes caught mid-change stay as the journal says")

    old_int = signal.signal(signal.SIGINT, handler)
    old_term = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def events_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--events", "events_to", default=None, metavar="FILE|-",
        help="Also write every event of the deployment as JSON lines to FILE ('-': stdout; "
        "see the README for the schema).",
    )(func)


def outcome_options(func: click.decorators.FC) -> click.decorators.FC:
    """--json, --quiet and --events: how a command that deploys shows what happens."""
    func = events_option(func)
    func = click.option("--quiet", is_flag=True, help="No live progress.")(func)
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the outcome as JSON on stdout.")(func)


def _event_writer(events_to: str | None, as_json: bool) -> Subscriber | None:
    if events_to is None:
        return None
    if events_to == "-":
        if as_json:
            raise UsageError("--events - and --json both write to stdout: give --events a file")
        return JsonLinesWriter(sys.stdout)
    try:
        stream: IO[str] = open(events_to, "a", encoding="utf-8")  # noqa: SIM115 - the writer closes it
    except OSError as exc:
        raise UsageError(f"--events: cannot write {events_to}: {exc.strerror}") from None
    return JsonLinesWriter(stream, close_stream=True)


@contextmanager
def wired(
    config_path: Path | None, env_name: str, *, quiet: bool = False, events_to: str | None = None,
    as_json: bool = False, read_only: bool = False, gates: GateOptions | None = None,
) -> Iterator[Environment]:
    """The environment wired for one command, with the live view (and ``--events``) subscribed,
    and the environment's gates with what ``gates`` brings (a command that deploys or plans);
    its SSH masters are closed when it ends."""
    writer = _event_writer(events_to, as_json)
    config = get_config(config_path)
    subscribers: list[Subscriber] = [ConsoleView(quiet=quiet)]
    if writer is not None:
        subscribers.append(writer)
    request = gates.request(config.environment(env_name)) if gates is not None else None
    environment = build_environment(config, env_name, subscribers=subscribers, read_only=read_only,
                                    gates=request)
    try:
        yield environment
    finally:
        environment.close()


def finish(outcome: Outcome, as_json: bool, env: EnvironmentConfig,
           extra: dict[str, object] | None = None) -> None:
    """Show the outcome (with ``extra`` in its JSON) and exit with its code; the hint says how
    to fix nodes that could not be reached (their SSH host key, or their SSH key refused) or
    could not download the release."""
    if as_json:
        print_json({**outcome.to_dict(), **(extra or {})})
    else:
        print_outcome(outcome)
    try:
        raise_for(outcome)
    except DeployerError as exc:
        reasons = [(st.node, st.cause or st.detail) for st in outcome.nodes.values()]
        fixes = [f for f in (ssh_fix(reasons), download_fix(env, reasons)) if f]
        if fixes:
            exc.hint = "; ".join([exc.hint, *fixes] if exc.hint else fixes)
        raise


@click.command()
@env_option
@click.option("--version", "version", required=True, help="Release to deploy.")
@outcome_options
@gate_options
@config_option
def deploy(env_name: str, version: str, as_json: bool, quiet: bool, events_to: str | None,
           config_path: Path | None, **gate: Any) -> None:
    """Roll VERSION through the environment, batch by batch, reverting on failure."""
    validate_version(version, where="--version")
    gates = GateOptions(**gate)
    with wired(config_path, env_name, quiet=quiet, events_to=events_to, as_json=as_json,
               gates=gates) as environment:
        lifecycle = environment.lifecycle
        with _stop_on_signals(lifecycle):
            outcome = lifecycle.deploy(version, high_risk=gates.high_risk,
                                       extra_details=gates.details(environment.env))
    finish(outcome, as_json, environment.env)


@click.command()
@env_option
@click.option("--to", "to_version", default=None, help="Release to go back to (default: the one before).")
@outcome_options
@gate_options
@config_option
def rollback(
    env_name: str, to_version: str | None, as_json: bool, quiet: bool, events_to: str | None,
    config_path: Path | None, **gate: Any,
) -> None:
    """Go back to the previous release (or --to VERSION), batch by batch."""
    if to_version is not None:
        validate_version(to_version, where="--to")
    gates = GateOptions(**gate)
    with wired(config_path, env_name, quiet=quiet, events_to=events_to, as_json=as_json,
               gates=gates) as environment:
        lifecycle = environment.lifecycle
        target = to_version or lifecycle.rollback_target()
        if not quiet:
            console.print(f"rolling {env_name} back to {target}")
        with _stop_on_signals(lifecycle):
            outcome = lifecycle.deploy(target, kind="rollback", high_risk=gates.high_risk,
                                       extra_details=gates.details(environment.env))
    finish(outcome, as_json, environment.env)


@click.command()
@env_option
@outcome_options
@gate_options
@config_option
def resume(env_name: str, as_json: bool, quiet: bool, events_to: str | None,
           config_path: Path | None, **gate: Any) -> None:
    """Bring the environment to a safe state after a deployment whose process died.

    Reads the journal and the live load balancer and nodes, says which deployment was
    interrupted, where, and what it will do, then rolls it back or finishes it as
    strategy.on_interrupted says (an interrupted rollback is finished). Nothing to resume, or
    nothing to do: exit 0. A paused deployment is continued (its gates are asked again)."""
    gates = GateOptions(**gate)
    with wired(config_path, env_name, quiet=quiet, events_to=events_to, as_json=as_json,
               gates=gates) as environment:
        lifecycle = environment.lifecycle

        def say(text: str) -> None:
            if not quiet:
                console.print(escape(text), soft_wrap=True)

        with _stop_on_signals(lifecycle):
            result = resume_interrupted(
                lifecycle, on_interrupted=environment.env.strategy.on_interrupted, say=say,
                high_risk=gates.high_risk)
    if result.outcome is not None:
        finish(result.outcome, as_json, environment.env, {"resume": result.to_dict()})
        return
    if as_json:
        status = "nothing_to_resume" if result.interruption is None else "nothing_to_do"
        print_json({"status": status, "deployment": result.deployment, "uid": result.uid or None,
                    "resume": result.to_dict()})
