"""Ed25519 signatures in the minisign format, so keys and signatures interoperate with the
standard ``minisign`` tool in both directions.

Formats (all binary blobs are base64 on the second line of a two-line text block):

* public key: ``"Ed" || key_id(8) || ed25519_pk(32)``
* secret key: ``"Ed" || kdf_alg(2) || "B2" || salt(32) || opslimit(8, LE) || memlimit(8, LE)
  || key_id(8) || ed25519_sk(64: seed || pk) || blake2b-256 checksum(32)``; the last 104 bytes
  are XORed with an scrypt stream when ``kdf_alg`` is ``"Sc"``, and stored as is when it is zero.
* signature: an untrusted comment, ``alg(2) || key_id(8) || sig(64)`` where ``alg`` is ``"Ed"``
  (signature of the message) or ``"ED"`` (signature of its blake2b-512 digest), a trusted
  comment, and a global signature of ``sig || trusted_comment``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .._errors import ConfigError, UsageError, VerificationError

__all__ = [
    "KeyPair",
    "PublicKey",
    "SecretKey",
    "generate_keypair",
    "load_public_key",
    "load_secret_key",
    "parse_public_key",
    "sign_bytes",
    "signer_key_id",
    "verify_signature",
]

_ALG_ED = b"Ed"  # legacy: the signature covers the message itself
_ALG_PREHASHED = b"ED"  # the signature covers blake2b-512(message)
_KDF_NONE = b"\x00\x00"
_KDF_SCRYPT = b"Sc"
_CHECKSUM_BLAKE2B = b"B2"
_UNTRUSTED = "untrusted comment: "
_TRUSTED = "trusted comment: "
_KEYNUM_SK_LEN = 8 + 64 + 32
_SECRET_KEY_LEN = 2 + 2 + 2 + 32 + 8 + 8 + _KEYNUM_SK_LEN


@dataclass(frozen=True)
class PublicKey:
    """A minisign public key: its 8-byte id and the raw 32-byte Ed25519 key."""

    key_id: bytes
    key: bytes

    @property
    def key_id_hex(self) -> str:
        """The id as minisign prints it (a little-endian 64-bit number in upper-case hex)."""
        return _key_id_hex(self.key_id)


@dataclass(frozen=True)
class SecretKey:
    key_id: bytes
    seed: bytes
    public: bytes

    @property
    def key_id_hex(self) -> str:
        return _key_id_hex(self.key_id)


@dataclass(frozen=True)
class KeyPair:
    secret_path: Path
    public_path: Path
    key_id_hex: str


def _key_id_hex(key_id: bytes) -> str:
    # minisign prints the id as a 64-bit number ("%" PRIX64): no leading zeros.
    return f"{int.from_bytes(key_id, 'little'):X}"


def _b64_line(raw: str, *, what: str, source: str) -> bytes:
    try:
        return base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{what} is not valid base64", file=source) from None


def _two_lines(text: str, *, what: str, source: str) -> tuple[str, str]:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith(_UNTRUSTED):
        raise ConfigError(
            f"not a minisign {what}: expected an 'untrusted comment:' line then a base64 line",
            file=source,
        )
    return lines[0][len(_UNTRUSTED):], lines[1]


def parse_public_key(text: str, *, source: str) -> PublicKey:
    """Parse the contents of a minisign public key file (or a bare base64 key)."""
    stripped = text.strip()
    raw_line = stripped if "\n" not in stripped and not stripped.startswith(_UNTRUSTED) else (
        _two_lines(text, what="public key", source=source)[1]
    )
    raw = _b64_line(raw_line, what="public key", source=source)
    if len(raw) != 42 or raw[:2] != _ALG_ED:
        raise ConfigError(
            "not a minisign Ed25519 public key (wrong length or algorithm)", file=source
        )
    return PublicKey(key_id=raw[2:10], key=raw[10:])


def load_public_key(path: Path) -> PublicKey:
    """Read a minisign public key file; ConfigError naming the file when it is missing or bad."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("public key file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read public key file: {exc}", file=str(path)) from None
    return parse_public_key(text, source=str(path))


def _scrypt_params(opslimit: int, memlimit: int) -> tuple[int, int, int]:
    """(N, r, p) for given ops/mem limits, as libsodium's scryptsalsa208sha256 derives them."""
    opslimit = max(opslimit, 32768)
    r = 8
    if opslimit < memlimit // 32:
        p = 1
        max_n = opslimit // (r * 4)
    else:
        max_n = memlimit // (r * 128)
    n_log2 = 1
    while n_log2 < 63 and (1 << n_log2) <= max_n // 2:
        n_log2 += 1
    if opslimit >= memlimit // 32:
        max_rp = min((opslimit // 4) // (1 << n_log2), 0x3FFFFFFF)
        p = max_rp // r
    return 1 << n_log2, r, max(p, 1)


def load_secret_key(path: Path, *, password: str | None = None) -> SecretKey:
    """Read a minisign secret key file, unencrypted (``minisign -G -W``) or password-protected."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("secret key file not found", file=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read secret key file: {exc}", file=source) from None
    raw = _b64_line(_two_lines(text, what="secret key", source=source)[1],
                    what="secret key", source=source)
    if len(raw) != _SECRET_KEY_LEN or raw[:2] != _ALG_ED or raw[4:6] != _CHECKSUM_BLAKE2B:
        raise ConfigError(
            "not a minisign Ed25519 secret key (wrong length or algorithm)", file=source
        )
    kdf = raw[2:4]
    salt = raw[6:38]
    opslimit = int.from_bytes(raw[38:46], "little")
    memlimit = int.from_bytes(raw[46:54], "little")
    keynum = raw[54:]
    if kdf == _KDF_SCRYPT:
        if password is None:
            raise ConfigError(
                "secret key is password-protected and no password was given",
                file=source,
                hint="pass the password, or use an unencrypted key (minisign -G -W)",
            )
        n, r, p = _scrypt_params(opslimit, memlimit)
        stream = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n, r=r, p=p,
            maxmem=128 * r * (n + p + 2) + (1 << 20), dklen=_KEYNUM_SK_LEN,
        )
        keynum = bytes(a ^ b for a, b in zip(keynum, stream, strict=True))
    elif kdf != _KDF_NONE:
        raise ConfigError(f"unsupported key derivation {kdf!r} in secret key", file=source)
    key_id, sk, checksum = keynum[:8], keynum[8:72], keynum[72:]
    expected = hashlib.blake2b(_ALG_ED + key_id + sk, digest_size=32).digest()
    # minisign -W leaves the checksum of unencrypted keys zeroed; the public-half check below
    # still catches corruption.
    unchecked = kdf == _KDF_NONE and checksum == bytes(32)
    if not unchecked and not hmac.compare_digest(checksum, expected):
        what = "wrong password or corrupted key" if kdf == _KDF_SCRYPT else "corrupted key"
        raise ConfigError(f"secret key checksum mismatch ({what})", file=source)
    seed, public = sk[:32], sk[32:]
    derived = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        Encoding.Raw, PublicFormat.Raw
    )
    if derived != public:
        raise ConfigError("secret key is inconsistent (public half does not match)", file=source)
    return SecretKey(key_id=key_id, seed=seed, public=public)


def _write_new(path: Path, data: bytes, *, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def generate_keypair(out_dir: Path, name: str = "release", *, force: bool = False) -> KeyPair:
    """Write ``<out_dir>/<name>.key`` (unencrypted, mode 0600) and ``<name>.pub``, both readable
    by ``minisign``. Refuses to overwrite existing files unless ``force``."""
    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"key name {name!r} must be a plain file name (no '/', not hidden)")
    out_dir = Path(out_dir)
    secret_path = out_dir / f"{name}.key"
    public_path = out_dir / f"{name}.pub"
    if not force:
        for p in (secret_path, public_path):
            if p.exists():
                raise UsageError(
                    f"{p} already exists; refusing to overwrite a key (pass --force to replace it; "
                    "signatures by the old key then stop verifying)",
                )
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = secrets.token_bytes(8)
    sk = seed + public
    checksum = hashlib.blake2b(_ALG_ED + key_id + sk, digest_size=32).digest()
    secret_raw = (
        _ALG_ED + _KDF_NONE + _CHECKSUM_BLAKE2B + bytes(32) + bytes(8) + bytes(8)
        + key_id + sk + checksum
    )
    id_hex = _key_id_hex(key_id)
    secret_text = (
        f"{_UNTRUSTED}minisign secret key {id_hex}\n"
        f"{base64.b64encode(secret_raw).decode()}\n"
    )
    public_text = (
        f"{_UNTRUSTED}minisign public key {id_hex}\n"
        f"{base64.b64encode(_ALG_ED + key_id + public).decode()}\n"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_new(secret_path, secret_text.encode(), mode=0o600)
    _write_new(public_path, public_text.encode(), mode=0o644)
    return KeyPair(secret_path=secret_path, public_path=public_path, key_id_hex=id_hex)


def sign_bytes(data: bytes, key: SecretKey, *, trusted_comment: str,
               untrusted_comment: str | None = None) -> bytes:
    """A minisign signature file (prehashed ``ED`` algorithm, as current minisign writes)."""
    if "\n" in trusted_comment or "\r" in trusted_comment:
        raise UsageError("a trusted comment must be a single line")
    private = Ed25519PrivateKey.from_private_bytes(key.seed)
    signature = private.sign(hashlib.blake2b(data, digest_size=64).digest())
    global_signature = private.sign(signature + trusted_comment.encode("utf-8"))
    untrusted = untrusted_comment or f"signature from minisign secret key {key.key_id_hex}"
    return (
        f"{_UNTRUSTED}{untrusted}\n"
        f"{base64.b64encode(_ALG_PREHASHED + key.key_id + signature).decode()}\n"
        f"{_TRUSTED}{trusted_comment}\n"
        f"{base64.b64encode(global_signature).decode()}\n"
    ).encode()


@dataclass(frozen=True)
class _ParsedSignature:
    algorithm: bytes
    key_id: bytes
    signature: bytes
    trusted_comment: str
    global_signature: bytes


def parse_signature(signature: bytes) -> _ParsedSignature:
    """Parse a minisign signature file; VerificationError when it is malformed."""
    try:
        lines = signature.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise VerificationError("signature is not a minisign signature file (not UTF-8)") from None
    lines = [line for line in lines if line.strip()]
    if (len(lines) != 4 or not lines[0].startswith(_UNTRUSTED)
            or not lines[2].startswith(_TRUSTED)):
        raise VerificationError(
            "signature is not a minisign signature file (expected untrusted comment, "
            "signature, trusted comment, global signature)"
        )
    try:
        sig_raw = base64.b64decode(lines[1].strip(), validate=True)
        global_raw = base64.b64decode(lines[3].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError("signature file holds invalid base64") from None
    if len(sig_raw) != 74 or sig_raw[:2] not in (_ALG_ED, _ALG_PREHASHED) or len(global_raw) != 64:
        raise VerificationError("signature file has an unknown algorithm or a wrong length")
    return _ParsedSignature(
        algorithm=sig_raw[:2], key_id=sig_raw[2:10], signature=sig_raw[10:],
        trusted_comment=lines[2][len(_TRUSTED):], global_signature=global_raw,
    )


def signer_key_id(signature: bytes) -> str:
    """The id of the key that made ``signature`` (as minisign prints it); VerificationError when
    it is not a minisign signature. Says who signed, not that the signature is good."""
    return _key_id_hex(parse_signature(signature).key_id)


def verify_signature(data: bytes, signature: bytes, trusted_keys: Sequence[PublicKey]) -> str:
    """Check ``signature`` (a minisign signature file) over ``data`` by one of ``trusted_keys``
    and return its trusted comment; VerificationError saying why otherwise."""
    parsed = parse_signature(signature)
    key = next((k for k in trusted_keys if hmac.compare_digest(k.key_id, parsed.key_id)), None)
    if key is None:
        trusted = ", ".join(k.key_id_hex for k in trusted_keys) or "none"
        raise VerificationError(
            f"signed by key {_key_id_hex(parsed.key_id)}, which is not trusted "
            f"(trusted keys: {trusted})"
        )
    public = Ed25519PublicKey.from_public_bytes(key.key)
    message = data if parsed.algorithm == _ALG_ED else hashlib.blake2b(
        data, digest_size=64).digest()
    try:
        public.verify(parsed.signature, message)
    except InvalidSignature:
        raise VerificationError(
            f"signature by key {key.key_id_hex} does not match the data (content was altered "
            "or signed by another key)"
        ) from None
    try:
        public.verify(parsed.global_signature,
                      parsed.signature + parsed.trusted_comment.encode("utf-8"))
    except InvalidSignature:
        raise VerificationError(
            f"trusted comment of the signature by key {key.key_id_hex} was altered"
        ) from None
    return parsed.trusted_comment
