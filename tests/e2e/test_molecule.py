"""Each molecule scenario, run for real: each role's (roles/<role>/molecule/default: a one-node
lab is created, the role converged on it twice, the second run changing nothing, verified, and
the lab destroyed) and the playbooks' (molecule/<scenario>: playbooks/deploy.yml, and
playbooks/revert.yml, rolled across a three-node lab the same way).

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

ROOT = Path(__file__).resolve().parents[2]
# Each scenario: the directory molecule runs in and its arguments.
SCENARIOS = {
    "deployer_release": (ROOT / "roles" / "deployer_release", ["molecule", "test"]),
    "deployer_lb_haproxy": (ROOT / "roles" / "deployer_lb_haproxy", ["molecule", "test"]),
    "deployer_smoke": (ROOT / "roles" / "deployer_smoke", ["molecule", "test"]),
    "playbook-deploy": (ROOT, ["molecule", "test", "--scenario-name", "deploy"]),
    "playbook-revert": (ROOT, ["molecule", "test", "--scenario-name", "revert"]),
}
VENV_BIN = Path(sys.executable).parent
RUN_TIMEOUT = 480.0
# Lines of molecule's output shown when a scenario fails.
OUTPUT_TAIL = 80


@dataclass
class MoleculeRun:
    """One `molecule test` of a scenario, with its own ephemeral directory."""

    scenario: str
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
    """Starts `molecule test` at once for every scenario whose test was selected."""
    selected = {
        item.callspec.params["scenario"]
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.module is request.module
        and hasattr(item, "callspec")
    }
    runs: dict[str, MoleculeRun] = {}
    try:
        for scenario in (s for s in SCENARIOS if s in selected):
            cwd, argv = SCENARIOS[scenario]
            ephemeral_dir = tmp_path_factory.mktemp("mol")
            log_path = tmp_path_factory.mktemp("mol-log") / "molecule.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    argv, cwd=cwd, env=_molecule_env(ephemeral_dir),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            runs[scenario] = MoleculeRun(scenario, ephemeral_dir, log_path, process)
        yield runs
    finally:
        for run in runs.values():
            run.stop()
            # molecule destroys its lab even when a step fails; this covers a crash or timeout.
            Lab(run.lab_dir).down()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario_passes(scenario: str, molecule_runs: dict[str, MoleculeRun]) -> None:
    run = molecule_runs[scenario]
    returncode, output = run.wait()
    if returncode != 0:
        tail = "\n".join(output.splitlines()[-OUTPUT_TAIL:])
        pytest.fail(f"molecule test of {scenario} exited {returncode}:\n{tail}")
    # Every step ran: a scenario whose steps were skipped would pass without testing anything.
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert f"{step}: Executed: Successful" in output, f"{scenario}: no successful {step}"
    assert not run.lab_dir.exists(), f"molecule's destroy step left the lab in {run.lab_dir}"
