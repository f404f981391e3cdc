"""Each role's molecule scenario, run for real: a one-node lab is created, the role converged on
it twice (the second run must change nothing), verified, and the lab destroyed.

The scenarios run side by side (each scans for a free lab network from its own starting point),
so the module takes about as long as the slowest one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deployer.lab import Lab

pytestmark = pytest.mark.e2e

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
ROLES = ("deployer_release", "deployer_lb_haproxy", "deployer_smoke")
VENV_BIN = Path(sys.executable).parent
RUN_TIMEOUT = 300.0
# Lines of molecule's output shown when a scenario fails.
OUTPUT_TAIL = 80


@dataclass
class MoleculeRun:
    """One `molecule test` running in a role directory, with its own ephemeral directory."""

    role: str
    ephemeral_dir: Path
    # molecule's stdout and stderr (a file, not a pipe, so that no run waits for a reader).
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def lab_dir(self) -> Path:
        return self.ephemeral_dir / "lab"

    def wait(self) -> tuple[int, str]:
        """Wait for molecule to end; returns its exit code and output."""
        returncode = self.process.wait(timeout=RUN_TIMEOUT)
        return returncode, self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Stop molecule and everything it started (its own process group), if still running."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _molecule_env(ephemeral_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    # molecule finds ansible-config and ansible-playbook on PATH.
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.pop("ANSIBLE_CONFIG", None)
    env.update(
        {
            # A short directory of the test's own: the lab's unix sockets live under it, and a
            # scenario run by hand from the same role keeps its own state.
            "MOLECULE_EPHEMERAL_DIRECTORY": str(ephemeral_dir),
            "NO_COLOR": "1",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
        }
    )
    return env


@pytest.fixture(scope="module")
def molecule_runs(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, MoleculeRun]]:
    """Starts `molecule test` at once for every role whose test was selected."""
    selected = {
        item.callspec.params["role"]
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.module is request.module
        and hasattr(item, "callspec")
    }
    runs: dict[str, MoleculeRun] = {}
    try:
        for role in (r for r in ROLES if r in selected):
            ephemeral_dir = tmp_path_factory.mktemp("mol")
            log_path = tmp_path_factory.mktemp("mol-log") / "molecule.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    ["molecule", "test"], cwd=ROLES_DIR / role, env=_molecule_env(ephemeral_dir),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            runs[role] = MoleculeRun(role, ephemeral_dir, log_path, process)
        yield runs
    finally:
        for run in runs.values():
            run.stop()
            # molecule destroys its lab even when a step fails; this covers a crash or timeout.
            Lab(run.lab_dir).down()


@pytest.mark.parametrize("role", ROLES)
def test_molecule_scenario_passes(role: str, molecule_runs: dict[str, MoleculeRun]) -> None:
    run = molecule_runs[role]
    returncode, output = run.wait()
    if returncode != 0:
        tail = "\n".join(output.splitlines()[-OUTPUT_TAIL:])
        pytest.fail(f"molecule test of {role} exited {returncode}:\n{tail}")
    assert not run.lab_dir.exists(), f"molecule's destroy step left the lab in {run.lab_dir}"
