"""`deployer approval|evidence|freeze|unfreeze`, and the options a deployment brings to its
environment's gates (--approval, --requester-key, --change, --high-risk, --break-glass,
--reason). What the gates do is :mod:`deployer.gates`; this is only the command line."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.markup import escape

from .._errors import DeployerError, UsageError, VerificationError
from .._versions import validate_version
from ..adapters.process import actor
from ..artefacts import load_public_key
from ..config import EnvironmentConfig
from ..gates import GateRequest
from ..gates.approvals import load_approval, make_approval, parse_expiry, requester_from_key
from ..gates.changes import check_change_number
from ..gates.evidence import verify_evidence
from ._common import config_option, console, env_option, get_config, out, print_json
from ._wiring import freeze_for, journal_for, release_verifier

__all__ = ["GateOptions", "approval", "evidence", "freeze", "gate_options", "unfreeze"]

F = TypeVar("F", bound=Callable[..., Any])


class GateOptions:
    """What a deploying command was given for the gates, made into a request once the
    environment's config is read."""

    def __init__(self, approvals: tuple[Path, ...] = (), requester_key: Path | None = None,
                 change: str | None = None, break_glass: bool = False, reason: str | None = None,
                 high_risk: str | None = None) -> None:
        if reason is not None and not break_glass:
            raise UsageError("--reason goes with --break-glass (it says why the emergency)")
        if break_glass and not (reason or "").strip():
            raise UsageError("--break-glass needs --reason TEXT: an emergency is recorded with its "
                             "reason")
        if high_risk is not None and not high_risk.strip():
            raise UsageError("--high-risk needs its reason, e.g. --high-risk 'rewrites the orders "
                             "table'")
        self.approvals = approvals
        self.requester_key = requester_key
        self.change = check_change_number(change) if change is not None else None
        self.break_glass = break_glass
        self.reason = (reason or "").strip()
        self.high_risk = (high_risk or "").strip()

    def details(self, env: EnvironmentConfig) -> dict[str, object]:
        """What the journal keeps with the deployment: its change, a break-glass and its reason,
        the environment's decision record (the evidence has all of it, and more)."""
        details: dict[str, object] = {}
        if self.change:
            details["change"] = self.change
        if self.break_glass:
            details["break_glass"] = {"reason": self.reason}
        record = env.gates.decision_record
        if record is not None:
            details["decision_record"] = record.model_dump()
        return details

    def request(self, env: EnvironmentConfig) -> GateRequest:
        """The request for ``env``: approval files read, the requester's key loaded (named as
        the config's requesters name it)."""
        requester = secret = None
        if self.requester_key is not None:
            names = {}
            approvals = env.gates.approvals
            for r in approvals.requesters if approvals else []:
                names[load_public_key(r.key).key_id_hex] = r.name
            try:
                requester, secret = requester_from_key(self.requester_key, names)
            except DeployerError as exc:
                raise UsageError(f"--requester-key: {exc.message}", hint=exc.hint) from None
        return GateRequest(
            approvals=tuple(load_approval(p) for p in self.approvals), requester=requester,
            requester_secret=secret, change=self.change, break_glass=self.break_glass,
            reason=self.reason,
        )


def gate_options(func: F) -> F:
    """--approval, --requester-key, --change, --high-risk, --break-glass and --reason."""
    options = [
        click.option("--approval", "approvals", multiple=True, metavar="FILE",
                     type=click.Path(dir_okay=False, path_type=Path),
                     help="A signed approval (`deployer approval sign`); repeat for several."),
        click.option("--requester-key", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, metavar="KEY",
                     help="The requester's minisign secret key: signs the request, so four eyes "
                     "is checked by key (password from $DEPLOYER_KEY_PASSWORD if encrypted)."),
        click.option("--change", default=None, metavar="NUMBER",
                     help="The approved change this deployment implements (e.g. CHG0000001)."),
        click.option("--high-risk", "high_risk", default=None, metavar="REASON",
                     help="Declare the deployment High Risk (and why): it needs High Risk "
                     "approvals and halts on a failure, without automatic rollback."),
        click.option("--break-glass", is_flag=True,
                     help="An emergency: windows, calendar freezes and the change requirement do "
                     "not apply; needs a break-glass approval and --reason."),
        click.option("--reason", default=None, metavar="TEXT", help="Why the break-glass deployment."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# -- approvals --------------------------------------------------------------------------------


@click.group()
def approval() -> None:
    """Signed approvals of a release for an environment."""


@approval.command("sign")
@env_option
@click.option("--version", "version", required=True, help="The release approved.")
@click.option("--key", "key_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The approver's minisign secret key (password from $DEPLOYER_KEY_PASSWORD).")
@click.option("--expires", required=True, metavar="WHEN",
              help="How long it holds (8h, 30m, 2d) or until when (2026-12-08T16:00Z).")
@click.option("--change", default=None, metavar="NUMBER", help="The change it approves.")
@click.option("--requester", "requester_pub", default=None, metavar="PUB",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Approve this requester only (their public key).")
@click.option("--high-risk", is_flag=True, help="An approval as High Risk.")
@click.option("--break-glass", is_flag=True, help="A break-glass approval.")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the approval.")
@config_option
def approval_sign(env_name: str, version: str, key_path: Path, expires: str, change: str | None,
                  requester_pub: Path | None, high_risk: bool, break_glass: bool, out_path: Path,
                  config_path: Path | None) -> None:
    """Approve release VERSION for the environment: the release is verified in the store first,
    and its digest is what the approval signs."""
    validate_version(version, where="--version")
    if change is not None:
        check_change_number(change)
    if high_risk and break_glass:
        raise UsageError("an approval is either --high-risk or --break-glass, not both")
    config = get_config(config_path)
    env = config.environment(env_name)
    release = release_verifier(env)(version)
    requester = None
    if requester_pub is not None:
        try:
            requester = load_public_key(requester_pub).key_id_hex
        except DeployerError as exc:
            raise UsageError(f"--requester: {exc.message}") from None
    now = time.time()
    document, key_id = make_approval(
        key_path=key_path, app=env.app.name, version=version, sha256=release.sha256,
        environment=env_name, change=change, expires=parse_expiry(expires, now=now),
        high_risk=high_risk, break_glass=break_glass, requester=requester, now=now)
    out_path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    what = "High Risk approval" if high_risk else "break-glass approval" if break_glass else "approval"
    console.print(f"{what} of {env.app.name} {version} (sha256 {release.sha256[:16]}...) for "
                  f"{env_name}, change {change or 'none'}, signed by key {key_id}, expires "
                  f"{document['approval']['expires']}: {out_path}", soft_wrap=True, markup=False)


# -- evidence ---------------------------------------------------------------------------------


@click.group()
def evidence() -> None:
    """Each deployment's signed evidence record."""


@evidence.command("show")
@env_option
@click.option("--deployment", "deployment_ref", required=True, metavar="ID",
              help="The deployment: its number in this journal or its global id.")
@click.option("--json", "as_json", is_flag=True, help="The record itself, as JSON, on stdout.")
@click.option("--out", "out_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the record (exactly as signed) to FILE and its signature to "
              "FILE.minisig, for `deployer evidence verify` or `minisign -V`.")
@config_option
def evidence_show(env_name: str, deployment_ref: str, as_json: bool, out_path: Path | None,
                  config_path: Path | None) -> None:
    """What ran where, asked by whom, approved by whom, in which window, with which checks, and
    what happened: one deployment's evidence record, from the journal (read-only)."""
    config = get_config(config_path)
    config.environment(env_name)
    journal = journal_for(config, read_only=True)
    found = journal.find(deployment_ref, env_name)
    if found is None:
        raise DeployerError(f"no deployment {deployment_ref} in environment {env_name!r}",
                            hint=f"deployer history --env {env_name} lists them")
    row = journal.evidence(found.id)
    if row is None:
        raise DeployerError(f"deployment {found.id} ({found.uid}) has no evidence record (it ran "
                            "before deployer kept them)")
    if out_path is not None:
        out_path.write_bytes(row.record)
        if row.signature:
            out_path.with_name(out_path.name + ".minisig").write_text(row.signature, encoding="utf-8")
    record = json.loads(row.record)
    if as_json:
        print_json(record)
        return
    _print_evidence(record, signed=row.key_id, published=row.published)


def _print_evidence(record: dict[str, Any], *, signed: str, published: str) -> None:
    d = record["deployment"]
    rel = record["release"]
    who = record["requested_by"]
    where = record["where"]
    say = out.print
    say(f"[bold]deployment {d['id']} ({d['uid']})[/]: {d['kind']} {escape(rel['app'])} "
        f"{escape(d['version'])} to {d['environment']} — [bold]{d['status']}[/] (exit "
        f"{d['exit_code']}): {escape(d['summary'])}")
    say(f"when: {d['started']} to {d['ended']} ({d['duration_s']}s)")
    requester = who.get("requester")
    say(f"asked by: {escape(str(who.get('actor')))}" + (
        f"; requester {escape(requester['name'])} (key {requester['key_id']}, request signed)"
        if requester else "") + f"; command: {escape(str(who.get('command')))}")
    say(f"release: sha256 {rel.get('sha256')}, signed by key {rel.get('signing_key_id')}")
    legs = where.get("legs") or {}
    say(f"where: {', '.join(where['nodes'])} ({where.get('strategy')}"
        + (f"; live {legs.get('live')}, idle {legs.get('idle')}" if legs else "") + ")")
    if d.get("high_risk"):
        say(f"[yellow]High Risk[/]: {escape(d['high_risk'])}")
    if d.get("break_glass"):
        bg = d["break_glass"]
        say(f"[yellow]break-glass[/]: {escape(bg['reason'])} (approved by {escape(bg['approved_by'])})")
    for a in record.get("approvals", []):
        say(f"approval ({a['kind']}): {escape(a['approver'])} ({', '.join(a['roles'])}; key "
            f"{a['key_id']}), change {a.get('change') or 'none'}, expires {a['expires']}")
    change = record.get("change") or {}
    if change.get("id"):
        rec = change.get("record") or {}
        say(f"change: {change['id']}" + (f" (state {rec.get('state')}, approval "
                                          f"{rec.get('approval')}, risk {rec.get('risk')})" if rec else ""))
    say(f"window: {escape(record.get('window') or 'no release windows')}")
    if record.get("decision_record"):
        dr = record["decision_record"]
        say(f"decision record: {escape(dr['id'])} ({escape(dr['ref'])}): "
            + escape("; ".join(record.get("zero_downtime_gaps") or [])))
    for g in record.get("gates", []):
        if g["point"] == "admission" or g["decision"] != "continue":
            say(f"gate {g['gate']} at {g['point']}: {g['decision']}: {escape(g['reason'])}")
    checks = record.get("checks", {})
    for s in checks.get("smoke", []):
        what = f"node {s['node']}" if s["check"] == "node" else f"leg {s['leg']} (preview)"
        say(f"smoke {what}: {'passed' if s['passed'] else 'failed'}"
            + (f" ({escape(s.get('detail') or s.get('problem') or '')})" if not s["passed"] else ""))
    for s in checks.get("soak", []):
        if s["type"] == "verdict":
            say(f"soak {escape(s['scope'] or s['subject'])}: {s['outcome']}: {escape(s['line'])}")
    rounds = sum(1 for s in checks.get("soak", []) if s["type"] == "round")
    if rounds:
        say(f"soak rounds: {rounds} (each rule's value and threshold in --json)")
    for name, n in record.get("nodes", {}).items():
        say(f"node {name}: {n.get('phase', 'not reached')} ({n.get('from') or '-'} -> {n.get('to') or '-'})"
            + (f" {escape(n['detail'])}" if n.get("detail") else ""))
    say(f"signed: {'by key ' + signed if signed else 'no (no gates.evidence.key)'}"
        + (f"; published: {published}" if published else ""))


@evidence.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--trusted-key", "trusted_keys", required=True, multiple=True,
              type=click.Path(dir_okay=False, path_type=Path),
              help="A public key (minisign) evidence may be signed with; repeat for several.")
@click.option("--signature", "signature_path", default=None,
              type=click.Path(dir_okay=False, path_type=Path), help="Default: FILE.minisig.")
@click.option("--json", "as_json", is_flag=True, help="Print the verified record on stdout.")
def evidence_verify(file: Path, trusted_keys: tuple[Path, ...], signature_path: Path | None,
                    as_json: bool) -> None:
    """Exit 0 only if FILE is an evidence record signed by a trusted key (exit 5 otherwise);
    needs no access to the fleet or the journal."""
    sig_path = signature_path or file.with_name(file.name + ".minisig")
    try:
        signature = sig_path.read_bytes()
    except OSError:
        raise VerificationError(f"{file}: no signature ({sig_path} cannot be read)") from None
    keys = [load_public_key(k) for k in trusted_keys]
    try:
        record = verify_evidence(file.read_bytes(), signature, keys)
    except VerificationError as exc:
        raise VerificationError(f"{file}: {exc.message}") from None
    if as_json:
        print_json(record)
        return
    d = record["deployment"]
    console.print(f"verified: evidence of deployment {d['uid']} ({d['kind']} {d['version']} to "
                  f"{d['environment']}: {d['status']}), signed by a trusted key", soft_wrap=True,
                  markup=False)


# -- the emergency freeze ---------------------------------------------------------------------


@click.command()
@env_option
@click.option("--reason", required=True, help="Why (an incident, patching, a DR exercise).")
@click.option("--json", "as_json", is_flag=True, help="Print the freeze as JSON on stdout.")
@config_option
def freeze(env_name: str, reason: str, as_json: bool, config_path: Path | None) -> None:
    """Stop the line: no deployment of the environment starts, a running one pauses at its next
    safe point, agents wait — from every controller — until `deployer unfreeze`."""
    if not reason.strip():
        raise UsageError("--reason must say why")
    config = get_config(config_path)
    board = freeze_for(config, env_name)
    record, made = board.freeze(by=actor(), reason=reason.strip())
    _journal_freeze(config, env_name, "freeze", f"{record.describe()}" if made else
                    f"already {record.describe()}")
    if as_json:
        print_json({"frozen": True, "new": made, **record.to_dict(), "where": board.where})
        return
    console.print(escape(f"{env_name} is {record.describe()}" + ("" if made else " (it was frozen "
                  "already; that freeze stays on the record)")), soft_wrap=True)


@click.command()
@env_option
@click.option("--reason", default="", help="Why the line may move again.")
@click.option("--json", "as_json", is_flag=True, help="Print what was lifted as JSON on stdout.")
@config_option
def unfreeze(env_name: str, reason: str, as_json: bool, config_path: Path | None) -> None:
    """Lift the environment's emergency freeze (a paused deployment then goes on with
    `deployer resume`)."""
    config = get_config(config_path)
    board = freeze_for(config, env_name)
    lifted = board.unfreeze(by=actor(), reason=reason.strip())
    if lifted is not None:
        _journal_freeze(config, env_name, "unfreeze", f"lifted the freeze ({lifted.describe()})"
                        + (f": {reason.strip()}" if reason.strip() else ""))
    if as_json:
        print_json({"lifted": lifted.to_dict() if lifted else None, "where": board.where})
        return
    console.print(escape(f"{env_name}: lifted the freeze ({lifted.describe()}); a paused deployment "
                         f"goes on with `deployer resume --env {env_name}`" if lifted else
                         f"{env_name} was not frozen"), soft_wrap=True)


def _journal_freeze(config: Any, env_name: str, kind: str, summary: str) -> None:
    """A freeze and an unfreeze are on this controller's record too (history)."""
    env = config.environment(env_name)
    journal = journal_for(config)
    try:
        deployment_id, _ = journal.start(env=env_name, app=env.app.name, kind=kind, version="-",
                                         command=shlex.join(["deployer", *sys.argv[1:]]))
        journal.finish_deployment(deployment_id, "succeeded", summary)
    finally:
        journal.close()

