"""A fleet set up by the README with one mistake in it, through the real CLI on the lab: each
command says what is wrong, in SSH's or the store's own words, with the setting to fix, and
changes nothing. Each test uses a copy of the lab's config with a state directory of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from deployer.lab import Lab
from deployer.lab._procs import free_port

pytestmark = pytest.mark.e2e


def deployer(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A command with stdout and stderr on pipes and no COLUMNS, as in a CI job."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "DEPLOYER_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "deployer", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )


def copy_of_config(lab: Lab, where: Path, *, inventory: dict[str, Any] | None = None,
                   **store: str) -> Path:
    """The lab's config in ``where`` (absolute paths, its own state directory), with the store
    fields given and another inventory if given."""
    config = yaml.safe_load(lab.config_path.read_text())
    env = config["environments"]["lab"]
    if inventory is not None:
        (where / "inventory.yml").write_text(yaml.safe_dump(inventory))
        env["inventory"] = str(where / "inventory.yml")
    else:
        env["inventory"] = str(lab.inventory_path)
    env["trusted_keys"] = [str((lab.config_path.parent / k).resolve()) for k in env["trusted_keys"]]
    env["store"].update(store)
    config["state_dir"] = str(where / "state")
    path = where / "deployer.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def versions(lab: Lab) -> dict[str, str | None]:
    return {n.name: n.app_version for n in lab.status().nodes}


def test_a_refused_ssh_key_is_reported_in_sshs_words_with_the_inventorys_key_setting(
    lab: Lab, tmp_path: Path
) -> None:
    # The inventory names a key the nodes do not know (a fresh one).
    wrong_key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)],
                   check=True, timeout=30)
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    inventory["all"]["children"]["hello_nodes"]["vars"]["ansible_ssh_private_key_file"] = str(wrong_key)
    cfg = copy_of_config(lab, tmp_path, inventory=inventory)
    before = versions(lab)
    node1 = next(n for n in lab.status().nodes if n.name == "node1")
    denied = f"root@{node1.address}: Permission denied (publickey)."

    # status: SSH's own reason in the table and the error, the key setting in the hint.
    r = deployer(cfg, "status", "--env", "lab")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    [row] = [line for line in r.stdout.splitlines() if "node1" in line]
    assert f"unreachable: {denied}" in row, r.stdout
    assert "Make sure this" not in r.stdout + r.stderr
    assert f"deployer: error: could not read node1, node2, node3: node1: {denied};" in r.stderr
    [hint] = [line for line in r.stderr.splitlines() if line.startswith("deployer: hint: ")]
    assert hint.startswith("deployer: hint: node1: the node refused the SSH key (Permission "
                           "denied (publickey)): ")
    assert f"ansible_ssh_private_key_file ({wrong_key})" in hint, hint

    # deploy: refused before anything changed, with the same reason and fix.
    r = deployer(cfg, "deploy", "--env", "lab", "--version", "1.1.0")
    assert r.returncode == 9, r.stderr  # refused
    assert "Traceback" not in r.stderr and "nothing was changed" in r.stderr
    assert denied in r.stderr
    [hint] = [line for line in r.stderr.splitlines() if line.startswith("deployer: hint: ")]
    assert f"the node refused the SSH key (Permission denied (publickey)): check the inventory's " \
           f"ansible_ssh_private_key_file ({wrong_key})" in hint, hint
    assert versions(lab) == before


def test_a_store_url_the_nodes_cannot_reach_is_named_with_the_setting_to_check(
    lab: Lab, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there
    cfg = copy_of_config(lab, tmp_path, node_url=f"http://127.0.0.1:{port}")
    before = versions(lab)
    url = f"http://127.0.0.1:{port}/hello/1.1.0/hello-1.1.0.tar.gz"

    r = deployer(cfg, "deploy", "--env", "lab", "--version", "1.1.0")
    assert r.returncode == 9, r.stderr  # refused: nothing in service changed
    assert "Traceback" not in r.stderr and "********" not in r.stderr
    [error] = [line for line in r.stderr.splitlines() if line.startswith("deployer: error: ")]
    assert f"cannot download {url}: " in error and "Connection refused" in error, error
    [hint] = [line for line in r.stderr.splitlines() if line.startswith("deployer: hint: ")]
    assert f"store.node_url (http://127.0.0.1:{port})" in hint, hint
    assert versions(lab) == before

    # In a pipe, history shows the whole reason (CI logs keep it), and so does each event.
    r = deployer(cfg, "history", "--env", "lab")
    assert r.returncode == 0, r.stderr
    [row] = [line for line in r.stdout.splitlines() if " refused " in line]
    assert f"cannot download {url}: [Errno 111] Connection refused" in row, r.stdout
    assert row.rstrip(" │").endswith("nothing was changed"), row
    r = deployer(cfg, "history", "--env", "lab", "--deployment", "1")
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if "skipped" in line]
    assert len(rows) == 3 and all(f"{url}: [Errno 111] Connection refused" in x for x in rows), r.stdout


def test_a_store_that_does_not_exist_or_lacks_the_version_says_which(
    lab: Lab, tmp_path: Path
) -> None:
    missing = tmp_path / "releases"  # a store directory nobody created
    cfg = copy_of_config(lab, tmp_path, url=missing.as_uri())
    r = deployer(cfg, "deploy", "--env", "lab", "--version", "1.1.0")
    assert r.returncode == 4, r.stderr
    assert (f"deployer: error: hello 1.1.0 cannot be fetched: the store directory {missing} does "
            "not exist") in r.stderr, r.stderr

    # The lab's own store, and a version it does not hold: the versions it does hold.
    cfg = copy_of_config(lab, tmp_path, url=lab.store_dir.as_uri())
    r = deployer(cfg, "deploy", "--env", "lab", "--version", "1.1.1")
    assert r.returncode == 4, r.stderr
    assert (f"deployer: error: hello 1.1.1 is not in store {lab.store_dir.as_uri()}; it holds "
            "hello 1.0.0, 1.1.0, 1.2.0-badhealth, 1.3.0-errors") in r.stderr, r.stderr
    r = deployer(cfg, "history", "--env", "lab", "--json")
    # Refused before it started: on the record all the same, as refused.
    assert r.returncode == 0, r.stderr
    assert [(h["version"], h["status"]) for h in json.loads(r.stdout)] == [
        ("1.1.1", "refused"), ("1.1.0", "refused")], r.stdout
