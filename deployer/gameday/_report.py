"""A game day's report, for someone who was not there: a summary table, then for each scenario
its hypothesis, fault, expected and actual outcome, the times to detect and to restore service,
the requests sent and failed through the load balancer, the nodes left out of it, whether the
journal agrees with what is live, the evidence, and a timeline. Written as Markdown and as JSON
(the same facts).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["VERDICTS", "GameDayReport", "ScenarioResult", "describe_event"]

# safe: the outcome was the safe one and the steady state came back; unsafe: it was not (the
# game day found a failure path that does not end safely); inconclusive: the scenario could not
# tell (its fault never went in, the steady state did not hold before, the run broke);
# skipped: it does not apply here (said why).
VERDICTS = ("safe", "unsafe", "inconclusive", "skipped")


@dataclass
class ScenarioResult:
    name: str
    title: str
    strategy: str
    verdict: str = "skipped"
    reasons: list[str] = field(default_factory=list)
    fault: str = ""
    point: str = ""
    expected: str = ""
    actual: str = ""
    exit_code: int | None = None
    baseline: str = ""
    target: str = ""
    detected_s: float | None = None
    detected_by: str = ""
    restored_s: float | None = None
    requests: dict[str, Any] = field(default_factory=dict)
    long_lived: dict[str, Any] | None = None
    left_out_named: list[str] = field(default_factory=list)
    left_out_after: list[str] = field(default_factory=list)
    journal_consistent: bool | None = None
    journal_differences: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    deployments: list[str] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    recovery: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    reset: list[str] = field(default_factory=list)
    steady_before: dict[str, Any] | None = None
    steady_after: dict[str, Any] | None = None
    timeline: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ran(self) -> bool:
        return self.verdict in ("safe", "unsafe")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GameDayReport:
    env: str
    strategy: str
    releases: list[str]
    load_url: str
    rate: float
    config: str
    hypothesis: str
    started: float
    ended: float = 0.0
    interrupted: bool = False
    cleanup: list[str] = field(default_factory=list)
    results: list[ScenarioResult] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        """Every scenario that ran ended safely, and none was inconclusive."""
        return not self.interrupted and all(r.verdict in ("safe", "skipped") for r in self.results)

    def counts(self) -> dict[str, int]:
        return {v: sum(1 for r in self.results if r.verdict == v) for v in VERDICTS}

    def line(self) -> str:
        counts = self.counts()
        took = self.ended - self.started if self.ended else 0.0
        return (f"game day on {self.env}: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
                + f" in {took:.0f} s" + (" (interrupted)" if self.interrupted else ""))

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env, "strategy": self.strategy, "releases": self.releases,
            "load": {"url": self.load_url, "rate": self.rate}, "config": self.config,
            "hypothesis": self.hypothesis, "started": _iso(self.started),
            "ended": _iso(self.ended) if self.ended else None,
            "duration_s": round(self.ended - self.started, 1) if self.ended else None,
            "interrupted": self.interrupted, "safe": self.safe, "counts": self.counts(),
            "cleanup": self.cleanup, "scenarios": [r.to_dict() for r in self.results],
        }

    def summary_rows(self) -> list[dict[str, str]]:
        """One row per scenario, as the summary table shows it."""
        rows = []
        for r in self.results:
            req = r.requests
            rows.append({
                "scenario": r.name,
                "verdict": r.verdict,
                "outcome": _short_outcome(r),
                "detected": _seconds(r.detected_s),
                "restored": _seconds(r.restored_s),
                "requests": f"{req.get('sent', 0)} / {req.get('failed', 0)}" if req else "-",
                "left out": str(len(r.left_out_after)) if r.ran else "-",
                "journal": "-" if r.journal_consistent is None else
                           "yes" if r.journal_consistent else "no",
            })
        return rows

    # -- writing ----------------------------------------------------------------------------

    def write(self, directory: Path) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        md, js = directory / "gameday.md", directory / "gameday.json"
        md.write_text(self.markdown(), encoding="utf-8")
        js.write_text(json.dumps(self.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
        return md, js

    def markdown(self) -> str:
        out: list[str] = []
        counts = self.counts()
        verdict = ("every scenario that ran ended safely" if self.safe else
                   "NOT SAFE: " + ", ".join(f"{counts[v]} {v}" for v in ("unsafe", "inconclusive")
                                            if counts[v])
                   + (" (the game day was interrupted)" if self.interrupted else ""))
        took = f"; {self.ended - self.started:.0f} s in all" if self.ended else ""
        out += [
            f"# Game day on `{self.env}`, {_iso(self.started)}", "",
            f"**Result: {verdict}.** " + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
            + took + ".", "",
            f"- Environment: `{self.env}` ({self.strategy}), config `{self.config}`",
            f"- Releases the rehearsals moved between: {', '.join(self.releases)}",
            f"- Load during every scenario: GET {self.load_url} at {self.rate:g} requests/s",
            f"- Steady-state hypothesis, checked before and after each scenario: {self.hypothesis}",
        ]
        if self.cleanup:
            out.append("- Faults an earlier, interrupted game day had left, undone first: "
                       + "; ".join(self.cleanup))
        out += ["", "## Summary", "",
                "| Scenario | Verdict | Outcome | Detected | Restored | Requests sent / failed "
                "| Left out | Journal = live |",
                "|---|---|---|---|---|---|---|---|"]
        for row in self.summary_rows():
            out.append("| " + " | ".join(_cell(v) for v in row.values()) + " |")
        out += ["", _HOW_TO_READ, ""]
        for i, r in enumerate(self.results, start=1):
            out += _scenario_markdown(i, r)
        return "\n".join(out) + "\n"


_HOW_TO_READ = """### How to read this report

Each scenario rehearses one failure path of a release on this environment, under load: the
steady state is checked, a rehearsal deployment runs, one fault goes in at a defined point of
its lifecycle (a safe point or an event, never a timer), the outcome is compared with the safe
one, the fault is undone, the fixes the outcome names are run, and the steady state is checked
again.

- **safe**: the outcome was the expected safe one, no node was left out of the load balancer
  without the outcome saying so, the steady state came back and the journal agrees with what is
  live. **unsafe**: one of those did not hold: the reasons say which; this is what a game day
  is for. **inconclusive**: the scenario could not tell (its fault never went in, the steady
  state did not hold before it). **skipped**: it does not apply here (the reason says why).
- **Detected**: seconds from the fault going in to deployer reacting to it (the event is named).
  **Restored**: seconds from the fault going in to the first check after the rehearsal (and its
  fixes) at which the steady state held again.
- **Requests sent / failed**: through the load balancer while the scenario ran (long-lived
  requests of the slow-drain scenario are counted apart). Requests can fail because of the fault
  itself (a node losing its network mid-request): the verdict does not count those against
  deployer; the steady state after the scenario must be back under the threshold.
- **Left out**: nodes out of the load balancer once the scenario was over (must be 0).
- **Journal = live**: whether the journal's last word on each node (its release, whether
  deployer left it out of the load balancer, the live leg) matches what is live.
- **Evidence**: the deployments each scenario recorded (their ids, in the journal:
  `deployer history --env ENV --deployment ID`) and every event heard, as JSON lines beside this
  report."""


def _scenario_markdown(i: int, r: ScenarioResult) -> list[str]:
    out = ["", f"## {i}. `{r.name}`: {r.title}", "", f"**Verdict: {r.verdict}.**"
           + (" " + " ".join(_sentence(x) for x in r.reasons) if r.reasons else ""), ""]
    if not r.fault:
        return out
    req = r.requests
    facts = [
        ("Hypothesis", "the steady state above holds before the fault and again after it is "
                       "undone" + (f" (the fleet ran {r.baseline}; the rehearsal deployed "
                                   f"{r.target})" if r.baseline else "")),
        ("Fault", r.fault),
        ("Injected at", r.point),
        ("Expected (the safe outcome)", r.expected),
        ("Actual", r.actual or "-"),
        ("Time to detect", f"{_seconds(r.detected_s)}" + (f" ({r.detected_by})" if r.detected_by
                                                          else "")),
        ("Time to restore service", _seconds(r.restored_s)),
        ("Requests through the load balancer", f"{req.get('sent', 0)} sent, "
         f"{req.get('failed', 0)} failed" + _errors(req) if req else "-"),
    ]
    if r.long_lived:
        facts.append(("Long-lived requests", f"{r.long_lived['sent']} sent, "
                      f"{r.long_lived['failed']} cut" + _errors(r.long_lived)))
    facts += [
        ("Nodes left out of the load balancer", f"{len(r.left_out_after)}"
         + (f" ({', '.join(r.left_out_after)})" if r.left_out_after else "")
         + (f"; named out of service by the outcome: {', '.join(r.left_out_named)}"
            if r.left_out_named else "")),
        ("Journal consistent with the live state", "-" if r.journal_consistent is None else
         "yes" if r.journal_consistent else "no: " + "; ".join(r.journal_differences)),
        ("Evidence", _evidence(r)),
    ]
    if r.faults:
        facts.append(("Faults", "; ".join(r.faults)))
    if r.recovery:
        facts.append(("Fixes run", "; ".join(r.recovery)))
    if r.overrides:
        facts.append(("For this rehearsal only", "; ".join(r.overrides)))
    if r.reset:
        facts.append(("Reset afterwards (not measured)", "; ".join(r.reset)))
    out += [f"- **{k}:** {v}" for k, v in facts]
    after = r.steady_after or {}
    if after and not after.get("holds"):
        out.append("- **Steady state after:** broken: " + "; ".join(after.get("problems", [])))
    if r.timeline:
        out += ["", "<details><summary>Timeline (seconds from the scenario's start)</summary>", "",
                "| t (s) | what |", "|---:|---|"]
        out += [f"| {t['t']:.2f} | {_cell(t['what'])} |" for t in r.timeline]
        out += ["", "</details>"]
    for note in r.notes:
        out += ["", "```", note.rstrip(), "```"]
    return out


def _evidence(r: ScenarioResult) -> str:
    parts = []
    journal = r.evidence.get("journal") or []
    if journal:
        parts.append("in the journal: " + ", ".join(f"`{uid}`" for uid in journal))
    elif r.deployments:
        parts.append("not in the journal: " + ", ".join(r.deployments))
    records = r.evidence.get("records") or {}
    if records:
        parts.append("evidence records: " + ", ".join(f"`{uid}` {how}" for uid, how in records.items()))
    if r.evidence.get("events"):
        parts.append(f"events: `{r.evidence['events']}`")
    return "; ".join(parts) or "none (nothing was recorded)"


def _errors(count: Mapping[str, Any]) -> str:
    errors = count.get("errors") or {}
    return f" ({', '.join(f'{k}: {v}' for k, v in errors.items())})" if errors else ""


def _short_outcome(r: ScenarioResult) -> str:
    if not r.ran:
        return r.reasons[0] if r.reasons else ""
    return r.actual.split(":", 1)[0]


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def describe_event(event: Mapping[str, Any]) -> str:
    """One line for an event worth a line in a timeline ("" for the others)."""
    kind = event.get("type")
    if kind == "node" and event.get("phase") not in ("pending", "staging", "staged"):
        detail = f": {event['detail']}" if event.get("detail") else ""
        return f"{event.get('node')} {event.get('phase')}{detail}"
    if kind == "batch":
        what = "rollback batch" if event.get("rollback") else f"batch {event.get('index')}"
        return f"{what}: {', '.join(event.get('nodes') or [])}"
    if kind == "safe_point":
        return f"safe point {event.get('point')}" + (f" {event['index']}" if event.get("index") else "")
    if kind == "check" and event.get("decision") != "continue":
        return f"check {event.get('check')}: {event.get('decision')}: {event.get('reason')}"
    if kind == "soak_started":
        return f"soak started on {', '.join(event.get('servers') or [])} ({event.get('scope')})"
    if kind == "soak_verdict":
        return f"soak {event.get('outcome')}: {event.get('line')}"
    if kind == "switch":
        return f"live traffic {'switched back' if event.get('back') else 'switched'} from " \
               f"{event.get('from_leg')} to {event.get('to_leg')}"
    if kind == "lock" and event.get("what") != "released":
        return f"lock {event.get('what')}: {event.get('detail')}"
    if kind == "message" and event.get("level") == "warning":
        return f"warning: {event.get('text')}"
    if kind == "deployment_finished":
        return f"finished: {event.get('status')} (exit {event.get('exit_code')})"
    if kind == "deployment_started":
        dep = event.get("deployment") or {}
        return f"deployment {dep.get('id')} ({dep.get('kind')} {dep.get('version')}) started"
    return ""
