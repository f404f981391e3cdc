"""``python -m bench [NAME ...] [--json FILE]``: run benchmarks (overhead, downtime, restore,
scale, bluegreen, production, lockcheck) on labs of their own and print their figures; with no name, run
them all."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from . import bluegreen, downtime, lockcheck, overhead, production, restore, scale
from ._harness import machine, say

BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "overhead": overhead.run,
    "downtime": downtime.run,
    "restore": restore.run,
    "scale": scale.run,
    "bluegreen": bluegreen.run,
    "production": production.run,
    "lockcheck": lockcheck.run,
}


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run: {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to FILE")
    args = parser.parse_args(argv)
    # Labs are torn down on the way out: turn SIGTERM (and SIGINT, ignored when started in the
    # background) into KeyboardInterrupt so the context managers run.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    if os.geteuid() != 0:
        say("the benchmarks bring up labs: run them as root")
        return 2
    names = args.names or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    info = machine()
    say("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    results: dict[str, Any] = {"machine": info}
    t0 = time.monotonic()
    for name in names:
        started = time.monotonic()
        results[name] = BENCHMARKS[name]()
        say(f"  ({name} took {time.monotonic() - started:.0f}s)\n")
    results["seconds"] = round(time.monotonic() - t0, 1)
    results["load_after"] = machine()["load"]
    say(f"all done in {results['seconds']:.0f}s; load average now {results['load_after']}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
