"""File and HTTP stores: round trips, immutability, refusals that change nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from artefact_helpers import make_keys, make_signed, tree_snapshot

from deployer import (
    ArtefactError,
    ArtefactNotFoundError,
    ImmutableArtefactError,
    UsageError,
    VerificationError,
)
from deployer.artefacts import open_store, verify_release


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_file_store_round_trip(tmp_path: Path) -> None:
    secret, public = make_keys(tmp_path)
    root = tmp_path / "store"
    store = open_store(root.as_uri())
    v1 = make_signed(tmp_path, secret, version="1.0.0", payload="one")
    v10 = make_signed(tmp_path, secret, version="1.10.0", payload="ten")
    v9 = make_signed(tmp_path, secret, version="1.9.0", payload="nine")
    other = make_signed(tmp_path, secret, app="other", version="0.1", payload="o")
    for built in (v1, v10, v9, other):
        result = store.publish(built.dir)
        assert result.created and (result.app, result.version) == (built.manifest.app,
                                                                   built.manifest.version)
    assert [m.version for m in store.list("hello")] == ["1.0.0", "1.9.0", "1.10.0"]
    assert {(m.app, m.version) for m in store.list()} == {
        ("hello", "1.0.0"), ("hello", "1.9.0"), ("hello", "1.10.0"), ("other", "0.1")}
    assert json.loads((root / "index.json").read_text()) == {"apps": ["hello", "other"]}
    assert store.get_tarball("hello", "1.9.0") == v9.tarball.read_bytes()
    manifest, signature = store.get_manifest("hello", "1.9.0")
    assert manifest == v9.manifest_path.read_bytes()
    assert signature == (v9.dir / "manifest.json.minisig").read_bytes()
    url = store.node_url("hello", "1.9.0")
    with urllib.request.urlopen(url) as response:
        assert response.read() == v9.tarball.read_bytes()
    assert verify_release(store, "other", "0.1", [public]).app == "other"
    with pytest.raises(ArtefactNotFoundError):
        store.get_manifest("hello", "3.0")
    assert store.list("nothing") == []


def test_republish_same_bytes_is_a_noop_and_different_bytes_refused(tmp_path: Path) -> None:
    secret, _ = make_keys(tmp_path)
    root = tmp_path / "store"
    store = open_store(root.as_uri())
    first = make_signed(tmp_path, secret, payload="first", subdir="a")
    assert store.publish(first.dir).created
    before = tree_snapshot(root)
    # The same source rebuilt elsewhere (new manifest time, new signature): same tarball bytes.
    again = make_signed(tmp_path, secret, payload="first", subdir="b")
    assert again.tarball.read_bytes() == first.tarball.read_bytes()
    assert not store.publish(again.dir).created
    assert tree_snapshot(root) == before
    different = make_signed(tmp_path, secret, payload="second", subdir="c")
    with pytest.raises(ImmutableArtefactError, match="immutable"):
        store.publish(different.dir)
    assert tree_snapshot(root) == before


def test_publish_refuses_bad_artefacts_without_writing(tmp_path: Path) -> None:
    secret, _ = make_keys(tmp_path)
    root = tmp_path / "store"
    store = open_store(root.as_uri())

    unsigned = make_signed(tmp_path, secret, subdir="unsigned")
    (unsigned.dir / "manifest.json.minisig").unlink()
    with pytest.raises(VerificationError, match="unsigned"):
        store.publish(unsigned.dir)

    tampered = make_signed(tmp_path, secret, subdir="tampered")
    tampered.tarball.write_bytes(tampered.tarball.read_bytes() + b"x")
    with pytest.raises(VerificationError, match="size"):
        store.publish(tampered.dir)

    bad_manifest = make_signed(tmp_path, secret, subdir="badmanifest")
    bad_manifest.manifest_path.write_text('{"app": "hello"}')
    with pytest.raises(VerificationError, match="missing"):
        store.publish(bad_manifest.dir)

    with pytest.raises(ArtefactError, match="not an artefact"):
        store.publish(tmp_path)
    assert tree_snapshot(root) == {}


def test_store_urls_are_checked() -> None:
    for url in ("ftp://x/y", "file://relative/path", "s3:///prefix", "http://"):
        with pytest.raises(UsageError):
            open_store(url)


@pytest.fixture
def http_store(tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    """A file store served by a real HTTP server on 127.0.0.1; yields (url, root, public key)."""
    secret, public = make_keys(tmp_path)
    root = tmp_path / "store"
    store = open_store(root.as_uri())
    for version, payload in (("1.0.0", "one"), ("1.1.0", "two")):
        store.publish(make_signed(tmp_path, secret, version=version, payload=payload).dir)
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
         "--directory", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/", root, public
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.daemons  # an HTTP server serving the store
def test_http_store_round_trip(http_store: tuple[str, Path, Path]) -> None:
    url, root, public = http_store
    store = open_store(url)
    assert [(m.app, m.version) for m in store.list()] == [("hello", "1.0.0"), ("hello", "1.1.0")]
    manifest = verify_release(store, "hello", "1.1.0", [public])
    tarball = root / "hello/1.1.0/hello-1.1.0.tar.gz"
    assert manifest.sha256 == open_store(root.as_uri()).list("hello")[1].sha256
    node_url = store.node_url("hello", "1.1.0")
    assert node_url == f"{url}hello/1.1.0/hello-1.1.0.tar.gz"
    with urllib.request.urlopen(node_url, timeout=5) as response:
        assert response.read() == tarball.read_bytes()
    with pytest.raises(ArtefactNotFoundError, match="not in store"):
        store.get_manifest("hello", "9.9.9")
    with pytest.raises(ArtefactError, match="read-only"):
        store.publish(root)
    (root / "hello/1.1.0/manifest.json.minisig").unlink()
    with pytest.raises(VerificationError, match="not signed"):
        verify_release(store, "hello", "1.1.0", [public])


@pytest.mark.daemons  # an HTTP server serving the store
def test_a_missing_release_is_told_apart_from_a_missing_store(
    tmp_path: Path, http_store: tuple[str, Path, Path]
) -> None:
    url, root, public = http_store
    for store in (open_store(root.as_uri()), open_store(url)):
        # A version the store does not hold: the versions it holds of that app.
        with pytest.raises(ArtefactNotFoundError) as caught:
            verify_release(store, "hello", "1.2.0", [public])
        assert str(caught.value) == f"hello 1.2.0 is not in store {store.url}; it holds hello 1.0.0, 1.1.0"
        assert caught.value.hint == f"`deployer artefact list --store {store.url} --app hello` lists them"
        with pytest.raises(ArtefactNotFoundError, match=r"which holds no release of other$"):
            store.get_manifest("other", "1.0.0")
    # A tarball gone from under its manifest.
    (root / "hello/1.1.0/hello-1.1.0.tar.gz").unlink()
    with pytest.raises(ArtefactNotFoundError) as caught:
        open_store(url).get_tarball("hello", "1.1.0")
    assert str(caught.value) == f"tarball of hello 1.1.0 is not in store {url}"

    # A store directory that does not exist: said so, for a release and for a listing.
    missing = tmp_path / "no-such-store"
    with pytest.raises(ArtefactNotFoundError) as caught:
        verify_release(open_store(missing.as_uri()), "hello", "1.1.0", [public])
    assert str(caught.value) == (f"hello 1.1.0 cannot be fetched: the store directory {missing} does "
                                 f"not exist (store {missing.as_uri()})")
    assert caught.value.hint is not None and "store.url" in caught.value.hint
    with pytest.raises(ArtefactNotFoundError, match="does not exist"):
        open_store(missing.as_uri()).list()
    (tmp_path / "empty").mkdir()
    assert open_store((tmp_path / "empty").as_uri()).list() == []  # a store nothing is in yet
    # A URL that is no store (no index at its root): said so too.
    with pytest.raises(ArtefactNotFoundError, match=r"has no index\.json at its root: the URL does "
                       "not point at a store"):
        open_store(f"{url}releases/").get_manifest("hello", "1.1.0")


def test_http_store_unreachable() -> None:
    store = open_store(f"http://127.0.0.1:{_free_port()}/store")
    with pytest.raises(ArtefactError, match="cannot be reached"):
        store.list()
