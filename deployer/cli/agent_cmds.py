"""`deployer agent`, `deployer pointer get|set` and `deployer promotion show`: the path to live.

``agent`` is an environment's own runner (see :mod:`deployer.agent`): it refuses a config that
holds any environment but its own. ``pointer set`` is all a requester needs: it writes the
version to run (refusing one the store does not hold or whose signature does not verify), and
``pointer get`` shows it with the status the runner published. ``promotion show`` reads only a
promotion store.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import click
from rich.markup import escape
from rich.table import Table

from .._clock import iso_utc
from .._errors import ConfigError, DeployerError, PointerError, UsageError
from .._versions import validate_version
from ..adapters.process import actor
from ..agent import (
    Agent,
    AgentDecided,
    AgentStatus,
    Desired,
    PromotionRecorded,
    SharedJsonLines,
    StatusPublished,
    desired_from,
    open_pointer,
    set_desired,
)
from ..agent._pointer import MAX_VALUE
from ..artefacts import load_public_key, open_store, verify_release
from ..config import Config
from ..engine.events import Published, Subscriber
from ..engine.model import DeploymentRef, Release
from ..engine.safepoints import SafePoint, SafePointContext
from ..gates import GateRequest
from ..gates.approvals import sign_pointer_request
from ..promotion import PromotionGate, PromotionRecorder, SignedRecord, open_record_store, read_records
from ._common import cell, config_option, console, env_option, get_config, out, print_json
from ._wiring import Environment, build_environment
from .gate_cmds import GateOptions
from .render import ConsoleView

__all__ = ["agent", "pointer", "promotion"]


class _AgentView(Subscriber):
    """The runner's decisions as lines on stderr (its JSON lines go to stdout)."""

    def on_event(self, published: Published) -> None:
        ev = published.event
        stamp = time.strftime("%H:%M:%S")
        if isinstance(ev, AgentDecided):
            console.print(f"[dim]{stamp}[/] [bold]{ev.decision}[/]: {escape(ev.reason)}", soft_wrap=True)
        elif isinstance(ev, StatusPublished) and not ev.ok:
            console.print(f"[dim]{stamp}[/] [yellow]status not published[/] to {escape(ev.where)}: "
                          f"{escape(ev.error)}", soft_wrap=True)
        elif isinstance(ev, PromotionRecorded):
            text = f"promotion record {ev.where}" if ev.ok else ev.error
            console.print(f"[dim]{stamp}[/] {escape(text)}", soft_wrap=True)


def _own_environment_only(config: Config, env_name: str) -> None:
    """An agent acts for its own environment only: its config holds nothing else (no other
    environment's credentials, pointers or fleets)."""
    config.environment(env_name)  # one it does not hold: ConfigError naming those it does
    others = sorted(set(config.environments) - {env_name})
    if others:
        raise ConfigError(
            f"an agent's config holds only its own environment ({env_name!r}); this one also "
            f"holds {', '.join(repr(o) for o in others)}",
            file=str(config.source) if config.source else None, field="environments",
            hint=f"give the runner of {env_name} a config of its own, with only {env_name} in it "
            "(its credentials, and the public keys it trusts)",
        )


def _recorder(config: Config, env_name: str) -> PromotionRecorder | None:
    promotion = config.environment(env_name).promotion
    if promotion is None or promotion.signing_key is None:
        return None
    if not promotion.signing_key.is_file():
        raise ConfigError("signing key file not found", file=str(config.source),
                          field=f"environments.{env_name}.promotion.signing_key",
                          value=str(promotion.signing_key))
    return PromotionRecorder(env_name=env_name, app=config.environment(env_name).app.name,
                             signing_key=promotion.signing_key, store_url=promotion.store)


@click.command()
@env_option
@click.option("--once", is_flag=True,
              help="One look, then exit with its code (for a systemd timer or cron).")
@click.option("--quiet", is_flag=True, help="No progress on stderr (the JSON lines on stdout stay).")
@config_option
def agent(env_name: str, once: bool, quiet: bool, config_path: Path | None) -> None:
    """Run environment ENV's own runner: deploy what its pointer names, publish the status.

    Polls the pointer (agent.interval, with jitter) and the fleet; deploys a new pointer value
    with the environment's strategy once its gates pass, under the environment's lock (held
    only while deploying; held by another controller: tried again at the next look), records a
    signed promotion record after a success, and publishes its status beside the pointer. One
    JSON line per event on stdout. SIGTERM: a deployment stops at its next safe point with every
    node in service. The config must hold only ENV."""
    config = get_config(config_path)
    _own_environment_only(config, env_name)
    env = config.environment(env_name)
    pointer = open_pointer(config, env_name)
    recorder = _recorder(config, env_name)
    build_environment(config, env_name, read_only=False).close()  # a bad inventory fails now
    lines = SharedJsonLines(sys.stdout)

    def subscribers() -> list[Subscriber]:
        return [lines.subscriber(), *([] if quiet else [ConsoleView(), _AgentView()])]

    def open_environment(subs: Sequence[Subscriber]) -> Environment:
        # The governance gates are told each request by the runner (from the pointer).
        return build_environment(config, env_name, subscribers=subs, gates=GateRequest())

    runner = Agent(env_name=env_name, app=env.app.name, config=env.agent, pointer=pointer,
                   open_environment=open_environment, subscribers=subscribers, recorder=recorder,
                   require_signed=env.pointer is not None and env.pointer.require_signed)

    def stop(signum: int, frame: FrameType | None) -> None:
        if runner.request_stop():
            console.print("[bold red]aborting the deployment now[/]: nodes caught mid-change stay "
                          "as the journal says")
        elif not quiet:
            console.print("stopping: a deployment under way stops at its next safe point")

    old_term = signal.signal(signal.SIGTERM, stop)
    old_int = signal.signal(signal.SIGINT, stop)
    try:
        code = runner.run(once=once)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    raise click.exceptions.Exit(code)


@click.group()
def pointer() -> None:
    """An environment's desired-version pointer: what its runner deploys."""


@pointer.command("get")
@env_option
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
@config_option
def pointer_get(env_name: str, as_json: bool, config_path: Path | None) -> None:
    """Show the version the pointer asks for and the status its runner published."""
    config = get_config(config_path)
    the_pointer = open_pointer(config, env_name)
    value = the_pointer.read()
    problem = ""
    try:
        desired = desired_from(value, where=the_pointer.where)
    except PointerError as exc:  # shown, with the status: the runner refused it too
        desired, problem = None, exc.message
    status = AgentStatus.from_text(the_pointer.read_status())
    if as_json:
        print_json({"env": env_name, "pointer": the_pointer.where,
                    "desired": desired.to_dict() if desired else None,
                    "problem": problem or None, "status_at": the_pointer.status_where,
                    "status": status.to_dict() if status else None})
        return
    if problem:
        out.print(f"[red]{escape(problem)}[/]", soft_wrap=True)
    elif desired is None:
        out.print(f"pointer {escape(the_pointer.where)}: no version", soft_wrap=True)
    else:
        who = " by ".join(p for p in (desired.set_at, desired.requester) if p)
        out.print(f"pointer {escape(the_pointer.where)}: [bold]{escape(desired.version)}[/] "
                  f"(revision {escape(desired.revision)}"
                  + (f", set {escape(who)}" if who else "") + ")"
                  + (f": {escape(desired.reason)}" if desired.reason else ""), soft_wrap=True)
    if status is None:
        out.print(f"status {escape(the_pointer.status_where)}: none published yet (is the "
                  f"runner of {env_name} running?)", soft_wrap=True)
        return
    colour = {"deployed": "green", "in_sync": "green", "waiting": "dim", "busy": "yellow",
              "resumed": "yellow"}.get(status.decision, "red")
    out.print(f"status {escape(the_pointer.status_where)} ({escape(status.at)}, "
              f"{escape(status.agent)}): [bold {colour}]{status.decision}[/]"
              + (f" (exit {status.exit_code})" if status.exit_code else "")
              + f": {escape(status.reason)}", soft_wrap=True)
    running = status.running or ", ".join(f"{n} on {v or 'no release'}"
                                          for v, n in status.versions.items()) or "unknown"
    out.print(f"running: {escape(running)}")
    last = status.last_deployment
    if last is not None:
        out.print(f"last deployment: {last.uid} ({last.kind} {escape(last.version)}, "
                  f"{last.status}, exit {last.exit_code}, {escape(last.at)})")
    if status.promotion:
        out.print(f"promotion record: {escape(status.promotion.get('where', ''))}")


@pointer.command("set")
@env_option
@click.option("--version", "version", required=True, help="The release the environment should run.")
@click.option("--reason", required=True, help="Why (kept with the value, and in the journal).")
@click.option("--requester", default=None, help="Who asks (default: user@host).")
@click.option("--requester-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
              metavar="KEY", help="The requester's minisign secret key: signs the request, so the "
              "runner knows who asks by key (required with pointer.require_signed).")
@click.option("--change", default=None, metavar="NUMBER",
              help="The approved change this deployment implements (e.g. CHG0000001).")
@click.option("--approval", "approvals", multiple=True, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="A signed approval (`deployer approval sign`), carried in the pointer; repeat "
              "for several.")
@click.option("--high-risk", "high_risk", default=None, metavar="REASON",
              help="Declare the deployment High Risk (and why).")
@config_option
def pointer_set(env_name: str, version: str, reason: str, requester: str | None,
                requester_key: Path | None, change: str | None, approvals: tuple[Path, ...],
                high_risk: str | None, config_path: Path | None) -> None:
    """Ask environment ENV's runner to run VERSION (an earlier one rolls back).

    Refuses a version the store does not hold (exit 4) or whose signature does not verify
    (exit 5), writing nothing. What the request brings to the environment's gates (the change,
    approvals, High Risk, the requester's signature) goes with it. Then the runner acts at its
    next look; `pointer get` shows what it did."""
    validate_version(version, where="--version")
    config = get_config(config_path)
    env = config.environment(env_name)
    the_pointer = open_pointer(config, env_name)
    manifest = verify_release(open_store(env.store.url), env.app.name, version, env.trusted_keys,
                              check_tarball=False)
    options = GateOptions(approvals=approvals, requester_key=requester_key, change=change,
                          high_risk=high_risk)
    request = options.request(env)
    desired = Desired(version=version, reason=reason,
                      requester=request.requester.name if request.requester else requester or actor(),
                      set_at=iso_utc(time.time()), change=options.change or "",
                      high_risk=options.high_risk,
                      approvals=tuple({"approval": a.payload, "signature": a.signature.decode()}
                                      for a in request.approvals))
    if request.requester_secret is not None:
        desired = dataclasses.replace(desired, signed=sign_pointer_request(request.requester_secret, {
            "app": env.app.name, "environment": env_name, "version": version,
            "sha256": manifest.sha256, "reason": reason, "requester": desired.requester,
            "set_at": desired.set_at, "change": desired.change or None,
            "high_risk": desired.high_risk}))
    elif env.pointer is not None and env.pointer.require_signed:
        raise UsageError(f"the pointer of {env_name} requires a signed request "
                         "(pointer.require_signed): give --requester-key KEY")
    if len(desired.to_text()) > MAX_VALUE:
        raise UsageError(f"the request is longer than a pointer holds ({MAX_VALUE} characters): "
                         "fewer approvals")
    written = set_desired(the_pointer, desired)
    console.print(f"pointer {escape(the_pointer.where)}: {escape(version)} (revision "
                  f"{escape(written.revision)}; signature verified, sha256 {manifest.sha256[:16]}...)",
                  soft_wrap=True)
    gate_note = _promotion_note(config, env_name, version, manifest.sha256)
    if gate_note:
        console.print(f"[yellow]note:[/] {escape(gate_note)}", soft_wrap=True)
    console.print(f"the runner of {env_name} acts at its next look; `deployer pointer get --env "
                  f"{env_name}` shows what it did", soft_wrap=True)


def _promotion_note(config: Config, env_name: str, version: str, sha256: str) -> str:
    """What the promotion gate will say, when it will refuse (the runner decides; this warns)."""
    env = config.environment(env_name)
    if env.promotion is None or env.promotion.after is None:
        return ""
    gate = PromotionGate(env_name=env_name, app=env.app.name, config=env.promotion)
    release = Release(app=env.app.name, version=version, url="", sha256=sha256, size=0)
    verdict = gate.check(SafePointContext(point=SafePoint.ADMISSION, now=time.time(),
                                          deployment=DeploymentRef(0, "", env_name, "deploy", version),
                                          release=release))
    return "" if verdict.goes_on else f"the runner will refuse it until that changes: {verdict.reason}"


@click.group()
def promotion() -> None:
    """Promotion records: where a release has been on the path to live."""


@promotion.command("show")
@click.option("--store", "store_url", required=True, help="The promotion store (file:// or s3://).")
@click.option("--app", required=True, help="Application name.")
@click.option("--version", "version", required=True, help="Release version.")
@click.option("--trusted-key", "trusted_keys", multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="Verify each record against these public keys (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON on stdout.")
def promotion_show(store_url: str, app: str, version: str, trusted_keys: tuple[Path, ...],
                   as_json: bool) -> None:
    """Where release VERSION of APP has been: each environment's records, when, by which
    deployment, the checks it passed. Reads only the store."""
    validate_version(version, where="--version")
    keys = [load_public_key(k) for k in trusted_keys]
    found = []
    for signed in read_records(open_record_store(store_url), app, version):
        shown = _Shown(signed, None, signed.problem)
        if keys:
            try:
                signed.verified(keys)
                shown = _Shown(signed, True, "")
            except DeployerError as exc:
                shown = _Shown(signed, False, exc.message)
        found.append(shown)
    found.sort(key=lambda shown: shown.signed.record.at if shown.signed.record else "")
    if as_json:
        print_json({"app": app, "version": version, "store": store_url,
                    "records": [shown.to_dict() for shown in found]})
        return
    if not found:
        out.print(f"{app} {version}: no promotion records in {store_url}")
        return
    table = Table(title=f"{app} {version}: where it has been")
    for col in ("environment", "when", "deployment", "sha256", "checks", "signed by", "verified"):
        table.add_column(col)
    for shown in found:
        r = shown.signed.record
        verified = {True: "[green]yes[/]", False: "[red]no[/]", None: "-"}[shown.verified]
        table.add_row(r.environment if r else "?", r.at if r else "?", r.deployment if r else "?",
                      cell(r.sha256, 19) if r else "?", ", ".join(r.checks) if r else "",
                      shown.signed.key_id or "unsigned", verified)
    out.print(table)
    for shown in found:
        if shown.problem:
            console.print(f"[yellow]not verified:[/] {escape(shown.problem)}", soft_wrap=True)


@dataclass(frozen=True)
class _Shown:
    """A record as ``promotion show`` shows it: verified (True, False; None: no keys given)."""

    signed: SignedRecord
    verified: bool | None
    problem: str

    def to_dict(self) -> dict[str, object]:
        r = self.signed.record
        return {
            "environment": r.environment if r else None, "deployment": r.deployment if r else None,
            "at": r.at if r else None, "sha256": r.sha256 if r else None,
            "checks": list(r.checks) if r else [], "nodes": list(r.nodes) if r else [],
            "key_id": self.signed.key_id or None, "verified": self.verified,
            "problem": self.problem or None, "where": self.signed.where,
        }
