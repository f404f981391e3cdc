"""The README's main command: bring the lab up and show a day of releases on it.

Publishes (through `deployer lab up`) signed releases of the sample service, deploys 1.0.0,
rolls to 1.1.0 under load through HAProxy (counting failed requests), tries the bad
1.2.0-badhealth (reverted automatically) and 1.3.0-errors (healthy at first, caught by the soak
after the canary batch), then shows status and history; then a blue-green lab: a release
switched live in one operation, a bad one switched back during its soak, and a rollback that is
one switch; then a path to live of two environments: preprod's runner deploys what its pointer
names, prod's refuses what preprod has not passed and deploys what it has. Every step is a real
`deployer` command, printed before it runs.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

from rich.console import Console

from .lab import default_lab_dir
from .lab._load import LoadGenerator, LoadReport

console = Console(highlight=False)
# The blue-green lab sits beside the rolling one, on addresses and ports of its own; so does the
# path to live (one fleet per environment).
_BLUE_GREEN_DIR = default_lab_dir().parent / "lab-blue-green"
_PATH_DIR = default_lab_dir().parent / "lab-path"


def _deployer(*args: str, check: bool = True, quiet_stdout: bool = False) -> int:
    """Run a deployer command, shown before it runs (``quiet_stdout``: without its JSON lines,
    which the runner writes for machines)."""
    cmd = [sys.executable, "-m", "deployer", *args]
    console.print(f"\n[bold cyan]$ deployer {shlex.join(args)}[/]")
    rc = subprocess.run(cmd, check=False,
                        stdout=subprocess.DEVNULL if quiet_stdout else None).returncode
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

    if rc == 0:
        console.print("[bold red]unexpected: the bad release was accepted[/]")
        sys.exit(1)

    console.rule("4. a release that fails after its smoke check: 1.3.0-errors (500s a few "
                 "seconds after it starts), caught by the soak after the canary batch")
    rc, report = _under_load(_frontend_url(), "deploy", "--env", "lab", "--version", "1.3.0-errors")
    console.print(f"deploy exited {rc} (non-zero: caught during its soak and rolled back)")
    console.print(f"load during the soak: {report.line()} (only the canary served it, briefly)")
    if rc == 0:
        console.print("[bold red]unexpected: the failing release was accepted[/]")
        sys.exit(1)

    console.rule("5. where the fleet stands")
    _deployer("status", "--env", "lab")
    _deployer("history", "--env", "lab")

    _blue_green()
    _path_to_live()
    console.print(
        f"\nThe labs stay up. Rolling: `export DEPLOYER_CONFIG={lab_config}`; blue-green: "
        f"`--config {_BLUE_GREEN_DIR / 'deployer.yml'}`; the path to live: `--config "
        f"{_PATH_DIR / 'envs' / 'ENV' / 'deployer.yml'}`. Try `deployer plan --env lab --version "
        "1.0.0`, `deployer rollback --env lab`, `deployer pointer set --env lab --version 1.1.0 "
        "--reason try` then `deployer agent --env lab --once`, or `deployer lab down [--dir DIR]` "
        "when done.",
        soft_wrap=True,
    )


def _under_load(frontend: str, *args: str) -> tuple[int, LoadReport]:
    load = LoadGenerator(frontend, concurrency=8, max_requests=50_000, max_seconds=240)
    load.start()
    rc = _deployer(*args, check=False)
    return rc, load.stop()


def _blue_green() -> None:
    """A second lab with two legs: live traffic moves in one operation, and back."""
    lab_dir = str(_BLUE_GREEN_DIR)
    config = str(_BLUE_GREEN_DIR / "deployer.yml")
    console.rule("6. blue-green: a second lab, legs blue (live) and green (idle, behind a preview route)")
    # Its own directory and network: it picks free ports (`lab status` shows them).
    _deployer("lab", "up", "--dir", lab_dir, "--legs", "--nodes", "2", "--seed", "1.0.0",
              "--net", "127.0.2")
    frontend = _lab_value("frontend_url", lab_dir)
    _deployer("plan", "--env", "lab", "--version", "1.1.0", "--config", config)
    rc, report = _under_load(frontend, "deploy", "--env", "lab", "--version", "1.1.0", "--config", config)
    colour = "green" if report.failed == 0 and rc == 0 else "red"
    console.print(f"[bold {colour}]load during the blue-green release:[/] {report.line()}")
    if rc != 0:
        sys.exit(rc)

    console.rule("7. blue-green: 1.3.0-errors goes live on the idle leg, fails its soak, and "
                 "traffic switches back at once")
    rc, report = _under_load(frontend, "deploy", "--env", "lab", "--version", "1.3.0-errors",
                             "--config", config)
    console.print(f"deploy exited {rc} (non-zero: switched back during the soak)")
    console.print(f"load: {report.line()} (failures only between the first 500 and the switch-back)")
    if rc == 0:
        console.print("[bold red]unexpected: the failing release was accepted[/]")
        sys.exit(1)

    console.rule("8. blue-green: rollback to 1.0.0 is one switch (the idle leg still holds it)")
    rc, report = _under_load(frontend, "rollback", "--env", "lab", "--config", config)
    colour = "green" if report.failed == 0 and rc == 0 else "red"
    console.print(f"[bold {colour}]load during the rollback:[/] {report.line()}")
    _deployer("status", "--env", "lab", "--config", config)
    _deployer("history", "--env", "lab", "--config", config)


def _path_to_live() -> None:
    """Two environments, each pulling its own release: preprod's runner deploys what its
    pointer names and records it as passed; prod's refuses what preprod has not passed."""
    console.rule("9. the path to live: preprod and prod, each with its own fleet, runner and pointer")
    # One fleet of one node per environment (127.0.3 and 127.0.4); the releases lab up signed
    # and published are in the store both pull from.
    _deployer("lab", "up", "--dir", str(_PATH_DIR), "--envs", "preprod,prod", "--nodes", "1",
              "--seed", "1.0.0", "--soak", "0", "--net", "127.0.3")
    _deployer("artefact", "list", "--store", _lab_value("store_url", str(_PATH_DIR)))

    def config(env: str) -> str:
        return str(_PATH_DIR / "envs" / env / "deployer.yml")

    console.rule("10. preprod's runner deploys what its pointer names, and records it as passed")
    _deployer("pointer", "set", "--env", "preprod", "--version", "1.1.0", "--reason",
              "release train 49", "--config", config("preprod"))
    _deployer("agent", "--env", "preprod", "--once", "--config", config("preprod"),
              quiet_stdout=True)
    _deployer("pointer", "get", "--env", "preprod", "--config", config("preprod"))

    console.rule("11. prod refuses a release preprod has not passed (exit 14, nothing changed)")
    _deployer("pointer", "set", "--env", "prod", "--version", "1.3.0-errors", "--reason",
              "skip the queue", "--config", config("prod"))
    rc = _deployer("agent", "--env", "prod", "--once", "--config", config("prod"),
                   check=False, quiet_stdout=True)
    console.print(f"agent exited {rc} (14: refused by the promotion gate, as intended)")
    if rc != 14:
        sys.exit(1)
    _deployer("pointer", "get", "--env", "prod", "--config", config("prod"))

    console.rule("12. ... and deploys one preprod passed")
    _deployer("pointer", "set", "--env", "prod", "--version", "1.1.0", "--reason",
              "preprod passed it", "--config", config("prod"))
    _deployer("agent", "--env", "prod", "--once", "--config", config("prod"),
              quiet_stdout=True)
    _deployer("pointer", "get", "--env", "prod", "--config", config("prod"))
    _deployer("promotion", "show", "--store", f"file://{_PATH_DIR / 'promotions'}", "--app",
              "hello", "--version", "1.1.0")


def _lab_value(key: str, lab_dir: str | None = None) -> str:
    import json

    from .lab import default_lab_dir

    out = subprocess.run(
        [sys.executable, "-m", "deployer", "lab", "status", "--json", "--dir",
         lab_dir or str(default_lab_dir())],
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
