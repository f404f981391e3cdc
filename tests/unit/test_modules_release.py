"""deployer_release_unpack / _switch / _info against real tarballs served over HTTP."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
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
    assert third["pruned"] == ["1", "3"]
    assert info.run({"base_dir": str(base)})["current"] == "4"
    undo = switch.run({"base_dir": str(base), "version": "2", "previous": ""})
    assert undo["previous"] == "" and not (base / "previous").exists()
    assert info.run({"base_dir": str(base)}) == {
        "changed": False,
        "base_dir": str(base),
        "current": "2",
        "previous": "",
        "staged": ["2", "4"],
        "staged_sha256": {"2": "", "4": ""},
    }


def test_switch_refuses_a_release_that_is_not_staged(tmp_path: Path) -> None:
    (tmp_path / "releases" / "9").mkdir(parents=True)
    with pytest.raises(switch.SwitchError, match="not staged"):
        switch.run({"base_dir": str(tmp_path), "version": "9"})
    with pytest.raises(switch.SwitchError, match="not a valid release version"):
        switch.run({"base_dir": str(tmp_path), "version": "../x"})
    assert not (tmp_path / "current").exists()
