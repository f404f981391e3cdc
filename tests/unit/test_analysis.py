"""Soak analysis without a lab: rules, the judge and its policy, verdicts, the soak's threads
(fake source, fake clock), further smoke tests (real commands, a real loopback HTTP server),
HAProxy counters from recorded ``show stat`` answers, and the ``analysis:`` config."""

from __future__ import annotations

import http.server
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer import ConfigError
from deployer.analysis import (
    CommandCheck,
    ComparisonRule,
    HAProxySource,
    HttpCheck,
    Judge,
    Measurement,
    Outcome,
    Policy,
    SmokeContext,
    Soak,
    Status,
    ThresholdRule,
    build_soak,
    parse_analysis_config,
    parse_show_stat,
)
from deployer.testing import FakeClock, FakeSource

# -- rules ----------------------------------------------------------------------------------


def _judge(source: FakeSource, *rules: ThresholdRule | ComparisonRule, **policy: object) -> Judge:
    judge = Judge([source], list(rules), policy=Policy(**policy), clock=FakeClock())  # type: ignore[arg-type]
    judge.start()
    return judge


def test_threshold_rule_ok_breach_and_too_few_samples() -> None:
    rule = ThresholdRule(source="fake", indicator="http_5xx_share", max=0.01, min_samples=20)
    for m, status in [
        (Measurement(0.005, samples=100, window=30), Status.OK),
        (Measurement(0.02, samples=100, window=30), Status.BREACH),
        (Measurement(0.5, samples=5, window=30), Status.NO_DATA),
        (Measurement(None), Status.NO_DATA),
    ]:
        result = rule.evaluate({"fake": FakeSource({"http_5xx_share": m})})
        assert result.status is status, m
    low = ThresholdRule(source="fake", indicator="requests", min=10, min_samples=0)
    assert low.evaluate({"fake": FakeSource({"requests": Measurement(3.0)})}).status is Status.BREACH


def test_comparison_rule_against_the_baseline() -> None:
    def by_group(new: float | None, old: float | None, n: int = 100) -> FakeSource:
        return FakeSource({"http_5xx_share": lambda t, g, w: Measurement(new if g == "new" else old,
                                                                         samples=n, window=w)})

    rule = ComparisonRule(source="fake", indicator="http_5xx_share", max_margin=0.01, max_ratio=2)
    assert rule.evaluate({"fake": by_group(0.05, 0.04)}).status is Status.OK  # within 2x
    assert rule.evaluate({"fake": by_group(0.015, 0.0)}).status is Status.BREACH  # > 0 + 1 point
    hit = rule.evaluate({"fake": by_group(0.30, 0.01)})
    assert hit.status is Status.BREACH and hit.threshold == pytest.approx(0.02) and hit.group == "new"
    assert rule.evaluate({"fake": by_group(0.30, None)}).status is Status.NO_DATA  # no baseline
    assert rule.evaluate({"fake": by_group(0.30, 0.0, n=3)}).status is Status.NO_DATA
    with pytest.raises(ValueError):
        ComparisonRule(source="fake", indicator="x", max_margin=None, max_ratio=None)


# -- the judge ------------------------------------------------------------------------------


def _rising(after: float) -> FakeSource:
    """5xx share 0 until ``after`` seconds into the soak, 50% after."""
    return FakeSource({"http_5xx_share": lambda t, g, w: Measurement(
        0.5 if t >= after else 0.0, samples=100, window=w)})


def test_the_judge_fails_after_the_consecutive_failure_limit() -> None:
    source = _rising(after=0)
    judge = _judge(source, ThresholdRule(source="fake", indicator="http_5xx_share", max=0.01),
                   failure_limit=3)
    clock = judge.clock
    assert isinstance(clock, FakeClock)
    for _ in range(2):
        clock.advance(2)
        judge.evaluate()
        assert not judge.breached()
    clock.advance(2)
    judge.evaluate()
    verdict = judge.verdict()
    assert verdict.failed and verdict.breach is not None
    assert verdict.breach.value == 0.5 and verdict.breach.threshold == 0.01
    assert verdict.breach.breaches == 3


def test_breaches_that_are_not_consecutive_count_against_the_total_limit() -> None:
    flapping = FakeSource({"x_share": lambda t, g, w: Measurement(
        0.5 if int(t) % 4 == 0 else 0.0, samples=100, window=w)})
    judge = _judge(flapping, ThresholdRule(source="fake", indicator="x_share", max=0.1),
                   failure_limit=2, total_failure_limit=3)
    assert isinstance(judge.clock, FakeClock)
    rounds = 0
    while not judge.breached() and rounds < 20:
        judge.clock.advance(2)
        judge.evaluate()
        rounds += 1
    assert judge.breached() and rounds == 6  # breaches at t=4, 8, 12; never two in a row
    assert "3 breaching rounds" in judge.verdict().line()


@pytest.mark.parametrize(("no_data", "rounds", "expected"), [
    ("pass", 10, Outcome.PASSED),
    ("fail", 2, Outcome.FAILED),
    ("inconclusive", 3, Outcome.INCONCLUSIVE),   # below the limit: ends inconclusive
    ("inconclusive", 4, Outcome.FAILED),         # 4 rounds in a row without data: fails
])
def test_no_data_maps_to_the_configured_outcome(no_data: str, rounds: int, expected: Outcome) -> None:
    judge = _judge(FakeSource({"x_share": Measurement(None, detail="no requests")}),
                   ThresholdRule(source="fake", indicator="x_share", max=0.1),
                   no_data=no_data, failure_limit=2, inconclusive_limit=4)
    for _ in range(rounds):
        judge.evaluate()
    assert judge.verdict(final=True).outcome is expected


def test_an_unreadable_source_fails_the_start_and_is_no_data_later() -> None:
    from deployer import DeployerError
    from deployer._errors import AnalysisError

    broken = FakeSource({"x": Measurement(1.0)}, fail_collect=AnalysisError("cannot reach it"))
    judge = Judge([broken], [ThresholdRule(source="fake", indicator="x", max=5)], clock=FakeClock())
    with pytest.raises(DeployerError, match="cannot reach it"):
        judge.start()
    results = judge.evaluate()
    assert results[0].status is Status.NO_DATA and "cannot reach it" in results[0].detail


def test_the_verdict_names_indicator_value_threshold_window_and_time() -> None:
    judge = _judge(_rising(after=0), ThresholdRule(source="fake", indicator="http_5xx_share",
                                                   max=0.01, window=30, group="new"), failure_limit=1)
    judge.evaluate()
    verdict = judge.verdict(final=True)
    line = verdict.line()
    assert line.startswith("analysis failed: http_5xx_share of the new servers 50% > 1% over the last 30 s")
    assert "(100 requests), detected at 2023-11-14T22:13:20Z" in line
    data = json.loads(json.dumps(verdict.to_dict()))
    assert data["outcome"] == "failed"
    expected = {"indicator": "http_5xx_share", "value": 0.5, "threshold": 0.01, "window": 30,
                "detected_at": "2023-11-14T22:13:20Z", "group": "new", "samples": 100}
    assert {k: data["breach"][k] for k in expected} == expected


# -- the soak -------------------------------------------------------------------------------


def _soak(source: FakeSource, *, duration: float = 60, **kw: object) -> Soak:
    clock = FakeClock()
    judge = Judge([source], [ThresholdRule(source="fake", indicator="http_5xx_share", max=0.01)],
                  policy=Policy(failure_limit=2), clock=clock)
    return Soak(judge, duration=duration, interval=2, clock=clock, **kw)  # type: ignore[arg-type]


def test_a_healthy_soak_passes_after_its_duration() -> None:
    source = _rising(after=10_000)
    verdict = _soak(source).start().wait(timeout=10)
    assert verdict.passed, verdict.line()
    # A round every 2 s of a 60 s soak (on the fake clock), each after one more sample.
    assert (verdict.rounds, source.collects) == (30, 31)


def test_a_breach_ends_the_soak_early_and_breached_says_so() -> None:
    soak = _soak(_rising(after=20)).start()
    verdict = soak.wait(timeout=10)
    assert soak.breached() and verdict.failed and not soak.running
    assert verdict.breach is not None
    # detected at the second breaching round: 22 s into the soak
    assert verdict.breach.detected_at == pytest.approx(1_700_000_000.0 + 22)


def test_stop_ends_a_soak_on_the_real_clock_at_once() -> None:
    judge = Judge([_rising(after=10_000)],
                  [ThresholdRule(source="fake", indicator="http_5xx_share", max=0.01)])
    soak = Soak(judge, duration=3600, interval=0.05).start()
    assert not soak.breached()
    deadline = time.monotonic() + 30
    while soak.verdict().rounds < 2:  # it runs on the real clock
        assert time.monotonic() < deadline, "the soak did not evaluate two rounds"
        time.sleep(0.01)
    verdict = soak.stop()
    assert verdict.passed and "stopped" in verdict.reason and not soak.running
    assert verdict.rounds >= 2


def test_a_failing_smoke_command_fails_the_soak_with_its_output() -> None:
    check = CommandCheck([sys.executable, "-c",
                          "import os,sys; print('target', os.environ['DEPLOYER_TARGET_URL']);"
                          "print('version', os.environ['DEPLOYER_VERSION']); sys.exit(3)"],
                         label="cart", interval=5)
    soak = _soak(_rising(after=10_000), smoke=[check],
                 context=SmokeContext(target_url="http://127.0.0.1:9/", version="1.2.3"))
    verdict = soak.start().wait(timeout=20)
    assert verdict.failed and verdict.breach is not None
    assert verdict.breach.rule == "cart" and verdict.breach.value == 3
    assert "version 1.2.3" in verdict.breach.detail and "target http://127.0.0.1:9/" in verdict.breach.detail


def test_a_failing_smoke_commands_output_shows_no_secret_of_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-aws-secret-41c9")
    names = ["AWS_SECRET_ACCESS_KEY", "CART_API_TOKEN", "DEPLOYER_VERSION"]
    check = CommandCheck([sys.executable, "-c",
                          f"import os,sys; print({{n: os.environ[n] for n in {names!r}}}); sys.exit(1)"],
                         extra_env={"CART_API_TOKEN": "planted-token-77ab"})
    result = check.run(SmokeContext(version="1.2.3"), threading.Event())
    assert result.status is Status.BREACH
    assert result.detail == "exit 1\n" + str(
        {"AWS_SECRET_ACCESS_KEY": "<redacted>", "CART_API_TOKEN": "<redacted>", "DEPLOYER_VERSION": "1.2.3"})


def test_a_smoke_command_past_its_timeout_fails_and_stop_kills_it() -> None:
    hung = CommandCheck(["sleep", "30"], timeout=0.3)
    result = hung.run(SmokeContext(), threading.Event())
    assert result.status is Status.BREACH and "timed out" in result.detail
    stop = threading.Event()
    stop.set()
    assert "stopped" in CommandCheck(["sleep", "30"]).run(SmokeContext(), stop).detail
    missing = CommandCheck(["/nonexistent/check"]).run(SmokeContext(), threading.Event())
    assert missing.status is Status.BREACH and "cannot run" in missing.detail


@pytest.fixture
def http_server() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = (200, b'{"version": "1.2.3", "status": "ok"}') if self.path == "/health" \
                else (500, b"boom")
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_http_checks(http_server: str) -> None:
    ctx = SmokeContext(target_url=http_server + "/", version="1.2.3")
    never = threading.Event()
    assert HttpCheck("{target_url}/health", json_field="version",
                     json_equals="{version}").run(ctx, never).status is Status.OK
    assert HttpCheck(f"{http_server}/health", body_contains='"ok"').run(ctx, never).status is Status.OK
    wrong = HttpCheck("{target_url}/health", json_field="version", json_equals="9.9.9").run(ctx, never)
    assert wrong.status is Status.BREACH and "expected '9.9.9'" in wrong.detail
    err = HttpCheck("{target_url}/").run(ctx, never)
    assert err.status is Status.BREACH and err.value == 500 and "boom" in err.detail


def test_a_failing_http_smoke_test_is_named_by_the_url_it_requested(http_server: str) -> None:
    # As in the lab's config: {target_url} in the check, the frontend's URL in the context.
    soak = _soak(_rising(after=10_000), smoke=[HttpCheck("{target_url}/", interval=1)],
                 context=SmokeContext(target_url=http_server + "/", version="1.3.0-errors"))
    verdict = soak.start().wait(timeout=20)
    assert verdict.failed and verdict.breach is not None
    url = f"{http_server}/"
    assert verdict.breach.rule == f"http: {url}"
    assert verdict.line().startswith(f"analysis failed: http: {url} (http_status) 500 != 200")
    recorded = json.dumps(verdict.to_dict())
    assert "{target_url}" not in recorded and f"http: {url} (http_status)" in recorded


# -- HAProxy counters -----------------------------------------------------------------------

_HEADER = ("# pxname,svname,scur,stot,econ,eresp,status,check_status,hrsp_1xx,hrsp_2xx,hrsp_3xx,"
           "hrsp_4xx,hrsp_5xx,hrsp_other,rtime,\n")


def _stat(rows: dict[str, tuple[int, int, str, int]]) -> str:
    """``{server: (2xx, 5xx, status, rtime)}`` as a ``show stat`` answer of backend hello."""
    lines = [_HEADER, "hello,FRONTEND,0,0,,,OPEN,,0,0,0,0,0,0,,\n"]
    for name, (ok, bad, status, rtime) in rows.items():
        lines.append(f"hello,{name},0,{ok + bad},0,0,{status},L7OK,0,{ok},0,0,{bad},0,{rtime},\n")
    lines.append("other,node1,0,999,0,0,UP,L7OK,0,999,0,0,999,0,1,\n")
    return "".join(lines)


class _Recorded:
    """Replays recorded ``show stat`` answers, one per command."""

    def __init__(self, answers: list[str]) -> None:
        self.answers = answers

    def command(self, line: str) -> str:
        assert line == "show stat"
        return self.answers.pop(0)


def test_parse_show_stat_keeps_only_the_backend_servers() -> None:
    servers = parse_show_stat(_stat({"node1": (5, 1, "UP", 3)}), "hello")
    assert list(servers) == ["node1"]
    assert servers["node1"].counters["hrsp_5xx"] == 1 and servers["node1"].rtime_ms == 3


def test_haproxy_windows_groups_and_counter_resets() -> None:
    answers = [
        _stat({"node1": (100, 0, "UP", 2), "node2": (100, 0, "UP", 4)}),
        _stat({"node1": (150, 10, "UP", 2), "node2": (180, 0, "UP", 4)}),
        # HAProxy restarted: node1's counters start again from 0, node2 is DOWN.
        _stat({"node1": (20, 20, "UP", 2), "node2": (190, 0, "DOWN", 4)}),
    ]
    src = HAProxySource(_Recorded(answers), "hello", groups={"new": ["node1"], "old": ["node2"]})
    src.collect(0.0)
    assert src.measure("http_5xx_share", window=30).value is None  # one sample only
    src.collect(5.0)
    src.collect(10.0)
    new = src.measure("http_5xx_share", group="new", window=30)
    # node1: +50 2xx +10 5xx, then reset: +20 2xx +20 5xx -> 30 of 100
    assert new.samples == 100 and new.value == pytest.approx(0.30) and new.window == 10
    old = src.measure("http_5xx_share", group="old", window=30)
    assert old.samples == 90 and old.value == 0
    assert src.measure("http_5xx", window=30).value == 30
    assert src.measure("http_5xx", window=5).value == 20  # the last 5 s only
    assert src.measure("servers_down", window=30).value == 1
    rt = src.measure("response_time_ms", window=30)
    assert rt.value == pytest.approx((100 * 2 + 90 * 4) / 190)
    assert src.measure("requests", group="blue", window=30).value is None  # unknown group
    # Never negative across the reset: node1 went from 160 answers down to 40 (counted as +40).
    assert {w: src.measure("requests", window=w).value for w in (1, 5, 30)} == {
        1: 50, 5: 50, 30: 100 + 90}
    assert {w: src.measure("http_5xx", window=w).value for w in (1, 5, 30)} == {1: 20, 5: 20, 30: 30}


# -- config ---------------------------------------------------------------------------------


def test_config_defaults_work() -> None:
    cfg = parse_analysis_config({})
    assert cfg.when == "after_canary" and cfg.rules[0].indicator == "http_5xx_share"
    assert cfg.rules[0].max == 0.01 and cfg.sources.haproxy is not None


def test_config_accepts_the_full_section_and_builds_a_soak() -> None:
    cfg = parse_analysis_config({
        "when": "after_each_batch", "duration": 30, "interval": 1, "failure_limit": 3,
        "no_data": "pass",
        "sources": {"prometheus": {"url": "http://127.0.0.1:9090/", "queries": {
            "errors": "sum(rate(x[30s]))", "p99": {"query": "max(y)", "samples": "sum(z)"}}}},
        "rules": [{"indicator": "http_5xx_share", "max": "2.5%", "group": "new"},
                  {"source": "prometheus", "indicator": "errors", "max": 0.5}],
        "compare": [{"max_margin": "1%", "max_ratio": 2}],
        "smoke": {"commands": [{"run": "true --flag", "timeout": 5}],
                  "http": [{"url": "{target_url}/health", "json_field": "version",
                            "json_equals": "{version}"}]},
    })
    assert cfg.rules[0].max == pytest.approx(0.025) and cfg.compare[0].max_margin == pytest.approx(0.01)
    assert cfg.sources.prometheus is not None and cfg.sources.prometheus.url == "http://127.0.0.1:9090"
    soak = build_soak(cfg, haproxy=_Recorded([]), backend="hello", new=["node1"], old=[])
    assert soak.skipped == ["haproxy:http_5xx_share new vs old"]  # no baseline yet
    assert len(soak.smoke) == 2 and soak.duration == 30 and soak.judge.policy.failure_limit == 3
    assert soak.haproxy is not None and soak.haproxy.groups["new"] == frozenset({"node1"})


@pytest.mark.parametrize(("data", "field", "message"), [
    ({"rules": [{"indicator": "http_5xx_share", "max": "500%"}]}, "analysis.rules.0.max",
     "threshold out of range"),
    ({"duration": 5, "interval": 10}, "analysis.interval", "longer than the soak"),
    ({"rules": [{"indicator": "http_5xx_share", "max": "10%", "min": "0%"}]}, "analysis.rules.0",
     "exactly one of max or min"),
    ({"rules": [{"source": "promethus", "indicator": "x", "max": 1}]}, "analysis.rules.0.source",
     "unknown source 'promethus' (configured: haproxy)"),
    ({"rules": [{"indicator": "http_500s", "max": 1}]}, "analysis.rules.0.indicator",
     "unknown HAProxy indicator 'http_500s'"),
    ({"sources": {"prometheus": {"url": "http://127.0.0.1:9", "queries": {"a": "up"}}},
      "rules": [{"source": "prometheus", "indicator": "b", "max": 1}]}, "analysis.rules.0.indicator",
     "no Prometheus query named 'b'"),
    ({"sources": {"prometheus": {"url": "127.0.0.1:9090", "queries": {"a": "up"}}}},
     "analysis.sources.prometheus.url", "must be an http:// or https:// URL"),
    ({"interval": 0}, "analysis.interval", "greater than 0"),
    ({"no_data": "ignore"}, "analysis.no_data", "'pass', 'fail' or 'inconclusive'"),
    ({"when": "after_everything"}, "analysis.when", "'after_canary' or 'after_each_batch'"),
    ({"smoke": {"commands": [{"run": ""}]}}, "analysis.smoke.commands.0.run", "must name a command"),
    ({"compare": [{"max_margin": None}]}, "analysis.compare.0", "max_margin, max_ratio or both"),
    ({"compare": [{"indicator": "bogus"}]}, "analysis.compare.0.indicator", "unknown HAProxy indicator"),
    ({"typo": 1}, "analysis.typo", "Extra inputs are not permitted"),
])
def test_config_errors_name_the_field(data: dict[str, object], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_analysis_config(data, file="deployer.yml")
    assert caught.value.field == field, str(caught.value)
    assert message in str(caught.value)
    assert str(caught.value).startswith("deployer.yml: field ")


def test_public_names() -> None:
    import deployer.analysis

    for name in deployer.analysis.__all__:
        assert hasattr(deployer.analysis, name), name
    assert Path(deployer.analysis.__file__).parent.name == "analysis"


# A share (http_5xx_share, any *_share or *_ratio indicator) is a number between 0 and 1 inside,
# written as a percentage: "max: 1" used to mean 100%, a rule that could never fire.
@pytest.mark.parametrize(("data", "field", "value", "meant"), [
    ({"rules": [{"indicator": "http_5xx_share", "max": 1}]}, "analysis.rules.0.max", 1, "100%"),
    ({"rules": [{"indicator": "http_4xx_share", "max": 0.5}]}, "analysis.rules.0.max", 0.5, "50%"),
    ({"rules": [{"indicator": "http_5xx_share", "min": "0.01"}]}, "analysis.rules.0.min", "0.01", "1%"),
    ({"sources": {"prometheus": {"url": "http://127.0.0.1:9", "queries": {"error_ratio": "up"}}},
      "rules": [{"source": "prometheus", "indicator": "error_ratio", "max": 0.05}]},
     "analysis.rules.0.max", 0.05, "5%"),
    ({"compare": [{"indicator": "http_5xx_share", "max_margin": 1}]}, "analysis.compare.0.max_margin",
     1, "100%"),
    ({"compare": [{"max_margin": 2}]}, "analysis.compare.0.max_margin", 2, "200%"),  # the default indicator
])
def test_a_bare_number_for_a_share_is_refused(
    data: dict[str, object], field: str, value: object, meant: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_analysis_config(data, file="deployer.yml")
    assert (caught.value.file, caught.value.field, caught.value.value) == ("deployer.yml", field, value)
    assert "is a share: write it as a percentage, e.g. 1%" in str(caught.value)
    assert f"this one would mean {meant}" in str(caught.value)


def test_shares_as_percentages_and_other_indicators_as_numbers_are_accepted() -> None:
    cfg = parse_analysis_config({
        "sources": {"prometheus": {"url": "http://127.0.0.1:9", "queries": {"errors_per_s": "up"}}},
        "rules": [{"indicator": "http_5xx_share", "max": "0.5%"},
                  {"indicator": "response_time_ms", "max": 500},
                  {"indicator": "http_5xx", "max": 1},
                  {"source": "prometheus", "indicator": "errors_per_s", "max": 0.5}],
        "compare": [{"max_margin": "1%"}, {"indicator": "requests", "max_margin": 10}],
    })
    assert [r.max for r in cfg.rules] == [pytest.approx(0.005), 500, 1, 0.5]
    assert [c.max_margin for c in cfg.compare] == [pytest.approx(0.01), 10]


def test_the_labs_analysis_section_is_valid() -> None:
    import yaml

    from deployer.lab import LabSpec
    from deployer.lab._render import deployer_config

    for legs in (False, True):
        text = deployer_config(
            LabSpec(soak=12, legs=legs).with_ports(defaults=True, pick=lambda n, taken: []),
            inventory_path=Path("inventory.yml"),
            store_url="http://127.0.0.1:8081/", trusted_key=Path("keys/release.pub"),
            haproxy_socket="/run/lab/admin.sock", legs_map_path="/run/lab/legs.map",
        )
        analysis = yaml.safe_load(text)["environments"]["lab"]["analysis"]
        cfg = parse_analysis_config(analysis, file="lab deployer.yml")
        assert cfg.rules[0].indicator == "http_5xx_share" and cfg.rules[0].max == pytest.approx(0.01)


def test_the_commented_analysis_section_of_the_example_is_valid() -> None:
    import yaml

    text = (Path(__file__).resolve().parents[2] / "examples" / "deployer.yml").read_text()
    lines = text.splitlines()
    start = lines.index("    # analysis:")
    block = []
    for line in lines[start + 1:]:
        if not line.startswith("    #   "):
            break
        block.append(line[len("    #   "):])
    cfg = parse_analysis_config(yaml.safe_load("\n".join(block)), file="examples/deployer.yml")
    assert cfg.sources.prometheus is not None and len(cfg.rules) == 3 and cfg.compare


class _GoesAway:
    """A runtime API that answered the preflight and stops answering after ``answers``."""

    def __init__(self, answers: int) -> None:
        self.left = answers

    def command(self, line: str) -> str:
        from deployer._errors import LoadBalancerError

        if self.left <= 0:
            raise LoadBalancerError("HAProxy's runtime API at /run/haproxy.sock is gone")
        self.left -= 1
        return _stat({"node1": (10, 0, "UP", 2)})


@pytest.mark.parametrize(("no_data", "expected"), [("fail", Outcome.FAILED), ("pass", Outcome.PASSED)])
def test_a_source_lost_when_a_soak_starts_mid_deployment_is_judged_not_raised(
    no_data: str, expected: Outcome,
) -> None:
    from deployer.engine.events import EventStream
    from deployer.engine.soaking import Soaks

    cfg = parse_analysis_config({"duration": 0.4, "interval": 0.1, "failure_limit": 1,
                                 "no_data": no_data})
    soaks = Soaks(cfg, runtime=_GoesAway(answers=1), env_name="test")
    soaks.check("hello")  # the preflight still reads it
    verdict = soaks.run(events=EventStream(), scope="after batch 1", version="2.0.0", backend="hello",
                        new=["node1"], old=[])
    assert verdict.outcome is expected
    if expected is Outcome.FAILED:
        assert "runtime API at /run/haproxy.sock is gone" in str(verdict.reason) + str(verdict.breach)
