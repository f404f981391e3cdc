"""What counts as a secret, and the Redactor that takes secrets out of text, events and files;
the config's runner section that names more secrets and how many runs are kept."""

from __future__ import annotations

import json
import stat
import urllib.parse
from pathlib import Path

import pytest

from deployer.adapters.redaction import (
    REDACTED,
    Redactor,
    env_secrets,
    extravar_secrets,
    secret_name,
    url_secrets,
)

PRESIGNED_V4 = (
    "http://127.0.0.1:9000/releases/hello/1.1.0/hello-1.1.0.tar.gz?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAPLANTED0001%2F20261130%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20261130T120000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host"
    "&X-Amz-Security-Token=IQoJplanted%2Fsession%2Btoken%3D%3D"
    "&X-Amz-Signature=5b1e9d4c0a7f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d"
)


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("AWS_SECRET_ACCESS_KEY", True),
        ("AWS_SESSION_TOKEN", True),
        ("AWS_ACCESS_KEY_ID", True),
        ("DEPLOYER_KEY_PASSWORD", True),
        ("PGPASSWORD", True),
        ("GITHUB_TOKEN", True),
        ("db_password", True),
        ("api-key", True),
        ("MYAPIKEY", True),
        ("SMTP_PASS", True),
        ("GPG_PASSPHRASE", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("SSH_AUTH_SOCK", True),
        ("hello_private_cert", True),
        ("KEYBOARD", False),
        ("KEYBOARD_LAYOUT", False),
        ("MONKEY_COUNT", False),
        ("PATH", False),
        ("PWD", False),
        ("HOME", False),
        ("AWS_DEFAULT_REGION", False),
        ("AWS_ENDPOINT_URL", False),
        ("deployer_release_url", False),
        ("PASSAGE", False),
        ("AUTHOR", False),
    ],
)
def test_secret_names(name: str, secret: bool) -> None:
    assert secret_name(name) is secret


def test_the_signed_parts_of_a_url() -> None:
    found = url_secrets(PRESIGNED_V4)
    query = urllib.parse.urlsplit(PRESIGNED_V4).query
    assert query in found
    assert "IQoJplanted%2Fsession%2Btoken%3D%3D" in found and "IQoJplanted/session+token==" in found
    assert "5b1e9d4c0a7f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d" in found
    assert url_secrets("https://deploy:s3cr%40t@store.example.com/hello/") == {"s3cr%40t", "s3cr@t"}
    assert url_secrets("https://store.example.com/hello/1.1.0/hello.tar.gz") == set()
    assert url_secrets("not a url?x=planted") == set()
    assert url_secrets("http://[::1/broken?x=y") == set()


def test_secrets_of_the_environment_and_of_the_extra_variables() -> None:
    env = {"AWS_SECRET_ACCESS_KEY": "planted-aws", "HOME": "/root", "HELLO_DSN": "planted-dsn",
           "DB_TOKEN": ""}
    assert env_secrets(env) == {"planted-aws"}
    assert env_secrets(env, {"HELLO_DSN"}) == {"planted-aws", "planted-dsn"}
    extravars = {
        "deployer_release_url": PRESIGNED_V4,
        "deployer_app": "hello",
        "vault_password": "planted-vault",
        "hello_dsn": "postgres://hello:planted-pw@db/hello",
        "deployer_release_environment": {"DB_PASSWORD": "planted-db", "GREETING": "hello world",
                                         "PIN_CODE": 12345678, "PAYMENT_TOKEN": ["planted-listed"]},
        "deployer_health_path": "/health",
        "hello_api_key_enabled": True,
    }
    found = extravar_secrets(extravars, {"hello_dsn"})
    assert {"planted-vault", "planted-db", "planted-listed", "postgres://hello:planted-pw@db/hello",
            "planted-pw"} <= found
    assert urllib.parse.urlsplit(PRESIGNED_V4).query in found
    assert {"hello world", "hello", "/health", "True", "1"}.isdisjoint(found)
    assert "12345678" not in found  # PIN_CODE is not a secret name...
    assert "12345678" in extravar_secrets({"PIN_TOKEN": 12345678})  # ...a token is


def test_the_redactor_finds_every_written_form_and_leaves_the_rest() -> None:
    secret = 'pl"anted/se+cret=é'
    r = Redactor({secret, "short", ""})
    assert r.count > 0 and bool(r)
    assert r.text(f"a {secret} b") == f"a {REDACTED} b"
    assert r.text(json.dumps({"v": secret})) == json.dumps({"v": REDACTED})
    assert r.text(json.dumps({"v": secret}, ensure_ascii=False)) == json.dumps({"v": REDACTED})
    assert r.text(f"?t={urllib.parse.quote(secret, safe='')}") == f"?t={REDACTED}"
    assert r.text(f"?t={urllib.parse.quote(secret)}") == f"?t={REDACTED}"
    assert r.text(f"?t={urllib.parse.quote_plus(secret)}") == f"?t={REDACTED}"
    assert r.text("a short text") == "a short text"  # too short to look for
    assert r.value({"k": [secret, 3, None, {"n": f"x{secret}"}]}) == {
        "k": [REDACTED, 3, None, {"n": f"x{REDACTED}"}]}
    nothing = Redactor(())
    assert not nothing and nothing.text(secret) == secret and nothing.value([secret]) == [secret]


def test_events_are_redacted_in_place_and_untouched_when_clean() -> None:
    r = Redactor({"planted-secret"})
    event = {"event": "runner_on_failed", "stdout": "fatal: [node1]: FAILED! planted-secret",
             "event_data": {"res": {"msg": "cannot use planted-secret", "rc": 1}}}
    r.event(event)
    assert "planted-secret" not in json.dumps(event)
    assert event["event_data"]["res"] == {"msg": f"cannot use {REDACTED}", "rc": 1}
    clean = {"event": "runner_on_ok", "event_data": {"res": {"changed": False}}}
    data = clean["event_data"]
    r.event(clean)
    assert clean["event_data"] is data  # nothing rebuilt


def test_files_are_rewritten_without_secrets_and_stay_private(tmp_path: Path) -> None:
    r = Redactor({"planted-secret"})
    dirty = tmp_path / "stdout"
    dirty.write_bytes(b"line 1\nurl ?sig=planted-secret&x=1\n")
    dirty.chmod(0o644)
    clean = tmp_path / "rc"
    clean.write_text("0")
    before = clean.stat()
    assert r.file(dirty) and not r.file(clean) and not r.file(tmp_path / "missing")
    assert dirty.read_bytes() == b"line 1\nurl ?sig=<redacted>&x=1\n"
    assert stat.S_IMODE(dirty.stat().st_mode) == 0o600
    assert clean.stat().st_mtime_ns == before.st_mtime_ns  # not rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rc", "stdout"]  # no temporary left
