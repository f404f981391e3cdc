"""`deployer keys` and `deployer artefact` through the real entry point (exit codes, messages)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from artefact_helpers import make_source, run_minisign, tree_snapshot

from deployer.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    captured = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), captured.out, captured.err


def test_cli_build_sign_publish_verify_list(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    src = make_source(tmp_path)
    store = (tmp_path / "store").as_uri()
    assert run(capsys, "keys", "generate", "--out", "keys")[0] == 0
    code, _, err = run(capsys, "keys", "generate", "--out", "keys")
    assert code == 2 and "--force" in err
    code, _, err = run(capsys, "artefact", "build", str(src), "--app", "hello", "--version", "1.0",
                       "--source-commit", "abc")
    assert code == 0, err
    out_dir = tmp_path / "dist" / "hello-1.0"
    assert (out_dir / "hello-1.0.tar.gz").is_file()

    code, _, err = run(capsys, "artefact", "publish", str(out_dir), "--store", store)
    assert code == 5 and "unsigned" in err
    assert not (tmp_path / "store").exists()

    assert run(capsys, "artefact", "sign", str(out_dir / "manifest.json"),
               "--key", "keys/release.key")[0] == 0
    verified = run_minisign("-V", "-p", "keys/release.pub", "-m", str(out_dir / "manifest.json"))
    assert verified.returncode == 0, verified.stderr

    # Publishing the files one by one works like publishing the directory.
    files = [str(out_dir / n) for n in ("manifest.json", "manifest.json.minisig",
                                        "hello-1.0.tar.gz")]
    code, _, err = run(capsys, "artefact", "publish", *files, "--store", store)
    assert code == 0 and "published hello 1.0" in err
    code, _, err = run(capsys, "artefact", "publish", str(out_dir), "--store", store)
    assert code == 0 and "nothing changed" in err

    code, _, err = run(capsys, "artefact", "verify", "--store", store, "--app", "hello",
                       "--version", "1.0", "--trusted-key", "keys/release.pub")
    assert code == 0 and "verified" in err
    code, out, _ = run(capsys, "artefact", "list", "--store", store, "--json")
    listed = json.loads(out)
    assert [(m["app"], m["version"], m["source_commit"]) for m in listed] == [
        ("hello", "1.0", "abc")]

    # Another key is not trusted: exit code of VerificationError and a one-line reason.
    assert run(capsys, "keys", "generate", "--out", "keys", "--name", "other")[0] == 0
    code, _, err = run(capsys, "artefact", "verify", "--store", store, "--app", "hello",
                       "--version", "1.0", "--trusted-key", "keys/other.pub")
    assert code == 5 and "not trusted" in err and "Traceback" not in err

    # A changed tarball is caught by verify.
    tarball = tmp_path / "store" / "hello" / "1.0" / "hello-1.0.tar.gz"
    data = tarball.read_bytes()
    tarball.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    code, _, err = run(capsys, "artefact", "verify", "--store", store, "--app", "hello",
                       "--version", "1.0", "--trusted-key", "keys/release.pub")
    assert code == 5 and "sha256" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--app", "Bad App", "--version", "1.0"], "--app"),
        (["--app", "hello", "--version", "1.0;rm"], "--version"),
    ],
)
def test_cli_build_bad_input_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch, args: list[str],
                                            expected: str) -> None:
    monkeypatch.chdir(tmp_path)
    src = make_source(tmp_path)
    before = tree_snapshot(tmp_path)
    code, _, err = run(capsys, "artefact", "build", str(src), *args)
    assert code == 2 and expected in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert tree_snapshot(tmp_path) == before and not (tmp_path / "dist").exists()


def test_cli_verify_missing_release_and_bad_store(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    pub = tmp_path / "k.pub"
    code, _, err = run(capsys, "artefact", "verify", "--store", (tmp_path / "s").as_uri(),
                       "--app", "hello", "--version", "1.0", "--trusted-key", str(pub))
    assert code == 2 and "k.pub" in err  # the missing key file is named
    code, _, err = run(capsys, "artefact", "list", "--store", "gopher://x")
    assert code == 2 and "gopher://x" in err
