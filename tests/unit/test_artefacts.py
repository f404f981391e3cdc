"""Reproducible builds, manifests, signing and release verification on a file store."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest
from artefact_helpers import make_keys, make_signed, make_source

import deployer.artefacts as artefacts
from deployer import (
    ArtefactError,
    UsageError,
    VerificationError,
    VersionError,
)
from deployer.artefacts import (
    Manifest,
    build_artefact,
    load_public_key,
    open_store,
    sign_manifest,
    verify_release,
    verify_signature,
)


def test_public_names_are_exactly_the_api() -> None:
    assert sorted(artefacts.__all__) == sorted([
        "ArtefactStore", "BuiltArtefact", "KeyPair", "Manifest", "PublicKey", "PublishResult",
        "SecretKey", "VerifiedRelease", "build_artefact", "generate_keypair", "load_public_key",
        "load_secret_key", "open_store", "sign_bytes", "sign_manifest", "signer_key_id",
        "verified_release", "verify_release", "verify_signature",
    ])
    for name in artefacts.__all__:
        assert hasattr(artefacts, name)


def test_build_is_reproducible_and_keeps_modes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    src = make_source(tmp_path)
    first = build_artefact(src, app="hello", version="1.0.0", out_dir=tmp_path / "a")
    os.utime(src / "app.txt", (1, 1))  # a touched file must not change the bytes
    (src / "app.txt").chmod(0o600)  # nor a different umask
    second = build_artefact(src, app="hello", version="1.0.0", out_dir=tmp_path / "b")
    assert first.tarball.read_bytes() == second.tarball.read_bytes()
    assert first.tarball.name == "hello-1.0.0.tar.gz"
    raw = first.tarball.read_bytes()
    assert raw[4:8] == b"\x00\x00\x00\x00"  # gzip header mtime
    with tarfile.open(first.tarball) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members) == sorted(members)
    assert set(members) == {"app.txt", "bin", "bin/run", "static", "static/style.css"}
    assert members["bin/run"].mode == 0o755
    assert members["app.txt"].mode == 0o644
    assert all(m.uid == 0 and m.gid == 0 and not m.uname and m.mtime == 0
               for m in members.values())
    manifest = json.loads(first.manifest_path.read_bytes())
    assert manifest["sha256"] == first.manifest.sha256
    assert manifest["size"] == len(raw)

    (src / "app.txt").write_text("changed")
    third = build_artefact(src, app="hello", version="1.0.0", out_dir=tmp_path / "c")
    assert third.manifest.sha256 != first.manifest.sha256

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    dated = build_artefact(src, app="hello", version="1.0.0", out_dir=tmp_path / "d",
                           source_commit="abc123", build_id="ci-7")
    with tarfile.open(dated.tarball) as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}
    assert dated.manifest.created == "2023-11-14T22:13:20Z"
    assert dated.manifest.source_commit == "abc123"
    assert Manifest.from_json(dated.manifest_path.read_bytes(), source="x") == dated.manifest


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"app": "Hello", "version": "1.0.0"}, UsageError, "app"),
        ({"app": "hello", "version": "1.0/../x"}, VersionError, "version"),
        ({"app": "hello", "version": "1.0", "source_commit": "has space"}, VerificationError,
         "source_commit"),
    ],
)
def test_build_refuses_bad_input_without_writing(tmp_path: Path, kwargs: dict[str, str],
                                                 error: type[Exception], message: str) -> None:
    src = make_source(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(error, match=message):
        build_artefact(src, out_dir=out, **kwargs)  # type: ignore[arg-type]
    assert not out.exists()


def test_build_refuses_escaping_symlink(tmp_path: Path) -> None:
    src = make_source(tmp_path)
    (src / "escape").symlink_to("../../etc/passwd")
    out = tmp_path / "out"
    with pytest.raises(ArtefactError, match="outside"):
        build_artefact(src, app="hello", version="1.0", out_dir=out)
    assert not out.exists()


def test_manifest_from_json_names_the_bad_field() -> None:
    good = Manifest(app="hello", version="1.0", tarball="hello-1.0.tar.gz", sha256="a" * 64,
                    size=3, created="2024-01-01T00:00:00Z")
    assert Manifest.from_json(good.to_json(), source="m") == good
    cases = {
        "sha256": ("xyz", "sha256"),
        "size": (-1, "size"),
        "tarball": ("other.tar.gz", "tarball"),
        "version": ("bad version", "version"),
        "app": ("BAD", "app"),
        "extra": (1, "extra"),
    }
    for field, (value, expected) in cases.items():
        data = json.loads(good.to_json())
        data[field] = value
        with pytest.raises(VerificationError, match=expected):
            Manifest.from_json(json.dumps(data).encode(), source="store/m.json")
    with pytest.raises(VerificationError, match="not valid JSON"):
        Manifest.from_json(b"{", source="m")


def test_a_manifest_may_say_the_release_has_no_rollback_path_and_older_ones_still_read(
    tmp_path: Path,
) -> None:
    src = make_source(tmp_path)
    built = build_artefact(src, app="hello", version="2.0.0", out_dir=tmp_path / "out",
                           irreversible="drops the legacy_orders table")
    raw = json.loads(built.manifest_path.read_bytes())
    assert raw["irreversible"] == "drops the legacy_orders table"
    again = Manifest.from_json(built.manifest_path.read_bytes(), source="m")
    assert again.irreversible == "drops the legacy_orders table"
    del raw["irreversible"]  # a manifest written before the field existed
    older = Manifest.from_json(json.dumps(raw).encode(), source="m")
    assert older.irreversible is None and "irreversible" not in older.to_json().decode()
    with pytest.raises(VerificationError, match="field 'irreversible'"):
        Manifest.from_json(json.dumps({**raw, "irreversible": "two\nlines"}).encode(), source="m")
    with pytest.raises(VerificationError, match="field 'irreversible'"):
        build_artefact(src, app="hello", version="2.0.1", out_dir=tmp_path / "o2", irreversible="")


def test_the_verified_release_names_the_key_that_signed_it(
    published: tuple[Path, Path, Path],
) -> None:
    store_dir, pub, _ = published
    verified = artefacts.verified_release(open_store(f"file://{store_dir}"), "hello", "1.0.0", [pub])
    assert verified.key_id == load_public_key(pub).key_id_hex
    assert verified.manifest.version == "1.0.0"


def test_sign_refuses_invalid_manifest(tmp_path: Path) -> None:
    secret, _ = make_keys(tmp_path)
    bad = tmp_path / "manifest.json"
    bad.write_text("{}")
    with pytest.raises(VerificationError, match="missing"):
        sign_manifest(bad, secret)
    assert not (tmp_path / "manifest.json.minisig").exists()


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A file store with hello 1.0.0 published and signed; returns (store root, pub, secret)."""
    secret, public = make_keys(tmp_path)
    built = make_signed(tmp_path, secret)
    root = tmp_path / "store"
    open_store(root.as_uri()).publish(built.dir)
    return root, public, secret


def test_verify_release_accepts_a_good_release(published: tuple[Path, Path, Path]) -> None:
    root, public, _ = published
    manifest = verify_release(open_store(root.as_uri()), "hello", "1.0.0", [public])
    assert (manifest.app, manifest.version) == ("hello", "1.0.0")


def test_verify_release_refuses_unsigned(published: tuple[Path, Path, Path]) -> None:
    root, public, _ = published
    (root / "hello/1.0.0/manifest.json.minisig").unlink()
    with pytest.raises(VerificationError, match="not signed"):
        verify_release(open_store(root.as_uri()), "hello", "1.0.0", [public])


def test_verify_release_refuses_tampered_manifest(published: tuple[Path, Path, Path]) -> None:
    root, public, _ = published
    path = root / "hello/1.0.0/manifest.json"
    path.write_bytes(path.read_bytes().replace(b'"size": ', b'"size": 1'))
    with pytest.raises(VerificationError, match="does not match"):
        verify_release(open_store(root.as_uri()), "hello", "1.0.0", [public])


def test_verify_release_refuses_untrusted_key(published: tuple[Path, Path, Path],
                                              tmp_path: Path) -> None:
    root, _, _ = published
    _, other = make_keys(tmp_path / "other")
    with pytest.raises(VerificationError, match="not trusted"):
        verify_release(open_store(root.as_uri()), "hello", "1.0.0", [other])


def test_verify_release_refuses_wrong_identity(published: tuple[Path, Path, Path]) -> None:
    root, public, _ = published
    # A correctly signed 1.0.0 manifest replayed as 2.0.0.
    shutil.copytree(root / "hello/1.0.0", root / "hello/2.0.0")
    (root / "hello/2.0.0/hello-1.0.0.tar.gz").rename(root / "hello/2.0.0/hello-2.0.0.tar.gz")
    with pytest.raises(VerificationError, match=r"not hello 2\.0\.0"):
        verify_release(open_store(root.as_uri()), "hello", "2.0.0", [public])


def test_verify_release_refuses_tampered_tarball(published: tuple[Path, Path, Path]) -> None:
    root, public, _ = published
    tarball = root / "hello/1.0.0/hello-1.0.0.tar.gz"
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz:
        gz.write(gzip.decompress(tarball.read_bytes()).replace(b"hello", b"HELLO"))
    tarball.write_bytes(buf.getvalue())
    store = open_store(root.as_uri())
    with pytest.raises(VerificationError, match="tarball"):
        verify_release(store, "hello", "1.0.0", [public])
    # The signature alone is still fine when the tarball is not checked (nodes check it).
    verify_release(store, "hello", "1.0.0", [public], check_tarball=False)


def test_build_then_sign_replaces_stale_signature(tmp_path: Path) -> None:
    secret, public = make_keys(tmp_path)
    built = make_signed(tmp_path, secret, subdir="one")
    stale = (built.dir / "manifest.json.minisig").read_bytes()
    (built.dir.parent / "src" / "app.txt").write_text("new")
    rebuilt = build_artefact(built.dir.parent / "src", app="hello", version="1.0.0", out_dir=built.dir)
    # The signature of the old manifest is gone with it: it cannot be published with the new one.
    assert not (built.dir / "manifest.json.minisig").exists()
    manifest = rebuilt.manifest_path.read_bytes()
    assert rebuilt.manifest.sha256 != built.manifest.sha256
    key = load_public_key(public)
    with pytest.raises(VerificationError):
        verify_signature(manifest, stale, [key])
    sign_manifest(rebuilt.manifest_path, secret)
    verify_signature(manifest, (built.dir / "manifest.json.minisig").read_bytes(), [key])
