"""Installed the way its users install it: the wheel (built from the sdist) in a fresh virtualenv
and the collection in a fresh collections path, both outside the checkout, which is not
importable from there. A deployment on a lab from the installed ``deployer``, then a plain
``ansible-playbook`` run of the collection's roles by their full names against one lab node."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from lab_specs import next_lab_spec

import deployer
from deployer.lab import Lab

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VERSION = deployer.__version__


def _clean_env(venv: Path, **extra: str) -> dict[str, str]:
    """No trace of the checkout: no PYTHONPATH, no venv of its own, no content override."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "DEPLOYER_", "ANSIBLE_"))}
    env["PATH"] = os.pathsep.join([str(venv / "bin"), "/usr/local/sbin", "/usr/local/bin",
                                   "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
    env["ANSIBLE_NOCOLOR"] = "1"
    env.update(extra)
    return env


def _run(argv: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{output}"
    return done


def _collection_playbook(lab: Lab, node: str, version: str) -> dict[str, Any]:
    manifest = json.loads((lab.store_dir / "hello" / version / "manifest.json").read_text())
    return {
        "name": f"Roll {version} onto {node} with the roles of deployer.vm",
        "hosts": node,
        "gather_facts": False,
        "vars": {
            "deployer_release_app": "hello",
            "deployer_release_version": version,
            "deployer_release_url": f"{lab.store_url}hello/{version}/{manifest['tarball']}",
            "deployer_release_sha256": manifest["sha256"],
            "deployer_release_size": manifest["size"],
            # The lab's nodes share this machine's /etc/passwd: run as nobody, create no user.
            "deployer_release_run_user": "nobody",
            "deployer_release_run_group": "nogroup",
            "deployer_release_create_user": False,
            "deployer_release_state_dir": "/opt/hello/state",
            "deployer_smoke_expected_version": version,
            "deployer_smoke_delegate_to": "localhost",
            "deployer_lb_haproxy_socket": str(lab.haproxy_socket),
            "deployer_lb_haproxy_backend": "hello",
        },
        "tasks": [
            {"name": "Take the node out of HAProxy",
             "ansible.builtin.include_role": {"name": "deployer.vm.deployer_lb_haproxy",
                                              "tasks_from": "drain"}},
            {"name": "Stage and activate the release",
             "ansible.builtin.include_role": {"name": "deployer.vm.deployer_release"}},
            {"name": "Smoke-check the node",
             "ansible.builtin.include_role": {"name": "deployer.vm.deployer_smoke"}},
            {"name": "Put the node back into HAProxy",
             "ansible.builtin.include_role": {"name": "deployer.vm.deployer_lb_haproxy",
                                              "tasks_from": "enable"}},
        ],
    }


def test_the_wheel_and_the_collection_work_installed_outside_the_checkout(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if os.geteuid() != 0 or shutil.which("haproxy") is None:
        pytest.skip("the lab needs root and haproxy")
    work = tmp_path_factory.mktemp("install")
    dist, venv, collections = work / "dist", work / "venv", work / "collections"

    # Build: the sdist, the wheel from the sdist (so the sdist must carry the content), the collection.
    _run([sys.executable, "-m", "build", "--outdir", dist, ROOT], cwd=work)
    wheel = dist / f"deployer-{VERSION}-py3-none-any.whl"
    assert wheel.is_file() and (dist / f"deployer-{VERSION}.tar.gz").is_file()
    _run([sys.executable, "-m", "deployer._collection", "--out", dist], cwd=work)
    tarball = dist / f"deployer-vm-{VERSION}.tar.gz"
    assert tarball.is_file()

    # Install each into a fresh place, from a working directory outside the checkout.
    _run([sys.executable, "-m", "venv", venv], cwd=work)
    env = _clean_env(venv)
    _run([venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", wheel], cwd=work,
         env=env, timeout=600)
    where = _run([venv / "bin" / "python", "-c",
                  "import deployer, deployer._resources as r;"
                  " print(deployer.__file__); print(r.content_dir()); print(r.examples_dir())"],
                 cwd=work, env=env).stdout.split()
    site = venv / "lib"
    assert all(Path(p).is_relative_to(site) for p in where), where
    assert not any(Path(p).is_relative_to(ROOT) for p in where), where
    assert (Path(where[2]) / "build.py").is_file()
    assert VERSION in _run([venv / "bin" / "deployer", "--version"], cwd=work, env=env).stdout
    assert (venv / "bin" / "deployer-demo").is_file()
    _run([venv / "bin" / "ansible-galaxy", "collection", "install", "-p", collections, tarball],
         cwd=work, env=env)

    # A lab built by the installed wheel (its sample service comes from the wheel's content),
    # then a deployment from it. Its own directory and network: it picks its ports.
    lab = Lab(work / "lab")
    try:
        _run([venv / "bin" / "deployer", "lab", "up", "--dir", lab.dir, "--nodes", "2",
              "--net", next_lab_spec().net, "--seed", "1.0.0"], cwd=work, env=env)
        _deploy_and_roll_with_the_collection(lab, work, venv, env, collections)
    finally:
        _run([venv / "bin" / "deployer", "lab", "down", "--dir", lab.dir], cwd=work, env=env)


def _deploy_and_roll_with_the_collection(
    lab: Lab, work: Path, venv: Path, env: dict[str, str], collections: Path
) -> None:
    config = ["--config", str(lab.config_path), "--env", "lab"]
    _run([venv / "bin" / "deployer", "deploy", *config, "--version", "1.1.0"], cwd=work, env=env)
    status = json.loads(_run([venv / "bin" / "deployer", "status", *config, "--json"],
                             cwd=work, env=env).stdout)
    assert {n["version"] for n in status["nodes"]} == {"1.1.0"}
    assert all(n["healthy"] for n in status["nodes"])
    history = json.loads(_run([venv / "bin" / "deployer", "history", *config, "--json"],
                              cwd=work, env=env).stdout)
    assert (history[0]["version"], history[0]["status"]) == ("1.1.0", "succeeded")
    assert history[0]["deployer_version"] == VERSION

    # The collection's roles by their full names, in a plain playbook, on one node: back to 1.0.0.
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    node = sorted(next(iter(inventory["all"]["children"].values()))["hosts"])[0]
    playbook = work / "roll.yml"
    playbook.write_text(yaml.safe_dump([_collection_playbook(lab, node, "1.0.0")], sort_keys=False))
    play_env = _clean_env(venv, ANSIBLE_COLLECTIONS_PATH=str(collections),
                          ANSIBLE_ROLES_PATH=str(work / "no-roles"))
    out = _run([venv / "bin" / "ansible-playbook", "-i", lab.inventory_path, playbook],
               cwd=work, env=play_env).stdout
    assert "failed=0" in out and "unreachable=0" in out, out
    status = json.loads(_run([venv / "bin" / "deployer", "status", *config, "--json"],
                             cwd=work, env=env).stdout)
    nodes = {n["node"]: n for n in status["nodes"]}
    assert nodes[node]["version"] == "1.0.0" and nodes[node]["healthy"]
    assert str(nodes[node]["load_balancer"]).startswith("UP")
    assert {n["version"] for name, n in nodes.items() if name != node} == {"1.1.0"}
