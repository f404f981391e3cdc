"""deployer_release_unpack / _switch / _info against real tarballs served over HTTP."""

from __future__ import annotations

import grp
import hashlib
import http.server
import io
import json
import os
import pwd
import stat
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from role_modules import load_module

unpack = load_module("deployer_release", "deployer_release_unpack")
switch = load_module("deployer_release", "deployer_release_switch")
info = load_module("deployer_release", "deployer_release_info")

Member = tuple[str, str, Any]  # (kind, name, payload)


def build_tarball(members: list[Member]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for kind, name, payload in members:
            entry = tarfile.TarInfo(name)
            if kind == "file":
                data = payload.encode() if isinstance(payload, str) else payload
                entry.size = len(data)
                entry.mode = 0o755 if name.startswith("bin/") else 0o644
                archive.addfile(entry, io.BytesIO(data))
                continue
            entry.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
                "chr": tarfile.CHRTYPE,
            }[kind]
            entry.linkname = payload or ""
            entry.mode = 0o755
            archive.addfile(entry)
    return buffer.getvalue()


GOOD = [
    ("dir", "bin", None),
    ("file", "bin/run", "#!/bin/sh\necho hi\n"),
    ("file", "lib/app.py", "print('app')\n"),
    ("symlink", "lib/current.py", "app.py"),
    ("hardlink", "lib/copy.py", "lib/app.py"),
]


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[Callable[[str, bytes], str]]:
    """A tiny HTTP server over a tmp dir; returns put(name, data) -> url."""
    root = tmp_path / "store"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def put(name: str, data: bytes) -> str:
        (root / name).write_bytes(data)
        return f"http://127.0.0.1:{server.server_address[1]}/{name}"

    yield put
    server.shutdown()
    server.server_close()


def params(url: str, data: bytes, dest: Path, **extra: Any) -> dict[str, Any]:
    return {
        "url": url,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
        "max_size": 1024 * 1024,
        "dest": str(dest),
        "version": dest.name,
        "timeout": 5,
        **extra,
    }


def test_unpack_stages_a_release_once(store: Callable[[str, bytes], str], tmp_path: Path) -> None:
    data = build_tarball(GOOD)
    dest = tmp_path / "app" / "releases" / "1.0.0"
    result = unpack.run(params(store("a.tgz", data), data, dest))
    assert result["changed"] and result["files"] == 2
    assert (dest / "bin" / "run").read_text().startswith("#!/bin/sh")
    assert os.access(dest / "bin" / "run", os.X_OK)
    assert os.readlink(dest / "lib" / "current.py") == "app.py"
    assert (dest / "lib" / "copy.py").stat().st_ino == (dest / "lib" / "app.py").stat().st_ino
    marker = json.loads((dest / ".deployer-release.json").read_text())
    assert marker["version"] == "1.0.0" and marker["sha256"] == hashlib.sha256(data).hexdigest()
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".")]
    again = unpack.run(params(store("a.tgz", data), data, dest))
    assert again["changed"] is False


def test_unpack_replaces_an_unfinished_stage(store: Callable[[str, bytes], str], tmp_path: Path) -> None:
    data = build_tarball(GOOD)
    dest = tmp_path / "releases" / "1.0.0"
    (dest / "junk").mkdir(parents=True)
    assert unpack.run(params(store("a.tgz", data), data, dest))["changed"]
    assert not (dest / "junk").exists()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("file", "/etc/evil", "x")], "absolute path"),
        ([("file", "lib/../../evil", "x")], "'..'"),
        ([("symlink", "lib/out", "../../etc")], "outside the release"),
        ([("symlink", "lib/abs", "/etc/passwd")], "absolute target"),
        ([("hardlink", "lib/h", "../etc/passwd")], "hard link"),
        ([("fifo", "lib/pipe", None)], "device or FIFO"),
        ([("chr", "lib/null", None)], "device or FIFO"),
        ([("symlink", "w", "."), ("dir", "p", None), ("symlink", "p/z", "../w/..")], "resolves outside"),
        ([("file", "big", "x" * 3000)], "unpacks to more than"),
        ([("file", ".deployer-release.json", "{}")], "reserved"),
    ],
)
def test_unpack_refuses_unsafe_archives(
    store: Callable[[str, bytes], str], tmp_path: Path, members: list[Member], message: str
) -> None:
    data = build_tarball(members)
    dest = tmp_path / "releases" / "1.0.0"
    with pytest.raises(unpack.UnpackError, match=message):
        unpack.run(params(store("bad.tgz", data), data, dest, max_size=2048))
    assert not dest.exists()
    assert not (tmp_path.parent / "etc").exists()
    assert list((tmp_path / "releases").iterdir()) == []


def test_unpack_refuses_a_wrong_digest_size_or_oversized_download(
    store: Callable[[str, bytes], str], tmp_path: Path
) -> None:
    data = build_tarball(GOOD)
    url = store("a.tgz", data)
    dest = tmp_path / "releases" / "1.0.0"
    with pytest.raises(unpack.UnpackError, match="SHA-256"):
        unpack.run({**params(url, data, dest), "sha256": "0" * 64})
    with pytest.raises(unpack.UnpackError, match="manifest says"):
        unpack.run({**params(url, data, dest), "size": len(data) + 1})
    with pytest.raises(unpack.UnpackError, match="larger than the limit"):
        unpack.run({**params(url, data, dest), "size": 0, "max_size": len(data) - 1})
    with pytest.raises(unpack.UnpackError, match="HTTP 404"):
        unpack.run(params(url + ".missing", data, dest))
    assert not dest.exists()


def stage(base: Path, version: str) -> None:
    release = base / "releases" / version
    release.mkdir(parents=True)
    (release / ".deployer-release.json").write_text(json.dumps({"version": version}))


def test_switch_moves_current_and_previous_and_prunes(tmp_path: Path) -> None:
    base = tmp_path / "app"
    for version in ("1", "2", "3", "4"):
        stage(base, version)
    program = tmp_path / "conf" / "app.conf"
    first = switch.run(
        {"base_dir": str(base), "version": "1", "program_file": str(program), "program_content": "v1\n"}
    )
    assert first["changed"] and first["previous"] == "" and program.read_text() == "v1\n"
    second = switch.run(
        {
            "base_dir": str(base),
            "version": "2",
            "keep_releases": 2,
            "program_file": str(program),
            "program_content": "v2\n",
        }
    )
    assert os.readlink(base / "current") == "releases/2"
    assert os.readlink(base / "previous") == "releases/1"
    assert second["program_changed"] and program.read_text() == "v2\n"
    # keep 2 newest (3, 4) plus current (2) and previous (1): nothing older exists to prune.
    assert second["pruned"] == []
    repeat = switch.run(
        {
            "base_dir": str(base),
            "version": "2",
            "keep_releases": 2,
            "program_file": str(program),
            "program_content": "v2\n",
        }
    )
    assert repeat["changed"] is False
    third = switch.run({"base_dir": str(base), "version": "4", "keep_releases": 1})
    # 4 is current, 2 previous, and 1 was previous before the switch (the way back): kept.
    assert third["pruned"] == ["3"]
    assert info.run({"base_dir": str(base)})["current"] == "4"
    undo = switch.run({"base_dir": str(base), "version": "2", "previous": ""})
    assert undo["previous"] == "" and not (base / "previous").exists()
    assert info.run({"base_dir": str(base)}) == {
        "changed": False,
        "base_dir": str(base),
        "current": "2",
        "previous": "",
        "staged": ["1", "2", "4"],
        "staged_sha256": {"1": "", "2": "", "4": ""},
    }


def test_a_switch_that_prunes_can_still_be_undone_exactly(tmp_path: Path) -> None:
    """A release failing after its switch is undone with the links as they were (the switch's
    switched_from and previous_before): pruning must not have removed either release."""
    base = tmp_path / "app"
    for age, version in enumerate(("0", "1", "2", "3")):
        stage(base, version)
        marker = base / "releases" / version / ".deployer-release.json"
        os.utime(marker, (1_000_000 + age, 1_000_000 + age))
    for version in ("0", "1", "2"):
        switch.run({"base_dir": str(base), "version": version})
    switched = switch.run({"base_dir": str(base), "version": "3", "keep_releases": 2})
    assert (switched["switched_from"], switched["previous_before"]) == ("2", "1")
    assert switched["pruned"] == ["0"]
    undone = switch.run({"base_dir": str(base), "version": "2", "previous": "1"})
    assert (undone["current"], undone["previous"]) == ("2", "1")
    assert sorted(p.name for p in (base / "releases").iterdir()) == ["1", "2", "3"]


def test_switch_refuses_a_release_that_is_not_staged(tmp_path: Path) -> None:
    (tmp_path / "releases" / "9").mkdir(parents=True)
    with pytest.raises(switch.SwitchError, match="not staged"):
        switch.run({"base_dir": str(tmp_path), "version": "9"})
    with pytest.raises(switch.SwitchError, match="not a valid release version"):
        switch.run({"base_dir": str(tmp_path), "version": "../x"})
    assert not (tmp_path / "current").exists()


def test_releases_are_never_writable_by_the_applications_user(
    store: Callable[[str, bytes], str], tmp_path: Path
) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, mode, kind in (("data", 0o777, tarfile.DIRTYPE), ("data/shared", 0o666, tarfile.REGTYPE)):
            entry = tarfile.TarInfo(name)
            entry.type, entry.mode = kind, mode
            archive.addfile(entry, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
    data = buffer.getvalue()
    dest = tmp_path / "releases" / "1.0.0"
    unpack.run(params(store("w.tgz", data), data, dest))
    assert (dest / "data").stat().st_mode & 0o777 == 0o755
    assert (dest / "data" / "shared").stat().st_mode & 0o777 == 0o644


class Recorder:
    """Stands in for useradd/groupadd: records the commands, changes nothing."""

    def __init__(self, rc: int = 0) -> None:
        self.rc = rc
        self.commands: list[list[str]] = []

    def __call__(self, argv: list[str]) -> tuple[int, str]:
        self.commands.append(argv)
        return self.rc, "" if self.rc == 0 else "useradd: permission denied"


def test_a_missing_account_is_created_as_a_system_user_without_a_login_shell() -> None:
    runner = Recorder()
    created = unpack.ensure_account(
        "deployer-test-nosuchuser", "deployer-test-nosuchgroup", "/var/lib/hello",
        create=True, check_mode=False, runner=runner,
    )
    assert created == ["group deployer-test-nosuchgroup", "user deployer-test-nosuchuser"]
    groupadd, useradd = runner.commands
    assert groupadd == ["groupadd", "--system", "deployer-test-nosuchgroup"]
    assert useradd[:2] == ["useradd", "--system"] and useradd[-1] == "deployer-test-nosuchuser"
    assert useradd[useradd.index("--gid") + 1] == "deployer-test-nosuchgroup"
    assert useradd[useradd.index("--home-dir") + 1] == "/var/lib/hello"
    assert "--no-create-home" in useradd
    assert useradd[useradd.index("--shell") + 1].endswith(("nologin", "false"))
    # In check mode it is only reported; an existing account needs nothing.
    dry = Recorder()
    assert unpack.ensure_account("deployer-test-nosuchuser", "root", "", create=True,
                                 check_mode=True, runner=dry) == ["user deployer-test-nosuchuser"]
    assert dry.commands == []
    assert unpack.ensure_account("root", "root", "", create=False, check_mode=False, runner=dry) == []


def test_a_missing_account_fails_the_stage_when_it_must_not_be_created(tmp_path: Path) -> None:
    result = unpack.execute(
        {"url": "http://127.0.0.1:9/x", "sha256": "0" * 64, "size": 0, "max_size": 1, "timeout": 1,
         "dest": str(tmp_path / "releases" / "1.0.0"), "version": "1.0.0", "make_dirs": [],
         "run_user": "deployer-test-nosuchuser", "run_group": "root", "create_user": False},
        runner=Recorder(),
    )
    assert result["failed"] and "user 'deployer-test-nosuchuser' does not exist" in result["msg"]
    failing = unpack.execute(
        {"url": "http://127.0.0.1:9/x", "sha256": "0" * 64, "size": 0, "max_size": 1, "timeout": 1,
         "dest": str(tmp_path / "releases" / "1.0.0"), "version": "1.0.0", "make_dirs": [],
         "run_user": "deployer-test-nosuchuser", "run_group": "root", "create_user": True},
        runner=Recorder(rc=1),
    )
    assert failing["failed"] and "permission denied" in failing["msg"]


def test_the_applications_directories_are_given_to_its_user(
    store: Callable[[str, bytes], str], tmp_path: Path
) -> None:
    data = build_tarball(GOOD)
    log, state = tmp_path / "log", tmp_path / "state"
    log.mkdir()
    args = {**params(store("a.tgz", data), data, tmp_path / "releases" / "1.0.0"),
            "make_dirs": [str(log), str(state)], "run_user": "nobody", "run_group": "nogroup"}
    check = unpack.execute(args, check_mode=True, runner=Recorder())
    assert check["owned_dirs"] == [str(log), str(state)] and not state.exists()
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    first = unpack.execute(args, runner=Recorder())
    assert first["made_dirs"] == [str(state)] and first["owned_dirs"] == [str(log), str(state)]
    nobody = (pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid)
    assert {(p.stat().st_uid, p.stat().st_gid) for p in (log, state)} == {nobody}
    release = tmp_path / "releases" / "1.0.0"
    assert (release.stat().st_uid, (release / "bin" / "run").stat().st_uid) == (0, 0)
    again = unpack.execute(args, runner=Recorder())
    assert not again["changed"] and "owned_dirs" not in again and "warnings" not in again
    root = unpack.execute({**args, "run_user": "root", "run_group": "root"}, runner=Recorder())
    assert any("runs as root" in w for w in root["warnings"])


def test_the_switch_checks_the_applications_account_exists(tmp_path: Path) -> None:
    release = tmp_path / "releases" / "1.0.0"
    release.mkdir(parents=True)
    (release / ".deployer-release.json").write_text('{"version": "1.0.0"}')
    result = switch.execute(
        {"base_dir": str(tmp_path), "version": "1.0.0", "restart_app": "",
         "run_user": "deployer-test-nosuchuser"},
        check_mode=True,
    )
    assert result["failed"] and "user 'deployer-test-nosuchuser' does not exist" in result["msg"]
    assert switch.execute(
        {"base_dir": str(tmp_path), "version": "1.0.0", "restart_app": "", "run_user": "root",
         "run_group": "root"},
        check_mode=True,
    )["changed"]


def test_the_download_url_is_marked_no_log() -> None:
    assert unpack.ARGUMENT_SPEC["url"]["no_log"] is True


def _link(target: str) -> Callable[[Path], None]:
    def make(base: Path) -> None:
        (base / "current").symlink_to(target.format(base=base))

    return make


@pytest.mark.parametrize(("make", "expected"), [
    (lambda base: None, ""),  # no link
    (_link("releases/1.0.0"), "1.0.0"),
    (_link("{base}/releases/1.0.0"), "1.0.0"),  # absolute
    (_link("./releases/../releases/1.0.0/"), "1.0.0"),
    (_link("releases/9.9.9"), ""),  # dangling: that release is gone
    (_link("{base}/../elsewhere"), ""),  # a directory outside the base
    (_link("{base}/../other/releases/1.0.0"), ""),  # another base's release
    (_link("releases"), ""),
    (_link("releases/1.0.0/bin"), ""),  # inside a release
    (_link("releases/.stage-1.1.0-x1y2"), ""),  # a staging directory, not a release
    (_link("releases/notes.txt"), ""),  # a file
    (lambda base: (base / "current").mkdir(), ""),  # not a link
])
def test_both_modules_read_a_link_to_a_release_alike(
    tmp_path: Path, make: Callable[[Path], None], expected: str
) -> None:
    base = tmp_path / "app"
    for path in (base / "releases" / "1.0.0" / "bin", base / "releases" / ".stage-1.1.0-x1y2",
                 tmp_path / "elsewhere", tmp_path / "other" / "releases" / "1.0.0"):
        path.mkdir(parents=True)
    (base / "releases" / "notes.txt").write_text("not a release\n")
    make(base)
    read = {module.__name__: module.linked_version(str(base), "current") for module in (info, switch)}
    assert read == dict.fromkeys(read, expected)


def test_a_dangling_current_link_does_not_become_previous(tmp_path: Path) -> None:
    base = tmp_path / "app"
    stage(base, "2")
    (base / "current").symlink_to("releases/1")  # release 1 was removed by hand
    result = switch.run({"base_dir": str(base), "version": "2"})
    assert (result["switched_from"], result["previous"]) == ("", "")
    assert not (base / "previous").exists() and os.readlink(base / "current") == "releases/2"


def test_download_errors_name_the_url_without_its_signed_query(
    store: Callable[[str, bytes], str], tmp_path: Path
) -> None:
    data = build_tarball(GOOD)
    url = store("a.tgz", data)
    dest = tmp_path / "releases" / "1.0.0"
    signed = "?X-Amz-Credential=AKIAPLANTED&X-Amz-Signature=PLANTEDSIG"
    failures = [
        {**params(url + signed, data, dest), "sha256": "0" * 64},
        {**params(url + signed, data, dest), "size": len(data) + 1},
        {**params(url + signed, data, dest), "size": 0, "max_size": len(data) - 1},
        params(url + ".missing" + signed, data, dest),
        params("nope://store/a.tgz" + signed, data, dest),
    ]
    for failing in failures:
        with pytest.raises(unpack.UnpackError) as err:
            unpack.run(failing)
        assert "PLANTED" not in str(err.value) and "?<query hidden>" in str(err.value), err.value
    assert unpack.shown_url("https://u:p@store.example.com:8443/h/a.tgz?sig=x") == (
        "https://store.example.com:8443/h/a.tgz?<query hidden>")
    assert unpack.shown_url("file:///srv/store/a.tgz") == "file:///srv/store/a.tgz"


# The options that carry secrets: a presigned URL, and the program file that holds the
# application's environment. Only they are no_log (a no_log value is censored wherever it occurs
# in a result, so a short or common value there would blank out unrelated text).
SECRET_OPTIONS = {
    ("deployer_release", "deployer_release_unpack"): {"url"},
    ("deployer_release", "deployer_release_switch"): {"program_content", "environment_content"},
    ("deployer_release", "deployer_release_info"): set(),
    ("deployer_lb_haproxy", "deployer_haproxy"): set(),
    ("deployer_smoke", "deployer_http_check"): set(),
}


def test_every_secret_module_option_is_no_log() -> None:
    roles = Path(__file__).resolve().parents[2] / "roles"
    modules = {(p.parents[1].name, p.stem) for p in roles.glob("*/library/*.py")}
    assert modules == set(SECRET_OPTIONS)  # a new module must say which options are secret
    for (role, name), secret in SECRET_OPTIONS.items():
        spec = load_module(role, name).ARGUMENT_SPEC
        assert {option for option, s in spec.items() if s.get("no_log")} == secret, name


def test_the_roles_secret_variables_are_no_log_in_their_argument_specs() -> None:
    import yaml

    specs = Path(__file__).resolve().parents[2] / "roles" / "deployer_release" / "meta" / "argument_specs.yml"
    entry_points = yaml.safe_load(specs.read_text())["argument_specs"]
    seen = 0
    for entry in entry_points.values():
        for name in ("deployer_release_url", "deployer_release_environment"):
            if name in entry.get("options", {}):
                seen += 1
                assert entry["options"][name].get("no_log") is True, name
    assert seen >= 2


def test_the_program_file_holding_the_environment_is_roots_alone(tmp_path: Path) -> None:
    base = tmp_path / "app"
    stage(base, "1")
    program = tmp_path / "conf" / "app.conf"
    args = {"base_dir": str(base), "version": "1", "program_file": str(program),
            "program_content": "environment=TOKEN=\"s3cret\"\n"}
    assert switch.run(args)["program_changed"]
    assert stat.S_IMODE(program.stat().st_mode) == 0o600
    # A file an older release wrote world-readable is made private, even with the same content
    # (check mode says so and changes nothing).
    program.chmod(0o644)
    assert switch.run(args, check_mode=True)["program_changed"]
    assert stat.S_IMODE(program.stat().st_mode) == 0o644
    assert switch.run(args)["program_changed"]
    assert stat.S_IMODE(program.stat().st_mode) == 0o600
    assert switch.run(args)["program_changed"] is False


def test_a_systemd_environment_file_is_roots_alone_and_its_unit_world_readable(tmp_path: Path) -> None:
    base = tmp_path / "app"
    stage(base, "1")
    unit = tmp_path / "system" / "app.service"
    environment = tmp_path / "deployer" / "app.env"
    args = {"base_dir": str(base), "version": "1", "supervisor": "systemd",
            "program_file": str(unit), "program_content": f"[Service]\nEnvironmentFile={environment}\n",
            "environment_file": str(environment), "environment_content": 'TOKEN="s3cret"\n'}
    # Check mode writes neither, and says both would change.
    planned = switch.run(args, check_mode=True)
    assert planned["environment_changed"] and planned["program_changed"]
    assert not environment.exists() and not unit.exists()
    done = switch.run(args)
    assert done["environment_changed"] and done["program_changed"]
    assert environment.read_text() == 'TOKEN="s3cret"\n'
    assert stat.S_IMODE(environment.stat().st_mode) == 0o600
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    # A new value changes the environment file alone (no daemon-reload needed for it).
    again = switch.run({**args, "environment_content": 'TOKEN="other"\n'})
    assert again["environment_changed"] and again["changed"] and not again["program_changed"]
    assert switch.run({**args, "environment_content": 'TOKEN="other"\n'})["changed"] is False
    # supervisord's program file holds the environment itself: root's alone whatever else is given.
    program = tmp_path / "conf" / "app.conf"
    switch.run({**args, "supervisor": "supervisord", "program_file": str(program)})
    assert stat.S_IMODE(program.stat().st_mode) == 0o600
