"""The S3 store against moto's S3 server on 127.0.0.1 (real HTTP, real boto3)."""

from __future__ import annotations

import calendar
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from artefact_helpers import make_keys, make_signed
from moto.server import ThreadedMotoServer

from deployer import ImmutableArtefactError, VerificationError
from deployer.artefacts import PublishResult, open_store, verify_release

pytestmark = pytest.mark.daemons  # moto's S3 server


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    name = f"releases-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def test_s3_round_trip(tmp_path: Path, bucket: str) -> None:
    secret, public = make_keys(tmp_path)
    store = open_store(f"s3://{bucket}/releases")
    built = make_signed(tmp_path, secret, version="2.0.0", payload="two")
    assert store.publish(built.dir) == PublishResult("hello", "2.0.0", created=True)
    assert store.publish(make_signed(tmp_path, secret, version="1.0.0").dir).created
    assert [m.version for m in store.list("hello")] == ["1.0.0", "2.0.0"]
    assert [m.app for m in store.list()] == ["hello", "hello"]
    manifest = verify_release(store, "hello", "2.0.0", [public])
    assert manifest.sha256 == built.manifest.sha256
    keys = {o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]}
    assert {"releases/index.json", "releases/hello/index.json",
            "releases/hello/2.0.0/hello-2.0.0.tar.gz", "releases/hello/2.0.0/manifest.json",
            "releases/hello/2.0.0/manifest.json.minisig"} <= keys
    url = store.node_url("hello", "2.0.0", ttl=120)
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.read() == built.tarball.read_bytes()


def _expiry(url: str) -> tuple[str, float]:
    """How a presigned URL says when it expires, read from its query as S3 reads it:
    ("s3v4", seconds after its X-Amz-Date) or ("s3", the moment in epoch seconds)."""
    query = dict(parse_qsl(urlsplit(url).query))
    if "X-Amz-Algorithm" in query:  # signature version 4
        assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and "X-Amz-Signature" in query
        return "s3v4", float(query["X-Amz-Expires"])
    assert {"AWSAccessKeyId", "Signature", "Expires"} <= set(query), url  # version 2, query string
    return "s3", float(query["Expires"])


@pytest.mark.parametrize("signature", ["as configured by default", "s3v4"])
def test_a_presigned_url_expires_after_the_ttl_asked_for(
    tmp_path: Path, bucket: str, monkeypatch: pytest.MonkeyPatch, signature: str
) -> None:
    aws_config = tmp_path / "aws-config"
    aws_config.write_text("[default]\ns3 =\n    signature_version = s3v4\n" if signature == "s3v4" else "")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(aws_config))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # a session that reads that file
    secret, _ = make_keys(tmp_path)
    store = open_store(f"s3://{bucket}/releases")
    store.publish(make_signed(tmp_path, secret, version="2.0.0").dir)
    expiries = []
    for ttl in (120, 3600):
        before = time.time()
        url = store.node_url("hello", "2.0.0", ttl=ttl)
        after = time.time()
        version, expiry = _expiry(url)
        if signature == "s3v4":
            assert version == "s3v4", url
        if version == "s3v4":
            assert expiry == ttl, url
            signed = calendar.timegm(time.strptime(dict(parse_qsl(urlsplit(url).query))["X-Amz-Date"],
                                                   "%Y%m%dT%H%M%SZ"))
            assert int(before) <= signed <= after, url
        else:  # signed between before and after, to the second
            assert int(before) + ttl <= expiry <= after + ttl + 1, (before, ttl, url)
        expiries.append(expiry)
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
    assert expiries[0] != expiries[1]


def test_s3_immutability(tmp_path: Path, bucket: str) -> None:
    secret, _ = make_keys(tmp_path)
    store = open_store(f"s3://{bucket}")
    first = make_signed(tmp_path, secret, payload="first", subdir="a")
    assert store.publish(first.dir).created
    assert not store.publish(make_signed(tmp_path, secret, payload="first", subdir="b").dir).created
    with pytest.raises(ImmutableArtefactError):
        store.publish(make_signed(tmp_path, secret, payload="other", subdir="c").dir)
    assert store.get_tarball("hello", "1.0.0") == first.tarball.read_bytes()
    assert store.get_manifest("hello", "1.0.0")[0] == first.manifest_path.read_bytes()


def test_s3_refuses_unsigned(tmp_path: Path, bucket: str) -> None:
    secret, _ = make_keys(tmp_path)
    built = make_signed(tmp_path, secret)
    (built.dir / "manifest.json.minisig").unlink()
    with pytest.raises(VerificationError, match="unsigned"):
        open_store(f"s3://{bucket}").publish(built.dir)
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket=bucket)


def _race(store_url: str, dirs: list[Path]) -> list[Any]:
    barrier = threading.Barrier(len(dirs))
    outcomes: list[Any] = [None] * len(dirs)

    def publish(i: int) -> None:
        store = open_store(store_url)  # one client per publisher, as separate machines would
        barrier.wait()
        try:
            outcomes[i] = store.publish(dirs[i])
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(len(dirs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return outcomes


@pytest.mark.parametrize("same_tarball", [False, True])
def test_s3_concurrent_publishers_exactly_one_wins(tmp_path: Path, bucket: str,
                                                   same_tarball: bool) -> None:
    secret, public = make_keys(tmp_path)
    store_url = f"s3://{bucket}/race"
    for round_ in range(4):
        version = f"1.0.{round_}"
        dirs = [
            make_signed(tmp_path, secret, version=version, subdir=f"{version}-{i}",
                        payload="same" if same_tarball else f"publisher {i}").dir
            for i in range(2)
        ]
        outcomes = _race(store_url, dirs)
        winners = [o for o in outcomes if isinstance(o, PublishResult) and o.created]
        assert len(winners) == 1, outcomes
        loser = next(o for o in outcomes if o is not winners[0])
        if same_tarball:
            assert isinstance(loser, PublishResult) and not loser.created
        else:
            assert isinstance(loser, ImmutableArtefactError)
        # Whatever the interleaving, what is stored verifies as one consistent release.
        verify_release(open_store(store_url), "hello", version, [public])
