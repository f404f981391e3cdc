"""What the README promises about stopping, batches, releases and stores, on a real lab fleet
through the CLI: SIGTERM and Ctrl-C (once, twice) and the fixes printed after an abort (nodes
pulling a file:// store through store.node_url); a canary batch, batches, pauses and the
capacity floor (without pre-staging); releases pulled from S3 through presigned URLs, pruned to
keep_releases, `on_failure: halt` and `rollback --to`. One lab per group of checks. Outcomes
and orders only; the one duration checked is a lower bound on a deliberate pause."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lab_cli import (
    all_serving,
    configured,
    deployer,
    fleet,
    journal,
    last_deployment,
    node_phases,
    read_until,
    set_fault,
    start,
)

from deployer.adapters.journal import NodeEvent
from deployer.artefacts import build_artefact, sign_manifest
from deployer.lab import Lab
from deployer.lab._procs import free_port, port_accepts, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

Ssh = Callable[..., subprocess.CompletedProcess[str]]
VENV_BIN = Path(sys.executable).parent
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def first_at(events: list[NodeEvent], node: str, phase: str) -> float:
    return next(e.at for e in events if e.node == node and e.phase == phase)


# -- stopping: SIGTERM, Ctrl-C twice, and the fixes printed after an abort --------------------


def test_sigterm_stops_after_the_batch_and_ctrl_c_twice_aborts_leaving_fixes_that_work(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=3, seed="1.0.0")
    # The store as a directory on the controller, which nodes reach through store.node_url.
    store = {"url": f"file://{lab.store_dir}", "node_url": lab.store_url}
    config = configured(lab, "deployer-file-store.yml", store=store)

    # SIGTERM (a CI runner or service manager stopping the job) does what one Ctrl-C does: the
    # node in flight is finished, then the run stops with every node in service.
    proc = start(config, "deploy", "--env", "lab", "--version", "1.1.0")
    seen = read_until(proc, "node1", "draining")
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=300)[1]
    assert proc.returncode == 130, seen + rest
    assert "stopping" in rest and "deployer rollback --env lab" in rest
    assert fleet(lab) == {"node1": ("1.1.0", "UP"), "node2": ("1.0.0", "UP"), "node3": ("1.0.0", "UP")}
    status, events = last_deployment(lab)
    assert status == "cancelled" and node_phases(events, "node1")[-1] == "done"
    assert "draining" not in node_phases(events, "node2") + node_phases(events, "node3")
    url = journal(lab).deployments("lab", limit=1)[0].details["url"]
    assert url == f"{lab.store_url}hello/1.1.0/hello-1.1.0.tar.gz"

    # Ctrl-C twice aborts at once: node2 fails its smoke check for a minute (a fault on 1.1.0
    # only), and the abort comes during that check instead of after it. As from a terminal,
    # both signals go to the command's process group.
    set_fault(lab, "node2", "unhealthy 1.1.0")
    slow = configured(lab, "deployer-slow-smoke.yml", store=store, app={"health": {
        "path": "/health", "deadline": 60, "interval": 0.2, "run_from": "controller"}})
    proc = start(slow, "deploy", "--env", "lab", "--version", "1.1.0", start_new_session=True)
    seen = read_until(proc, "node2", "smoke")
    os.killpg(proc.pid, signal.SIGINT)
    seen += read_until(proc, "stopping")
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.communicate(timeout=120)[1]
    out = seen + rest
    assert proc.returncode == 11, out  # stopped, and a node it took out is still out
    assert "aborting now" in out and "Traceback" not in out
    assert "Out of service: node2" in out
    assert "fix: deployer recover --env lab" in out and "fix: deployer rollback --env lab" in out
    status, events = last_deployment(lab)
    assert status == "cancelled"
    assert node_phases(events, "node1")[-1] == "skipped"  # already on 1.1.0
    assert node_phases(events, "node2")[-2:] == ["smoke", "out_of_service"]  # never finished
    assert "draining" not in node_phases(events, "node1") + node_phases(events, "node3")
    assert fleet(lab) == {"node1": ("1.1.0", "UP"), "node2": ("1.1.0", "MAINT"), "node3": ("1.0.0", "UP")}

    # The fixes printed work: recover leaves the unhealthy node2 out and says to roll back; the
    # rollback takes node2 (deployer's, by the journal) back to 1.0.0 and into service.
    r = deployer(config, "recover", "--env", "lab")
    assert r.returncode == 1, r.stderr
    assert "node2" in r.stderr and "left out" in r.stderr and "deployer rollback --env lab" in r.stderr
    r = deployer(config, "rollback", "--env", "lab")
    assert r.returncode == 0, r.stderr
    assert "back to 1.0.0" in r.stderr
    assert fleet(lab) == all_serving(lab, "1.0.0")
    status, events = last_deployment(lab)
    assert status == "succeeded" and node_phases(events, "node2")[-1] == "done"


# -- batches: a canary alone, batches together, pauses between them, the capacity floor --------


def test_the_canary_goes_alone_batches_pause_and_the_capacity_floor_refuses(
    make_lab: Callable[..., Lab],
) -> None:
    lab = make_lab(nodes=4, seed="1.0.0")
    pause = 2.0
    # Without pre-staging, too: each batch stages and checks its own nodes (deploy.yml).
    config = configured(lab, "deployer-batches.yml", strategy={
        "canary": "1", "batch_size": "2", "min_healthy": "2", "pause_between_batches": pause,
        "prestage": False})
    r = deployer(config, "deploy", "--env", "lab", "--version", "1.1.0")
    assert r.returncode == 0, r.stderr
    assert "canary batch 1/3: node1" in r.stderr and "batch 2/3: node2, node3" in r.stderr
    assert "batch 3/3: node4" in r.stderr
    assert r.stderr.count(f"pausing {pause:g}s before the next batch") == 2  # not after the last
    assert fleet(lab) == all_serving(lab, "1.1.0")

    _, events = last_deployment(lab)
    drained = {n: first_at(events, n, "draining") for n in ("node1", "node2", "node3", "node4")}
    done = {n: first_at(events, n, "done") for n in ("node1", "node2", "node3", "node4")}
    # The canary finished before any other node left the load balancer...
    assert done["node1"] < min(drained["node2"], drained["node3"], drained["node4"])
    # ...node2 and node3 were out together (one batch), and node4 only after both were back.
    assert drained["node2"] < done["node3"] and drained["node3"] < done["node2"]
    assert max(done["node2"], done["node3"]) < drained["node4"]
    # The pause is between batches: no node left the load balancer during it.
    assert min(drained["node2"], drained["node3"]) - done["node1"] >= pause
    assert drained["node4"] - max(done["node2"], done["node3"]) >= pause

    # min_healthy counts a node that is down: with node3 failing its health checks, 75% (3 of
    # 4) in service cannot hold while any other node is out. Batches shrink to one node, and
    # the deployment is refused before any node leaves the load balancer: `plan` says so, with
    # the exit code the deployment then has.
    set_fault(lab, "node3", "unhealthy")
    assert wait_until(lambda: fleet(lab)["node3"][1] == "DOWN", timeout=15, interval=0.2)
    floor = configured(lab, "deployer-floor.yml", strategy={
        "canary": "1", "batch_size": "2", "min_healthy": "75%"})
    r = deployer(floor, "plan", "--env", "lab", "--version", "1.0.0")
    assert r.returncode == 9, r.stderr
    assert "capacity floor: 3" in r.stdout
    assert "batch size 2 lowered to 1 to keep 3 node(s) in service" in r.stdout
    assert "deploy will refuse: capacity floor: only 2 node(s) would stay in service during batch 1" \
        in r.stdout and "(exit 9)" in r.stdout
    r = deployer(floor, "deploy", "--env", "lab", "--version", "1.0.0")
    assert r.returncode == 9, r.stderr
    assert "capacity floor: only 2 node(s) would stay in service during batch 1" in r.stderr
    assert "node3 (DOWN" in r.stderr
    status, events = last_deployment(lab)
    assert status == "refused" and "draining" not in {e.phase for e in events}
    assert {n: v for n, (v, _) in fleet(lab).items()} == dict.fromkeys(fleet(lab), "1.1.0")


# -- releases: an S3 store with presigned downloads, keep_releases, halt, rollback --to --------


@pytest.fixture
def s3_endpoint(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """moto's S3 server on 127.0.0.1, where the lab's nodes reach it too; its request log."""
    port = free_port()
    log = tmp_path / "moto.log"
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        assert wait_until(lambda: port_accepts("127.0.0.1", port), timeout=30, interval=0.1)
        yield f"http://127.0.0.1:{port}", log
    finally:
        server.terminate()
        server.wait(timeout=30)


def presigned_downloads(log: Path, bucket: str) -> dict[str, int]:
    """Tarball downloads per version through a presigned URL (its signature in the query; the
    controller's own reads sign their headers instead)."""
    found: dict[str, int] = {}
    pattern = re.compile(rf'"GET /{bucket}/releases/hello/([^/]+)/hello-\1\.tar\.gz\?[^" ]*Signature=')
    for match in pattern.finditer(log.read_text()):
        found[match[1]] = found.get(match[1], 0) + 1
    return found


def releases_on(lab: Lab, lab_ssh: Ssh, node: str) -> tuple[set[str], str, str]:
    """The release directories on a node, and its current and previous releases."""
    r = lab_ssh(lab, node, "ls /opt/hello/releases; echo --; readlink /opt/hello/current /opt/hello/previous")
    assert r.returncode == 0, r.stderr
    dirs, links = r.stdout.split("--\n")
    current, previous = (link.removeprefix("releases/") for link in links.split())
    return set(dirs.split()), current, previous


def built_and_signed(lab: Lab, version: str, work: Path) -> Path:
    """A release of the sample service built and signed with the lab's key, as CI does."""
    src = work / f"src-{version}"
    subprocess.run([sys.executable, str(EXAMPLES / "hello-service" / "build.py"), "--version", version,
                    "--out", str(src)], check=True, capture_output=True)
    built = build_artefact(src, app="hello", version=version, out_dir=work / f"hello-{version}")
    sign_manifest(built.manifest_path, lab.keys_dir / "release.key")
    return built.dir


def test_releases_come_from_s3_presigned_are_pruned_halted_and_rolled_back_to(
    make_lab: Callable[..., Lab], lab_ssh: Ssh, s3_endpoint: tuple[str, Path], tmp_path: Path,
) -> None:
    import boto3

    endpoint, log = s3_endpoint
    aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    bucket = f"releases-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket=bucket)
    store = f"s3://{bucket}/releases"
    lab = make_lab(nodes=3, seed="1.0.0")
    # Published with the CLI: the lab's signed 1.0.0 and 1.1.0, and 1.4.0 and 1.5.0 built here.
    releases = [lab.store_dir / "hello" / "1.0.0", lab.store_dir / "hello" / "1.1.0",
                built_and_signed(lab, "1.4.0", tmp_path), built_and_signed(lab, "1.5.0", tmp_path)]
    r = subprocess.run(
        [sys.executable, "-m", "deployer", "artefact", "publish", *map(str, releases), "--store", store],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **aws},
    )
    assert r.returncode == 0, r.stderr
    config = configured(
        lab, "deployer-s3.yml", store={"url": store},
        app={"keep_releases": 2, "health": {"path": "/health", "deadline": 3, "interval": 0.05,
                                            "run_from": "controller"}},
        strategy={"batch_size": "2", "on_failure": "halt"},
    )

    for version in ("1.1.0", "1.4.0"):
        r = deployer(config, "deploy", "--env", "lab", "--version", version, env=aws)
        assert r.returncode == 0, r.stderr
    assert fleet(lab) == all_serving(lab, "1.4.0")
    # Each node pulled each release itself, through a presigned URL; the journal keeps the URL
    # without its signature.
    assert presigned_downloads(log, bucket) == {"1.1.0": 3, "1.4.0": 3}
    url = journal(lab).deployments("lab", limit=1)[0].details["url"]
    assert url == f"{endpoint}/{bucket}/releases/hello/1.4.0/hello-1.4.0.tar.gz?<signed query not recorded>"

    # on_failure: halt. node3 fails 1.5.0 (the second batch): it is reverted, and node1 and
    # node2, updated in the first batch, are left on 1.5.0; every node is in service.
    set_fault(lab, "node3", "unhealthy 1.5.0")
    r = deployer(config, "deploy", "--env", "lab", "--version", "1.5.0", env=aws)
    assert r.returncode == 10, r.stderr
    assert "node3 was reverted to 1.4.0" in r.stderr and "rolled back" not in r.stderr
    assert fleet(lab) == {"node1": ("1.5.0", "UP"), "node2": ("1.5.0", "UP"), "node3": ("1.4.0", "UP")}
    status, events = last_deployment(lab)
    assert status == "failed"
    assert node_phases(events, "node3")[-2:] == ["reverting", "reverted"]
    assert "reverting" not in node_phases(events, "node1") + node_phases(events, "node2")
    # keep_releases: 2. The switch to 1.5.0 removed 1.0.0 everywhere and kept the newest two
    # and what current and previous named before it, so node3 went back with both links as
    # they were.
    for node in ("node1", "node2"):
        assert releases_on(lab, lab_ssh, node) == ({"1.1.0", "1.4.0", "1.5.0"}, "1.5.0", "1.4.0")
    assert releases_on(lab, lab_ssh, "node3") == ({"1.1.0", "1.4.0", "1.5.0"}, "1.4.0", "1.1.0")

    # rollback --to a release no node has any more (the default would be 1.1.0): pulled again
    # from the store, and the next switch prunes further (1.1.0 on node1 and node2).
    r = deployer(config, "rollback", "--env", "lab", "--to", "1.0.0", env=aws)
    assert r.returncode == 0, r.stderr
    assert "back to 1.0.0" in r.stderr
    assert fleet(lab) == all_serving(lab, "1.0.0")
    assert presigned_downloads(log, bucket)["1.0.0"] == 3
    for node in ("node1", "node2"):
        assert releases_on(lab, lab_ssh, node) == ({"1.0.0", "1.4.0", "1.5.0"}, "1.0.0", "1.5.0")
    # node3 keeps one more: 1.5.0, staged but never switched to, is among the newest two, and
    # 1.1.0 is what previous named before the switch.
    assert releases_on(lab, lab_ssh, "node3") == ({"1.0.0", "1.1.0", "1.4.0", "1.5.0"}, "1.0.0", "1.4.0")
    status, _ = last_deployment(lab)
    assert (status, journal(lab).deployments("lab", limit=1)[0].kind) == ("succeeded", "rollback")
