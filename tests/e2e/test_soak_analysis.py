"""Soak analysis for real: HAProxy's counters under real traffic through the lab's HAProxy, a
real Prometheus (Debian's) scraping an exporter the test controls, and further smoke tests
against the lab. Asserts outcomes, never timings; how fast a breach was caught is printed
(run with -s to see it)."""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deployer.adapters.haproxy import HAProxyRuntime
from deployer.analysis import (
    AnalysisError,
    CommandCheck,
    ComparisonRule,
    HAProxySource,
    HttpCheck,
    Judge,
    Policy,
    PrometheusSource,
    SmokeContext,
    Soak,
    Status,
    ThresholdRule,
)
from deployer.lab import Lab
from deployer.lab._load import LoadGenerator
from deployer.lab._procs import free_port

pytestmark = pytest.mark.e2e

PROMETHEUS = Path("/usr/bin/prometheus")


def _switch_to_errors(lab: Lab, node: str, ssh: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    """Put the lab's ``1.3.0-errors`` (500 on every request a few seconds after it starts) on
    one node, the way the release role does: unpack, switch ``current``, restart."""
    version = "1.3.0-errors"
    tarball = lab.store_dir / "hello" / version / f"hello-{version}.tar.gz"
    opt = lab.dir / "nodes" / node / "opt"
    with tempfile.TemporaryDirectory(dir=lab.dir) as tmp:
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        release = next(p.parent.parent for p in Path(tmp).rglob("bin/run"))
        shutil.copytree(release, opt / "releases" / version, symlinks=True)
    # Readable by the application's unprivileged user, as the release role leaves it.
    os.chmod(opt / "releases" / version, 0o755)
    link = opt / ".current.tmp"
    link.symlink_to(f"/opt/hello/releases/{version}")
    os.replace(link, opt / "current")
    done = ssh(lab, node, "supervisorctl restart hello")
    assert done.returncode == 0, done.stdout + done.stderr


def _haproxy_soak(lab: Lab, duration: float, *rules: ThresholdRule | ComparisonRule) -> Soak:
    source = HAProxySource(HAProxyRuntime(str(lab.haproxy_socket)), "hello",
                           groups={"new": ["node2"], "old": ["node1"]})
    # A node being restarted takes no requests for a moment (more on a busy machine): rounds
    # without data there are expected, so only a long run of them fails these soaks.
    judge = Judge([source], list(rules), policy=Policy(failure_limit=2, inconclusive_limit=40))
    return Soak(judge, duration=duration, interval=0.5)


def test_haproxy_counters_catch_a_node_answering_500_and_pass_a_healthy_fleet(
    make_lab: Callable[..., Lab], lab_ssh: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    lab = make_lab(nodes=2, seed="1.0.0")
    all_5xx = ThresholdRule(source="haproxy", indicator="http_5xx_share", max=0.01, window=4,
                            min_samples=10)
    old_5xx = ThresholdRule(source="haproxy", indicator="http_5xx_share", max=0.01, window=4,
                            min_samples=10, group="old")
    compare = ComparisonRule(source="haproxy", indicator="http_5xx_share", max_margin=0.01,
                             window=4, min_samples=10)
    load = LoadGenerator(lab.frontend_url, concurrency=4, max_requests=60_000, max_seconds=60,
                         slow_share=0.0).start()
    try:
        # Healthy fleet: passes, even though the counters are cleared half-way (a reset).
        soak = _haproxy_soak(lab, 3.0, compare, all_5xx).start()
        time.sleep(1.2)
        HAProxyRuntime(str(lab.haproxy_socket)).command("clear counters all")
        healthy = soak.wait(timeout=20)
        assert healthy.passed, healthy.line()
        assert healthy.last[all_5xx.name].status is Status.OK
        assert (healthy.last[all_5xx.name].samples or 0) >= 10

        # node2 ("new") on 1.3.0-errors: 500 to every request after a few seconds.
        _switch_to_errors(lab, "node2", lab_ssh)
        t0 = time.monotonic()
        soak = _haproxy_soak(lab, 40.0, compare, all_5xx, old_5xx).start()
        failed = soak.wait(timeout=60)
        caught_after = time.monotonic() - t0
    finally:
        report = load.stop()
    assert failed.failed, failed.line()
    assert failed.breach is not None and failed.breach.rule == compare.name
    assert failed.breach.group == "new" and (failed.breach.value or 0) > 0.05
    assert failed.last[all_5xx.name].status is Status.BREACH
    assert failed.last[old_5xx.name].status is Status.OK
    print(f"\n{failed.line()}\n  caught {caught_after:.1f} s after the restart onto 1.3.0-errors "
          f"(which fails after its ERRORS_AFTER delay, 5 s by default); load: {report.line()}")


def test_further_smoke_tests_against_the_lab(lab: Lab) -> None:
    script = ("import os, sys, urllib.request;"
              "got = urllib.request.urlopen(os.environ['DEPLOYER_TARGET_URL'] + 'version').read().decode();"
              "print('serving', got.strip(), 'want', os.environ['DEPLOYER_VERSION']);"
              "sys.exit(0 if got.strip() == os.environ['DEPLOYER_VERSION'] else 1)")
    checks = [
        HttpCheck("{target_url}/health", json_field="version", json_equals="1.0.0", interval=0.3),
        CommandCheck([sys.executable, "-c", script], label="version-check", interval=0.3, timeout=10),
    ]

    def soak(version: str) -> Soak:
        judge = Judge([], [], policy=Policy())
        return Soak(judge, duration=2.0, interval=0.5, smoke=checks,
                    context=SmokeContext(target_url=lab.frontend_url, version=version,
                                         environment="lab", node="node1"))

    good = soak("1.0.0").start().wait(timeout=30)
    assert good.passed, good.line()
    assert good.last["version-check"].status is Status.OK
    bad = soak("9.9.9").start().wait(timeout=30)
    assert bad.failed and bad.breach is not None and bad.breach.rule == "version-check"
    assert "serving 1.0.0 want 9.9.9" in bad.breach.detail
    print(f"\n{bad.line()}")


# -- Prometheus -----------------------------------------------------------------------------


@dataclass
class _Exporter:
    """Serves ``test_error_ratio`` with whatever value the test sets."""

    value: float = 0.0


@dataclass
class _Prometheus:
    url: str
    exporter: _Exporter


def _wait(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Prometheus]:
    if not PROMETHEUS.is_file():
        pytest.skip("Debian's prometheus is not installed (scripts/bootstrap.sh installs it)")
    exporter = _Exporter()

    class Metrics(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = f"# TYPE test_error_ratio gauge\ntest_error_ratio {exporter.value}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    work = tmp_path_factory.mktemp("prometheus")
    (work / "prometheus.yml").write_text(f"""global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  evaluation_interval: 1s
scrape_configs:
  - job_name: exporter
    static_configs:
      - targets: ['127.0.0.1:{server.server_address[1]}']
""")
    port = free_port()
    with open(work / "prometheus.log", "wb") as log:
        proc = subprocess.Popen(
            [str(PROMETHEUS), f"--config.file={work / 'prometheus.yml'}",
             f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        source = PrometheusSource(url, {"up": "up"})

        def scraped() -> bool:
            try:
                return source.query('test_error_ratio') is not None
            except AnalysisError:
                return False

        _wait(scraped, 30, f"Prometheus to scrape the exporter (see {work / 'prometheus.log'})")
        yield _Prometheus(url, exporter)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        server.shutdown()
        server.server_close()


def _prom_soak(url: str, query: str, duration: float) -> Soak:
    source = PrometheusSource(url, {"error_ratio": query})
    rule = ThresholdRule(source="prometheus", indicator="error_ratio", max=0.05, min_samples=0)
    return Soak(Judge([source], [rule], policy=Policy(failure_limit=2)), duration=duration, interval=0.5)


def test_a_rule_on_a_real_prometheus_passes_then_fails(prometheus: _Prometheus) -> None:
    prometheus.exporter.value = 0.0
    time.sleep(1.2)  # one scrape of the healthy value
    healthy = _prom_soak(prometheus.url, "max(test_error_ratio)", 2.0).start().wait(timeout=20)
    assert healthy.passed, healthy.line()

    soak = _prom_soak(prometheus.url, "max(test_error_ratio)", 30.0).start()
    t0 = time.monotonic()
    prometheus.exporter.value = 0.4
    failed = soak.wait(timeout=40)
    assert failed.failed and failed.breach is not None, failed.line()
    assert failed.breach.indicator == "error_ratio" and failed.breach.value == pytest.approx(0.4)
    print(f"\n{failed.line()}\n  caught {time.monotonic() - t0:.1f} s after the exporter went bad "
          f"(1 s scrapes, 0.5 s rounds, 2 rounds in a row)")


def test_prometheus_errors_are_clear(prometheus: _Prometheus) -> None:
    with pytest.raises(AnalysisError, match=r"rejected the query 'max\(test_error_ratio\[': .*parse error"):
        _prom_soak(prometheus.url, "max(test_error_ratio[", 5.0).start()
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(AnalysisError, match=rf"cannot reach Prometheus at {nobody}: .*refused"):
        _prom_soak(nobody, "up", 5.0).start()
    # Nothing was left running by the failed starts.
    assert not any(t.name.startswith("soak-") for t in threading.enumerate())


def test_prometheus_metrics_are_served_on_loopback_only(prometheus: _Prometheus) -> None:
    with urllib.request.urlopen(prometheus.url + "/-/ready", timeout=5) as resp:
        assert resp.status == 200
    port = prometheus.url.rsplit(":", 1)[1]
    sockets = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    listening = [line.split()[3] for line in sockets.splitlines() if line.split()[3].endswith(f":{port}")]
    assert listening == [f"127.0.0.1:{port}"]
