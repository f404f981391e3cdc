"""What the journal says about an environment's past releases: what to roll back to, and
whether a release already ran successfully here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from .._errors import ConfigError
from ..adapters.journal import DeploymentRecord, Journal

__all__ = ["acts_as", "ran_successfully", "rollback_target", "successful_history"]

# How many of the environment's latest deployments are read, at most.
LOOKBACK = 500


def successful_history(journal: Journal, env: str) -> list[DeploymentRecord]:
    """The environment's successful deployments and rollbacks, oldest first (a resume that
    found nothing to do, recorded with version ``-``, changed no release: left out)."""
    return [
        r for r in reversed(journal.deployments(env, limit=LOOKBACK))
        if r.status == "succeeded" and r.kind in ("deploy", "rollback", "resume") and r.version != "-"
    ]


def acts_as(record: DeploymentRecord) -> str:
    """What a deployment was for the history: a resume that rolled back is a rollback, one
    that finished is what it finished (its journal details say which)."""
    if record.kind == "resume":
        return str(record.details.get("acts_as") or "deploy")
    return record.kind


def _release_stack(records: Iterable[DeploymentRecord]) -> list[str]:
    """The releases the environment went through, as a stack: each successful deployment puts
    its release on top, each successful rollback goes back down to its release."""
    records = list(records)
    stack: list[str] = []
    if not records:
        return stack
    first = records[0]
    froms = [v for v in (first.details.get("from_versions") or {}).values() if v and v != first.version]
    if froms:
        stack.append(str(Counter(froms).most_common(1)[0][0]))
    for rec in records:
        if acts_as(rec) != "rollback":
            if not stack or stack[-1] != rec.version:
                stack.append(rec.version)
            continue
        while stack and stack[-1] != rec.version:
            stack.pop()
        if not stack:
            stack.append(rec.version)
    return stack


def rollback_target(journal: Journal, env: str, *, previous_on_nodes: Callable[[], list[str]]) -> str:
    """The release before the current one in the environment's successful history, so rolling
    back twice goes further back, never forward again. With no history yet, the release most
    nodes name as their ``previous`` (``previous_on_nodes`` reads them)."""
    stack = _release_stack(successful_history(journal, env))
    if len(stack) >= 2:
        return stack[-2]
    if stack:
        raise ConfigError(
            f"no release before {stack[-1]} in the successful history of environment {env!r}",
            hint="name one with --to VERSION",
        )
    previous = [v for v in previous_on_nodes() if v]
    if previous:
        return Counter(previous).most_common(1)[0][0]
    raise ConfigError(
        f"no earlier release is known for environment {env!r}",
        hint="name one with --to VERSION",
    )


def ran_successfully(journal: Journal, env: str, version: str) -> bool:
    """Whether ``version`` ran here before: a successful deployment of it, or the release the
    nodes had when a successful deployment began."""
    for rec in successful_history(journal, env):
        if rec.version == version:
            return True
        if version in (rec.details.get("from_versions") or {}).values():
            return True
    return False
