"""minisign format interoperability, both ways, against the real /usr/bin/minisign."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from artefact_helpers import MINISIGN, make_keys, run_minisign

from deployer import ConfigError, UsageError, VerificationError
from deployer.artefacts import PublicKey, generate_keypair, load_public_key, verify_signature
from deployer.artefacts._minisign import load_secret_key, sign_bytes


def test_minisign_binary_is_installed() -> None:
    assert Path(MINISIGN).is_file(), "minisign is required (scripts/bootstrap.sh installs it)"
    assert "minisign" in run_minisign("-v").stdout


def test_our_signature_verifies_with_minisign(tmp_path: Path) -> None:
    secret, public = make_keys(tmp_path)
    data = tmp_path / "data.bin"
    data.write_bytes(b"payload \x00\xff" * 100)
    key = load_secret_key(secret)
    (tmp_path / "data.bin.minisig").write_bytes(
        sign_bytes(data.read_bytes(), key, trusted_comment="app:hello\tversion:1")
    )
    result = run_minisign("-V", "-p", str(public), "-m", str(data))
    assert result.returncode == 0, result.stderr
    assert "app:hello\tversion:1" in result.stdout

    data.write_bytes(b"tampered")
    assert run_minisign("-V", "-p", str(public), "-m", str(data)).returncode != 0


def test_minisign_key_and_signature_verify_with_ours(tmp_path: Path) -> None:
    pub, sec, data = tmp_path / "m.pub", tmp_path / "m.key", tmp_path / "data"
    assert run_minisign("-G", "-W", "-p", str(pub), "-s", str(sec)).returncode == 0
    data.write_bytes(b"manifest bytes")
    for legacy in (False, True):
        sig = tmp_path / f"data.{legacy}.minisig"
        args = ["-S", "-s", str(sec), "-m", str(data), "-x", str(sig), "-t", "tc here"]
        assert run_minisign(*args, *(["-l"] if legacy else [])).returncode == 0
        prefix = base64.b64decode(sig.read_text().splitlines()[1])[:2]
        assert prefix == (b"Ed" if legacy else b"ED")
        key = load_public_key(pub)
        assert verify_signature(data.read_bytes(), sig.read_bytes(), [key]) == "tc here"
        with pytest.raises(VerificationError, match="does not match"):
            verify_signature(b"other bytes", sig.read_bytes(), [key])
    # The key id we show is the one minisign prints in its comment.
    assert load_public_key(pub).key_id_hex in pub.read_text().splitlines()[0]


def test_minisign_unencrypted_secret_key_signs_with_ours(tmp_path: Path) -> None:
    pub, sec, data = tmp_path / "m.pub", tmp_path / "m.key", tmp_path / "data"
    assert run_minisign("-G", "-W", "-p", str(pub), "-s", str(sec)).returncode == 0
    data.write_bytes(b"x" * 1000)
    (tmp_path / "data.minisig").write_bytes(
        sign_bytes(data.read_bytes(), load_secret_key(sec), trusted_comment="ours")
    )
    result = run_minisign("-V", "-p", str(pub), "-m", str(data))
    assert result.returncode == 0, result.stderr


def test_our_secret_key_is_usable_by_minisign(tmp_path: Path) -> None:
    secret, public = make_keys(tmp_path)
    data = tmp_path / "data"
    data.write_bytes(b"signed by minisign with our key")
    assert run_minisign("-S", "-W", "-s", str(secret), "-m", str(data)).returncode == 0
    sig = (tmp_path / "data.minisig").read_bytes()
    verify_signature(data.read_bytes(), sig, [load_public_key(public)])


def test_encrypted_minisign_key(tmp_path: Path) -> None:
    pub, sec, data = tmp_path / "e.pub", tmp_path / "e.key", tmp_path / "data"
    created = run_minisign("-G", "-p", str(pub), "-s", str(sec), stdin="s3cret\ns3cret\n")
    assert created.returncode == 0, created.stderr
    with pytest.raises(ConfigError, match="password"):
        load_secret_key(sec)
    key = load_secret_key(sec, password="s3cret")
    data.write_bytes(b"data")
    (tmp_path / "data.minisig").write_bytes(sign_bytes(b"data", key, trusted_comment="enc"))
    result = run_minisign("-V", "-p", str(pub), "-m", str(data))
    assert result.returncode == 0, result.stderr


def test_untrusted_key_and_altered_comment_are_refused(tmp_path: Path) -> None:
    secret, public = make_keys(tmp_path, "one")
    _, other_public = make_keys(tmp_path, "two")
    sig = sign_bytes(b"data", load_secret_key(secret), trusted_comment="original")
    with pytest.raises(VerificationError, match="not trusted"):
        verify_signature(b"data", sig, [load_public_key(other_public)])
    altered = sig.replace(b"trusted comment: original", b"trusted comment: 0riginal")
    with pytest.raises(VerificationError, match="trusted comment"):
        verify_signature(b"data", altered, [load_public_key(public)])
    # Same key id, different key: the signature must not verify.
    real = load_public_key(public)
    impostor = PublicKey(key_id=real.key_id, key=load_public_key(other_public).key)
    with pytest.raises(VerificationError):
        verify_signature(b"data", sig, [impostor])
    with pytest.raises(VerificationError, match="not a minisign signature"):
        verify_signature(b"data", b"garbage", [real])


def test_keypair_files_and_overwrite(tmp_path: Path) -> None:
    pair = generate_keypair(tmp_path, "k")
    assert pair.secret_path.stat().st_mode & 0o777 == 0o600
    assert load_public_key(pair.public_path).key_id_hex == pair.key_id_hex
    before = pair.secret_path.read_bytes()
    with pytest.raises(UsageError, match="--force"):
        generate_keypair(tmp_path, "k")
    assert pair.secret_path.read_bytes() == before
    assert generate_keypair(tmp_path, "k", force=True).secret_path.read_bytes() != before


def test_bad_public_key_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_public_key(tmp_path / "missing.pub")
    bad = tmp_path / "bad.pub"
    bad.write_text("untrusted comment: x\nnot base64!!\n")
    with pytest.raises(ConfigError, match=r"bad\.pub"):
        load_public_key(bad)
    bad.write_text("untrusted comment: x\n" + base64.b64encode(b"Ed" + bytes(10)).decode() + "\n")
    with pytest.raises(ConfigError, match="not a minisign"):
        load_public_key(bad)


def test_a_key_id_reads_as_minisign_prints_it_without_leading_zeros() -> None:
    from deployer.artefacts._minisign import _key_id_hex

    assert _key_id_hex(bytes.fromhex("d3d9e83ed8fe3503")) == "335FED83EE8D9D3"
    assert _key_id_hex(bytes.fromhex("0123456789abcdef")) == "EFCDAB8967452301"
