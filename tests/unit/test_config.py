"""The config file: valid examples load, and every bad input names the file, field and value."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MINIMAL_CONFIG, write_config

from deployer import ConfigError, load_config
from deployer.engine.plan import make_plan

REPO = Path(__file__).resolve().parents[2]

GOOD = MINIMAL_CONFIG
write = write_config


def test_a_minimal_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    env = cfg.environment("lab")
    assert env.app.release_root == "/opt/hello"
    assert env.strategy.batch_size == "1" and env.strategy.on_failure == "rollback"
    assert env.inventory == tmp_path / "hosts.yml"
    assert cfg.state_dir == tmp_path / "state"


def test_the_commented_example_is_valid(tmp_path: Path) -> None:
    example = REPO / "examples" / "deployer.yml"
    (tmp_path / "cfg").mkdir()
    (tmp_path / "inventories").mkdir()
    shutil.copy(REPO / "inventories" / "production.example.yml", tmp_path / "inventories")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "release.pub").write_text("x\n")
    (tmp_path / "keys" / "preprod-promotion.pub").write_text("x\n")
    shutil.copy(example, tmp_path / "cfg" / "deployer.yml")
    cfg = load_config(tmp_path / "cfg" / "deployer.yml")
    env = cfg.environment("prod")
    assert env.app.supervisor == "systemd"
    from deployer.adapters.inventory import load_nodes

    assert [n.name for n in load_nodes(env.inventory, env.group)] == ["web1", "web2", "web3"]


@pytest.mark.parametrize(
    ("patch", "field", "value"),
    [
        (("batch_size: \"1\"", "batch_size: \"0%\""), "strategy.batch_size", "0%"),
        (("batch_size: \"1\"", "batch_size: 0"), "strategy.batch_size", "at least 1"),
        (("{name: hello}", "{name: Hello World}"), "app.name", "Hello World"),
        (("{name: hello}", "{name: hello, port: 70000}"), "app.port", "70000"),
        (("{name: hello}", "{name: hello, entry_point: ../x}"), "app.entry_point", "../x"),
        (("{name: hello}", "{name: hello, health: {run_from: lb}}"), "app.health.run_from", "lb"),
        (('"http://127.0.0.1:8081/"', '"ftp://x/"'), "store.url", "ftp://x/"),
        (("backend: hello}", "backend: hello, kind: nginx}"), "load_balancer.kind", "nginx"),
        (("backend: hello}", "backend: hello, colour: red}"), "load_balancer.colour", "red"),
        # Written into HAProxy runtime-API commands: ';' would add a command.
        (("backend: hello}", "backend: 'hello;disable'}"), "load_balancer.backend", "hello;disable"),
        (("backend: hello}", "backend: \"a\\nb\"}"), "load_balancer.backend", "a\\nb"),
    ],
)
def test_bad_values_name_the_file_field_and_value(
    tmp_path: Path, patch: tuple[str, str], field: str, value: str
) -> None:
    text = GOOD.replace("    load_balancer:", "    strategy: {batch_size: \"1\"}\n    load_balancer:")
    assert patch[0] in text
    cfg = write(tmp_path, text.replace(patch[0], patch[1]))
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert str(cfg) in msg and f"environments.lab.{field}" in msg and value in msg


def test_missing_files_and_broken_yaml_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yml")
    cfg = write(tmp_path, GOOD.replace("hosts.yml", "missing.yml"))
    with pytest.raises(ConfigError, match=r"environments\.lab\.inventory.*missing\.yml"):
        load_config(cfg)
    cfg.write_text("environments: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(cfg)


def test_unknown_environment_lists_the_known_ones(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="known: lab"):
        cfg.environment("prod")


def test_cli_reports_config_errors_without_a_traceback(tmp_path: Path) -> None:
    cfg = write(tmp_path, GOOD.replace("{name: hello}", "{name: hello, port: nope}"))
    r = subprocess.run(
        [sys.executable, "-m", "deployer", "status", "--env", "lab", "--config", str(cfg)],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, check=False,
    )
    assert r.returncode == 2
    assert "environments.lab.app.port" in r.stderr and "Traceback" not in r.stderr


def test_cli_rejects_a_bad_version_before_reading_anything(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "deployer", "deploy", "--env", "lab", "--version", "1.0;rm -rf /",
         "--config", str(tmp_path / "absent.yml")],
        capture_output=True, text=True, check=False,
    )
    assert r.returncode == 2 and "not a valid version" in r.stderr and "Traceback" not in r.stderr


def test_capacity_floor_that_cannot_hold_is_refused(tmp_path: Path) -> None:
    env = load_config(write(tmp_path, GOOD)).environment("lab")
    strategy = env.strategy.model_copy(update={"min_healthy": "3"})
    with pytest.raises(ConfigError, match="capacity floor"):
        make_plan(["a", "b", "c"], ["a", "b", "c"], strategy)
    strategy = env.strategy.model_copy(update={"batch_size": "50%", "min_healthy": "75%"})
    plan = make_plan(["a", "b", "c", "d"], ["a", "b", "c", "d"], strategy)
    assert [len(b.nodes) for b in plan.batches] == [1, 1, 1, 1]
    assert plan.notes == ("batch size 2 lowered to 1 to keep 3 node(s) in service",)


@pytest.mark.parametrize("canary", ["0", 0, None])
def test_a_canary_of_0_like_none_means_no_canary_batch(tmp_path: Path, canary: object) -> None:
    text = GOOD + f"    strategy: {{batch_size: \"2\", canary: {json.dumps(canary)}, min_healthy: \"0\"}}\n"
    strategy = load_config(write(tmp_path, text)).environment("lab").strategy
    plan = make_plan(["a", "b", "c", "d"], ["a", "b", "c", "d"], strategy)
    assert [(b.nodes, b.canary) for b in plan.batches] == [(("a", "b"), False), (("c", "d"), False)]
    # A canary of 1 (or any share above 0) is a first batch of its own.
    one = make_plan(["a", "b", "c", "d"], ["a", "b", "c", "d"], strategy.model_copy(update={"canary": "1"}))
    assert [(b.nodes, b.canary) for b in one.batches] == [
        (("a",), True), (("b", "c"), False), (("d",), False)]
    few = make_plan(["a", "b", "c", "d"], ["a", "b", "c", "d"], strategy.model_copy(update={"canary": "1%"}))
    assert few.batches[0] == one.batches[0]


def test_an_analysis_section_is_validated_with_the_rest(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, GOOD)).environment("lab").analysis is None
    with_analysis = GOOD + """\
    analysis:
      when: after_each_batch
      rules: [{indicator: http_5xx_share, max: 2%}]
      smoke: {http: [{url: "{target_url}/health"}]}
"""
    analysis = load_config(write(tmp_path, with_analysis)).environment("lab").analysis
    assert analysis is not None and analysis.when == "after_each_batch"
    assert analysis.rules[0].max == pytest.approx(0.02) and analysis.interval == 2.0
    bad = GOOD + """\
    analysis:
      rules: [{indicator: http_5xx_share, max: 150%}]
"""
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, bad))
    assert caught.value.field == "environments.lab.analysis.rules.0"
    assert "max: threshold out of range" in str(caught.value)


def test_a_share_written_as_a_bare_number_is_refused_naming_file_field_and_value(
    tmp_path: Path,
) -> None:
    bare = GOOD + """\
    analysis:
      rules: [{indicator: http_5xx_share, max: 1}]
"""
    path = write(tmp_path, bare)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.exit_code == 2
    assert (caught.value.file, caught.value.field, caught.value.value) == (
        str(path), "environments.lab.analysis.rules.0.max", 1)
    assert "http_5xx_share is a share: write it as a percentage, e.g. 1%" in str(caught.value)


# -- runner: ---------------------------------------------------------------------------------


def test_the_runner_section_defaults_and_values(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.runner.keep_runs == 20 and cfg.runner.secret_vars == []
    cfg = load_config(write(tmp_path, GOOD + "runner: {keep_runs: 0, secret_vars: [hello_dsn, HELLO_URL]}\n"))
    assert cfg.runner.keep_runs == 0 and cfg.runner.secret_vars == ["hello_dsn", "HELLO_URL"]


@pytest.mark.parametrize(
    ("runner", "field", "words"),
    [
        ("runner: {keep_runs: -1}", "runner.keep_runs", "greater than or equal to 0"),
        ("runner: {keep_runs: 'all'}", "runner.keep_runs", "valid integer"),
        ("runner: {keep_runs: true}", "runner.keep_runs", "valid integer"),
        ("runner: {keep_runs: 2.5}", "runner.keep_runs", "valid integer"),
        ("runner: {secret_vars: [hello-dsn]}", "runner.secret_vars", "'hello-dsn' is not a variable name"),
        ("runner: {secret_vars: hello_dsn}", "runner.secret_vars", "valid list"),
        ("runner: {keep: 3}", "runner.keep", "Extra inputs"),
    ],
)
def test_a_bad_runner_section_names_the_field(tmp_path: Path, runner: str, field: str, words: str) -> None:
    cfg = write(tmp_path, GOOD + runner + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    msg = str(err.value)
    assert str(cfg) in msg and field in msg and words in msg, msg
