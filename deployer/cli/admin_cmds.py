"""`deployer recover|unlock`: putting an environment right after something went wrong."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from rich.markup import escape

from .._errors import UsageError
from ..adapters.process import actor
from ..engine.recovery import recover as recover_fleets
from ._common import config_option, console, env_option, get_config
from ._wiring import journal_for, lock_for
from .deploy_cmds import wired

__all__ = ["recover", "unlock"]


@click.command()
@env_option
@config_option
def recover(env_name: str, config_path: Path | None) -> None:
    """Put healthy nodes that deployer left out of the load balancer back into service.

    Only nodes the journal says a deployment took out, in every backend of the environment
    (both legs of a blue-green one); a node someone else put in maintenance is left as it is."""
    with wired(config_path, env_name) as environment:
        recover_fleets(
            list(environment.fleets.values()), environment.journal, environment.lock,
            env_name=env_name, app=environment.env.app.name,
            command=shlex.join(["deployer", *sys.argv[1:]]),
            say=lambda text: console.print(escape(text)),
        )


@click.command()
@env_option
@click.option("--force", is_flag=True,
              help="Remove the lock even if its holder's lease has not expired (needs --reason).")
@click.option("--reason", default=None, help="Why (kept in the journal and on the lock's host).")
@config_option
def unlock(env_name: str, force: bool, reason: str | None, config_path: Path | None) -> None:
    """Remove an environment's lock whose holder is gone (its lease expired, or its process
    is gone from this host); --force --reason removes a live holder's lock too."""
    reason = (reason or "").strip()
    if force and not reason:
        raise UsageError(
            "--force needs --reason: removing a live deployment's lock is recorded with why",
            hint=f"deployer unlock --env {env_name} --force --reason 'the runner died with the VM'",
        )
    config = get_config(config_path)
    env = config.environment(env_name)
    lock = lock_for(config, env_name)
    removed = lock.remove(by=actor(), reason=reason, force=force)
    if removed is None:
        console.print(f"environment {env_name!r} is not locked ({escape(lock.where)})")
        return
    how = "forced" if force else "removed a stale lock"
    summary = f"{how}: the lock of {removed.describe()} at {lock.where}"
    if reason:
        summary += f"; reason: {reason}"
    journal = journal_for(config)
    dep = journal.start_deployment(
        env=env_name, app=env.app.name, kind="unlock", version="-",
        command=shlex.join(["deployer", *sys.argv[1:]]),
        details={"removed": removed.to_dict(), "where": lock.where, "force": force,
                 "reason": reason},
    )
    journal.finish_deployment(dep, "succeeded", summary)
    console.print(f"removed the lock of {escape(removed.describe())} ({escape(lock.where)}); "
                  f"recorded as deployment {dep} in the journal")
    if force:
        console.print("the deployment that held it stops at its next safe point, before any "
                      "more nodes leave the load balancer (exit 13)")
