"""`scripts/gameday`: the whole game day on labs of its own, one rolling and one blue-green,
each scenario under load with its fault, and the summary of each.

The labs live in a temporary directory, on loopback networks and ports nobody else uses (never
the default lab's), and are removed at the end; the reports are kept (``--reports DIR``,
default ``./gameday-reports/<time>``). Every step is a real ``deployer`` command, printed
before it runs. Exit 0 when every scenario that ran ended safely.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from .lab._procs import port_is_free

console = Console(highlight=False)

# Loopback networks tried for the labs (the default lab's 127.0.1 and the test suite's blocks
# are not among them).
_NETS = range(200, 250)


def _deployer(*args: str) -> int:
    console.print(f"\n[bold cyan]$ deployer {shlex.join(args)}[/]")
    return subprocess.run([sys.executable, "-m", "deployer", *args], check=False).returncode


def _free_net(nodes: int, taken: set[str]) -> str:
    for octet in _NETS:
        net = f"127.0.{octet}"
        if net not in taken and all(port_is_free(f"{net}.{i}", p) for i in range(1, nodes + 1)
                                    for p in (22, 8000)):
            return net
    raise SystemExit("gameday: no free loopback network in 127.0.200-249 for a lab")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/gameday", description=__doc__)
    parser.add_argument("--reports", type=Path, default=None,
                        help="where to keep the reports (default ./gameday-reports/<time>)")
    parser.add_argument("--rate", default="20", help="requests per second of load (default 20)")
    args = parser.parse_args(argv)
    reports = args.reports or Path("gameday-reports") / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    reports = reports.absolute()
    labs = [("rolling", 2, []), ("blue-green", 1, ["--legs"])]
    work = Path(tempfile.mkdtemp(prefix="deployer-gameday-"))
    results: dict[str, int] = {}
    taken: set[str] = set()
    started = time.monotonic()
    try:
        for name, nodes, extra in labs:
            lab = work / name
            net = _free_net(nodes * (2 if extra else 1), taken)
            taken.add(net)
            console.rule(f"[bold]game day on a {name} lab")
            rc = _deployer("lab", "up", "--dir", str(lab), "--net", net, "--nodes", str(nodes),
                           "--seed", "1.0.0", "--soak", "4", *extra)
            if rc != 0:
                results[name] = rc
                continue
            results[name] = _deployer("gameday", "run", "all", "--env", "lab", "--config",
                                      str(lab / "deployer.yml"), "--report", str(reports / name),
                                      "--rate", args.rate)
    finally:
        for name, _, _ in labs:
            if (work / name).exists():
                _deployer("lab", "down", "--dir", str(work / name))
        subprocess.run(["rm", "-rf", str(work)], check=False)
    took = time.monotonic() - started
    console.rule("[bold]game day")
    for name, rc in results.items():
        verdict = "[green]every scenario ended safely[/]" if rc == 0 else f"[red]exit {rc}[/]"
        console.print(f"{name}: {verdict}; report: {reports / name / 'gameday.md'}")
    console.print(f"in {took:.0f} s")
    sys.exit(0 if results and all(rc == 0 for rc in results.values()) else 1)


if __name__ == "__main__":
    main()
