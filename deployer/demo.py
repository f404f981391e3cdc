"""The README's main command: bring the lab up and show a day of releases on it.

Publishes (through `deployer lab up`) signed releases of the sample service, deploys 1.0.0,
rolls to 1.1.0 under load through HAProxy (counting failed requests), tries the bad
1.2.0-badhealth (reverted automatically), then shows status and history. Every step is a real
`deployer` command, printed before it runs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from rich.console import Console

from .lab._load import LoadGenerator

console = Console(highlight=False)


def _deployer(*args: str, check: bool = True) -> int:
    cmd = [sys.executable, "-m", "deployer", *args]
    console.print(f"\n[bold cyan]$ deployer {shlex.join(args)}[/]")
    rc = subprocess.run(cmd, check=False).returncode
    if check and rc != 0:
        console.print(f"[bold red]demo stopped: 'deployer {shlex.join(args)}' exited {rc}[/]")
        sys.exit(rc)
    return rc


def main() -> None:
    from .lab import default_lab_dir

    nodes = os.environ.get("DEMO_NODES", "3")
    # The demo runs on the lab it builds: its commands use the lab's config (outside the demo
    # and the lab commands, deployer never falls back to it).
    lab_config = default_lab_dir() / "deployer.yml"
    os.environ["DEPLOYER_CONFIG"] = str(lab_config)
    console.rule("[bold]deployer demo")
    _deployer("lab", "up", "--nodes", nodes)
    _deployer("lab", "status")
    _deployer("artefact", "list", "--store", _store_url())

    console.rule("1. first release: 1.0.0")
    _deployer("deploy", "--env", "lab", "--version", "1.0.0")

    console.rule("2. roll to 1.1.0 under load (strict HAProxy: no retries, no redispatch)")
    load = LoadGenerator(_frontend_url(), concurrency=8, max_requests=50_000, max_seconds=240)
    load.start()
    rc = _deployer("deploy", "--env", "lab", "--version", "1.1.0", check=False)
    report = load.stop()
    colour = "green" if report.failed == 0 else "red"
    console.print(f"[bold {colour}]load during the rollout:[/] {report.line()}")
    if rc != 0:
        sys.exit(rc)

    console.rule("3. a bad release: 1.2.0-badhealth (its health check fails)")
    load = LoadGenerator(_frontend_url(), concurrency=8, max_requests=50_000, max_seconds=240)
    load.start()
    rc = _deployer("deploy", "--env", "lab", "--version", "1.2.0-badhealth", check=False)
    report = load.stop()
    console.print(f"deploy exited {rc} (non-zero: the release was refused and reverted, as intended)")
    colour = "green" if report.failed == 0 else "red"
    console.print(f"[bold {colour}]load during the failed rollout:[/] {report.line()}")

    console.rule("4. where the fleet stands")
    _deployer("status", "--env", "lab")
    _deployer("history", "--env", "lab")
    console.print(
        f"\nThe lab stays up: `export DEPLOYER_CONFIG={lab_config}`, then try "
        "`deployer plan --env lab --version 1.0.0`, `deployer rollback --env lab`, or "
        "`deployer lab down` when done.",
        soft_wrap=True,
    )
    if rc == 0:
        console.print("[bold red]unexpected: the bad release was accepted[/]")
        sys.exit(1)


def _lab_value(key: str) -> str:
    import json

    from .lab import default_lab_dir

    out = subprocess.run(
        [sys.executable, "-m", "deployer", "lab", "status", "--json", "--dir", str(default_lab_dir())],
        capture_output=True, text=True, check=True,
    ).stdout
    value = json.loads(out)
    for part in key.split("."):
        value = value[part]
    return str(value)


def _store_url() -> str:
    return _lab_value("store_url")


def _frontend_url() -> str:
    return _lab_value("frontend_url")


if __name__ == "__main__":
    main()
