"""The example systemd units of a runner host: systemd's own `systemd-analyze verify` accepts
them, they stop a runner the way its deployments need (SIGTERM to the runner alone, time for a
batch and its soak), and the README shows the service as it is in examples/systemd/."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNITS = REPO / "examples" / "systemd"


def test_the_example_units_verify(tmp_path: Path) -> None:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    names = []
    for unit in UNITS.iterdir():
        instance = unit.name.replace("@.", "@prod.")
        # The command must exist where systemd looks for it; deployer's install path may not.
        text = unit.read_text().replace("/usr/local/bin/deployer", "/bin/true")
        (tmp_path / instance).write_text(text)
        names.append(str(tmp_path / instance))
    verified = subprocess.run([binary, "verify", *sorted(names)], capture_output=True, text=True,
                              timeout=60, check=False)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr


@pytest.mark.parametrize("unit", ["deployer-agent@.service", "deployer-agent-once@.service"])
def test_a_runner_is_stopped_at_a_safe_point(unit: str) -> None:
    lines = (UNITS / unit).read_text().splitlines()
    assert "KillMode=mixed" in lines and "KillSignal=SIGTERM" in lines
    assert any(line.startswith("TimeoutStopSec=") for line in lines)
    [start] = [line for line in lines if line.startswith("ExecStart=")]
    assert "agent --env %i --config /etc/deployer/%i.yml" in start


def test_the_readme_shows_the_service_as_it_is() -> None:
    service = (UNITS / "deployer-agent@.service").read_text()
    assert f"```ini\n{service}```" in (REPO / "README.md").read_text()
