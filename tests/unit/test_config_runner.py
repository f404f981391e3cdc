"""The runner's sections of an environment (pointer, agent, promotion): their defaults, their
paths taken from the config file's directory, and every bad value named with its field."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import MINIMAL_CONFIG, write_config

from deployer import ConfigError, load_config
from deployer.config import FilePointerConfig, SsmPointerConfig


def _with(tmp_path: Path, sections: str) -> Path:
    return write_config(tmp_path, MINIMAL_CONFIG.rstrip() + "\n" + sections)


def test_a_file_pointer_and_its_status_sit_beside_the_config(tmp_path: Path) -> None:
    cfg = load_config(_with(tmp_path, "    pointer: {kind: file, path: pointer/lab.json}\n"))
    env = cfg.environment("lab")
    assert isinstance(env.pointer, FilePointerConfig)
    assert env.pointer.path == tmp_path / "pointer" / "lab.json"
    assert env.pointer.status_file == tmp_path / "pointer" / "lab.status.json"
    assert env.agent.interval == 30 and env.agent.correct_drift is False
    assert env.promotion is None


def test_an_ssm_pointer_publishes_its_status_beside_the_parameter(tmp_path: Path) -> None:
    cfg = load_config(_with(tmp_path, (
        "    pointer: {kind: ssm, parameter: /deployer/lab/version, region: eu-west-1,\n"
        "              endpoint_url: 'http://127.0.0.1:5000', credentials_file: aws/credentials}\n")))
    pointer = cfg.environment("lab").pointer
    assert isinstance(pointer, SsmPointerConfig)
    assert pointer.status == "/deployer/lab/status"
    assert pointer.credentials_file == tmp_path / "aws" / "credentials"


def test_promotion_keys_are_read_from_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "preprod.pub").write_text("x\n")
    cfg = load_config(_with(tmp_path, (
        "    promotion: {after: preprod, trusted_keys: [preprod.pub], signing_key: lab.key,\n"
        "                store: 'file:///srv/promotions'}\n")))
    promotion = cfg.environment("lab").promotion
    assert promotion is not None and promotion.after == "preprod"
    assert promotion.trusted_keys == [tmp_path / "preprod.pub"]
    assert promotion.signing_key == tmp_path / "lab.key"  # read only when the agent signs


@pytest.mark.parametrize(
    ("sections", "field", "words"),
    [
        ("    pointer: {kind: redis, path: x}\n", "environments.lab.pointer", "kind"),
        ("    pointer: {kind: file}\n", "environments.lab.pointer.path", "required"),
        ("    pointer: {kind: http, url: 'ftp://x/'}\n", "environments.lab.pointer.url", "ftp://x/"),
        ("    pointer: {kind: ssm, parameter: 'no-slash'}\n", "environments.lab.pointer.parameter",
         "no-slash"),
        ("    pointer: {kind: ssm, parameter: /d/status}\n", "environments.lab.pointer",
         "status parameter must differ"),
        ("    pointer: {kind: file, path: p.json, colour: red}\n", "environments.lab.pointer.colour",
         "red"),
        ("    agent: {interval: 0}\n", "environments.lab.agent.interval", "0"),
        ("    agent: {jitter: 2}\n", "environments.lab.agent.jitter", "2"),
        ("    promotion: {after: preprod, store: 'file:///p'}\n", "environments.lab.promotion",
         "trusted_keys"),
        ("    promotion: {store: 'http://x/'}\n", "environments.lab.promotion.store", "writable"),
        ("    promotion: {after: lab, trusted_keys: [release.pub], store: 'file:///p'}\n",
         "", "names the environment itself"),
        ("    promotion: {after: preprod, trusted_keys: [missing.pub], store: 'file:///p'}\n",
         "environments.lab.promotion.trusted_keys.0", "missing.pub"),
    ],
)
def test_bad_runner_sections_name_the_field_and_the_value(
    tmp_path: Path, sections: str, field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_with(tmp_path, sections))
    message = str(error.value)
    assert str(tmp_path / "deployer.yml") in message
    if field:
        assert f"field '{field}'" in message
    assert words in message
