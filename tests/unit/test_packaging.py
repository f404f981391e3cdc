"""What an installation carries and records: one version, the content it finds, the collection
it builds, and the journal's record of which deployer ran each deployment."""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import JOURNAL_SCHEMA_1

import deployer
from deployer import DeployerError, PrerequisiteError
from deployer._collection import assemble, galaxy_manifest
from deployer._resources import content_dir, examples_dir
from deployer.adapters.journal import SCHEMA_VERSION, Journal
from deployer.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]



def test_the_version_is_written_in_one_place() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert galaxy_manifest()["version"] == deployer.__version__
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and deployer.__version__ in result.output


def test_a_collection_needs_a_final_version() -> None:
    with pytest.raises(DeployerError, match=r"X\.Y\.Z"):
        galaxy_manifest("1.0.0rc1")


def test_content_is_found_in_the_checkout_or_where_the_variable_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DEPLOYER_CONTENT_DIR", raising=False)
    assert content_dir() == ROOT
    assert (examples_dir() / "build.py").is_file()
    monkeypatch.setenv("DEPLOYER_CONTENT_DIR", str(tmp_path))
    assert content_dir() == tmp_path
    assert examples_dir() == tmp_path / "examples" / "hello-service"


def test_missing_content_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import deployer._resources as resources

    monkeypatch.delenv("DEPLOYER_CONTENT_DIR", raising=False)
    monkeypatch.setattr(resources, "__file__", str(tmp_path / "site-packages" / "deployer" / "x.py"))
    monkeypatch.setattr(resources, "files", lambda _pkg: tmp_path / "nowhere")
    with pytest.raises(PrerequisiteError, match="content"):
        content_dir()


def test_the_collection_holds_the_roles_and_their_plugins(tmp_path: Path) -> None:
    dest = assemble(tmp_path / "vm")
    galaxy = yaml.safe_load((dest / "galaxy.yml").read_text())
    assert (galaxy["namespace"], galaxy["name"]) == ("deployer", "vm")
    assert galaxy["version"] == deployer.__version__
    roles = sorted(p.name for p in (dest / "roles").iterdir())
    assert roles == ["deployer_lb_haproxy", "deployer_release", "deployer_smoke"]
    modules = sorted(p.stem for p in (dest / "plugins" / "modules").glob("*.py"))
    assert modules == ["deployer_haproxy", "deployer_http_check", "deployer_release_info",
                       "deployer_release_switch", "deployer_release_unpack"]
    actions = sorted(p.name for p in (dest / "plugins" / "action").iterdir())
    assert actions == [f"{m}.py" for m in modules]  # links resolved, no shared _ file
    assert not any((dest / "plugins" / "action" / a).is_symlink() for a in actions)
    for role in roles:
        kept = {p.name for p in (dest / "roles" / role).iterdir()}
        assert not {"library", "action_plugins", "molecule"} & kept
    stage = (dest / "roles" / "deployer_release" / "tasks" / "stage.yml").read_text()
    assert "  deployer.vm.deployer_release_unpack:\n" in stage
    source = (ROOT / "roles" / "deployer_release" / "tasks" / "stage.yml").read_text()
    assert stage == source.replace("deployer_release_unpack:", "deployer.vm.deployer_release_unpack:")
    assert (dest / "meta" / "runtime.yml").is_file() and (dest / "CHANGELOG.md").is_file()


def test_an_old_journal_is_migrated_and_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with sqlite3.connect(path) as db:
        db.executescript(JOURNAL_SCHEMA_1)
    journal = Journal(path)
    try:
        (old,) = journal.deployments("lab")
        assert (old.version, old.status, old.deployer_version) == ("1.0.0", "succeeded", "")
        assert old.details == {"sha256": "ab"}
        new = journal.start_deployment(env="lab", app="hello", kind="deploy", version="1.1.0",
                                       command="deployer deploy")
        record = journal.deployment(new)
        assert record is not None and record.deployer_version == deployer.__version__
        assert record.to_dict()["deployer_version"] == deployer.__version__
    finally:
        journal.close()
    again = Journal(path)  # opening a migrated journal again changes nothing
    try:
        assert [r.deployer_version for r in again.deployments("lab")] == [deployer.__version__, ""]
        assert again._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        again.close()
