"""`deployer gameday`: the scenarios listed, and an environment that does not allow game days
refused before anything runs (the game days themselves: tests/e2e/test_gameday_lab.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import MINIMAL_CONFIG, write_config

from deployer.gameday import SCENARIOS


def test_the_cli_refuses_before_anything_runs(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, MINIMAL_CONFIG)
    r = subprocess.run([sys.executable, "-m", "deployer", "gameday", "run", "all", "--env", "lab",
                        "--config", str(cfg)], capture_output=True, text=True, check=False)
    assert r.returncode == 2, r.stderr
    assert "environments.lab.gameday.allowed" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "state" / "gameday").exists()
    listed = subprocess.run([sys.executable, "-m", "deployer", "gameday", "list", "--json"],
                            capture_output=True, text=True, check=True)
    assert [s["name"] for s in json.loads(listed.stdout)] == [s.name for s in SCENARIOS]
