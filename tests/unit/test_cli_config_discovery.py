"""Which config file a command uses: --config, $DEPLOYER_CONFIG, ./deployer.yml, and never the
local lab's outside the lab and the demo."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deployer import ConfigError
from deployer.cli._common import get_config, resolve_config_path

CONFIG = """
state_dir: state
environments:
  lab:
    inventory: hosts.yml
    app: {name: hello}
    store: {url: "http://127.0.0.1:8081/"}
    trusted_keys: [release.pub]
    load_balancer: {socket: /tmp/x.sock, backend: hello}
"""


def write_config(where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "hosts.yml").write_text("all:\n  hosts:\n    node1: {}\n")
    (where / "release.pub").write_text("untrusted comment: x\nRWQ=\n")
    cfg = where / "deployer.yml"
    cfg.write_text(textwrap.dedent(CONFIG))
    return cfg


@pytest.fixture
def a_lab_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local lab with a config (as `deployer lab up` leaves it), an empty working directory and
    no $DEPLOYER_CONFIG."""
    lab_dir = tmp_path / "lab"
    cfg = write_config(lab_dir)
    monkeypatch.setenv("DEPLOYER_LAB_DIR", str(lab_dir))
    monkeypatch.delenv("DEPLOYER_CONFIG", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return cfg


def deployer(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command, with a pipe for output (as in CI)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([sys.executable, "-m", "deployer", *args], capture_output=True,
                          text=True, env=env, timeout=60, check=False)


def test_without_a_config_commands_refuse_the_labs_and_say_where_they_looked(
    a_lab_config: Path,
) -> None:
    r = deployer("history", "--env", "lab")
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    first, hint = r.stderr.splitlines()[:2]
    assert first.startswith("deployer: error: no configuration file")
    for place in ("--config", "$DEPLOYER_CONFIG", f"deployer.yml in {Path.cwd()}"):
        assert place in first
    assert str(a_lab_config) in first and "only by the lab and the demo" in first
    assert hint.startswith("deployer: hint: ") and "--config FILE" in hint
    assert "DEPLOYER_CONFIG=FILE" in hint
    # Nothing was created in the lab's state directory.
    assert not (a_lab_config.parent / "state").exists()


def test_the_lab_fallback_is_only_for_those_who_ask(
    a_lab_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="no configuration file"):
        resolve_config_path(None)
    cfg = get_config(None, lab_fallback=True)
    assert cfg.source == a_lab_config.resolve()
    assert f"using config {a_lab_config} (from the local lab)" in capsys.readouterr().err


def test_a_found_config_is_named_on_stderr(
    a_lab_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = write_config(Path.cwd())
    r = deployer("history", "--env", "lab", "--json")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"  # --json output stays clean
    assert r.stderr.splitlines() == [f"deployer: using config {local} (from ./deployer.yml)"]

    elsewhere = write_config(tmp_path / "elsewhere")
    monkeypatch.setenv("DEPLOYER_CONFIG", str(elsewhere))
    r = deployer("history", "--env", "lab")
    assert r.returncode == 0, r.stderr
    assert f"deployer: using config {elsewhere} (from $DEPLOYER_CONFIG)" in r.stderr.splitlines()


def test_an_explicit_config_is_not_announced(a_lab_config: Path, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "explicit")
    r = deployer("history", "--env", "lab", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "using config" not in r.stderr


def test_a_missing_config_named_by_the_environment_says_so(
    a_lab_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOYER_CONFIG", "/nonexistent/deployer.yml")
    r = deployer("history", "--env", "lab")
    assert r.returncode == 2
    assert "from $DEPLOYER_CONFIG" in r.stderr
    assert "deployer: error: /nonexistent/deployer.yml: configuration file not found" in r.stderr


# What the docs said before commands stopped falling back to the lab's config: each promised
# that `deployer <command> --env lab` finds it on its own.
_FALLBACK_PROMISES = ("finds without flags", "works with no other flag", "found without flags")


def test_the_docs_never_promise_that_commands_find_the_labs_config_on_their_own() -> None:
    root = Path(__file__).resolve().parents[2]
    docs = [root / "README.md", *sorted((root / "inventories").glob("*.md"))]
    for doc in docs:
        text = " ".join(doc.read_text().split())
        for promise in _FALLBACK_PROMISES:
            assert promise not in text, f"{doc.relative_to(root)} says the lab's config is {promise!r}"
        if "--env lab" in text:  # where the docs use the lab's environment, they say how to name it
            assert "$DEPLOYER_CONFIG" in text and "--config" in text, doc.relative_to(root)
