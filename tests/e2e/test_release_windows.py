"""A short real release window on the lab, through the CLI: a rolling deployment started near
the end of a one-minute window (in Europe/London) pauses at the next safe point once it has
closed (exit 15, status paused, every node in service, the lock released); `resume` outside a
window is refused (exit 14) and says when the next opens; in the next window `resume`
continues it to the end. The evidence record says what happened."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

import pytest
from lab_cli import configured, deployer, fleet, journal, read_until, start

from deployer.lab import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LONDON = ZoneInfo("Europe/London")


def hhmm(t: dt.datetime) -> str:
    return t.astimezone(LONDON).strftime("%H:%M")


def test_a_window_closing_mid_rollout_pauses_it_and_resume_continues_it_in_the_next(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=3, seed="1.0.0")
    # Start 40 to 46 s into a minute: the deployment is admitted, and reaches batch 1, in the
    # window [m, m+1) (verifying and pre-staging take 4 s, or 10 s on a busy machine), and
    # reaches batch 2 after it closed (batch 1 and a 25 s pause take longer than the 20 s
    # left at most: a batch of the rollout's one run takes under a second). The next window
    # is [m+2, m+3).
    while not 40 <= time.time() % 60 < 46:
        time.sleep(0.5)
    minute = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    windows = [
        {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "from": hhmm(minute),
         "to": hhmm(minute + dt.timedelta(minutes=1))},
        {"from": hhmm(minute + dt.timedelta(minutes=2)), "to": hhmm(minute + dt.timedelta(minutes=3))},
    ]
    config = configured(lab, "windows.yml", strategy={"pause_between_batches": 25},
                        gates={"timezone": "Europe/London", "windows": windows,
                               "on_window_close": "pause"})

    proc = start(config, "deploy", "--env", "lab", "--version", "1.1.0")
    read_until(proc, "batch 1/3")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 15, err
    pause_line = "deployer: error: paused by the window gate before batch 2/3: outside every release window"
    assert pause_line in err, err
    assert "every node is in service" in err and "deployer resume --env lab" in err
    assert fleet(lab) == {"node1": ("1.1.0", "UP"), "node2": ("1.0.0", "UP"), "node3": ("1.0.0", "UP")}
    [paused] = journal(lab).deployments("lab", limit=1)
    assert paused.status == "paused"
    status = json.loads(deployer(config, "status", "--env", "lab", "--json").stdout)
    assert status.get("locked_by") is None  # the lock was released

    # Between the windows: refused, saying when the next one opens.
    early = deployer(config, "resume", "--env", "lab")
    if time.time() < (minute + dt.timedelta(minutes=2)).timestamp():
        assert early.returncode == 14, early.stderr
        assert f"the next opens {(minute + dt.timedelta(minutes=2)).astimezone(LONDON):%a}".lower() \
            in early.stderr.lower()
        assert fleet(lab)["node2"] == ("1.0.0", "UP")
        time.sleep(max(0.0, (minute + dt.timedelta(minutes=2)).timestamp() - time.time()) + 1)

    # In the next window it goes on from where it stopped.
    r = deployer(config, "resume", "--env", "lab", "--json")
    assert r.returncode == 0, r.stderr
    assert "was paused" in r.stderr and "finish it: deploy 1.1.0" in r.stderr
    assert fleet(lab) == dict.fromkeys(("node1", "node2", "node3"), ("1.1.0", "UP"))

    # The paused deployment's evidence: the window that admitted it, and where it paused.
    shown = deployer(config, "evidence", "show", "--env", "lab", "--deployment", paused.uid, "--json")
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["deployment"]["status"] == "paused" and record["deployment"]["exit_code"] == 15
    assert record["window"].startswith(f"in the window every day {hhmm(minute)}-")
    assert any(g["gate"] == "window" and g["decision"] == "stop" and g["point"] == "before_batch"
               for g in record["gates"])
