"""An artefact store in an S3 bucket (``s3://bucket/prefix``), through boto3.

The endpoint, region and credentials come from the standard AWS settings (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ...). Every release object is written with ``If-None-Match: *`` so that of
two concurrent publishers exactly one wins. The manifest is the commit point: it is written last
and carries its signature in its object metadata, so a reader never sees a manifest without the
signature that belongs to it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import importlib
from pathlib import Path
from typing import Any

from .._errors import ArtefactError, ImmutableArtefactError
from .._versions import validate_version
from ._build import MANIFEST_NAME, SIGNATURE_NAME
from ._manifest import APP_NAME_PATTERN, Manifest, tarball_name, validate_app_name
from ._stores import (
    INDEX_NAME,
    ArtefactStore,
    PublishResult,
    StagedRelease,
    _check_record_key,
    app_index_bytes,
    release_key,
    root_index_bytes,
    same_artefact,
)

__all__ = ["S3Store"]

_SIGNATURE_METADATA = "minisig"
_INDEX_ATTEMPTS = 5


class S3Store(ArtefactStore):
    def __init__(self, url: str, *, bucket: str, prefix: str = "") -> None:
        self.url = url
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        boto3 = importlib.import_module("boto3")
        botocore_config = importlib.import_module("botocore.config")
        self._exceptions = importlib.import_module("botocore.exceptions")
        self._client: Any = boto3.client(
            "s3",
            config=botocore_config.Config(
                connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}
            ),
        )

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _error_code(self, exc: BaseException) -> str:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    def _call(self, what: str, func: Any, **kwargs: Any) -> Any:
        """Call boto3, turning transport and credential problems into ArtefactError."""
        exc_mod = self._exceptions
        try:
            return func(**kwargs)
        except exc_mod.ClientError:
            raise
        except (exc_mod.EndpointConnectionError, exc_mod.ConnectTimeoutError,
                exc_mod.ReadTimeoutError) as exc:
            raise ArtefactError(
                f"store {self.url} cannot be reached ({what}): {exc}",
                hint="check AWS_ENDPOINT_URL and the network",
            ) from None
        except exc_mod.NoCredentialsError:
            raise ArtefactError(
                f"store {self.url}: no AWS credentials found ({what})",
                hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an AWS profile",
            ) from None
        except exc_mod.BotoCoreError as exc:
            raise ArtefactError(f"store {self.url}: {what} failed: {exc}") from None

    def _get(self, key: str) -> dict[str, Any] | None:
        try:
            response: dict[str, Any] = self._call(
                f"GET {key}", self._client.get_object, Bucket=self.bucket, Key=self._key(key)
            )
            return response
        except self._exceptions.ClientError as exc:
            if self._error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            if self._error_code(exc) == "NoSuchBucket":
                raise ArtefactError(f"store {self.url}: bucket {self.bucket!r} does not exist") \
                    from None
            raise ArtefactError(f"store {self.url}: GET {key} failed: {exc}") from None

    def _read(self, key: str) -> bytes | None:
        response = self._get(key)
        if response is None:
            return None
        body: bytes = response["Body"].read()
        return body

    def _put(self, key: str, body: bytes, *, exclusive: bool,
             metadata: dict[str, str] | None = None) -> bool:
        """Write an object; with ``exclusive``, False when it already exists (nothing written)."""
        extra: dict[str, Any] = {"IfNoneMatch": "*"} if exclusive else {}
        if metadata:
            extra["Metadata"] = metadata
        content_type = "application/json" if key.endswith(".json") else (
            "application/gzip" if key.endswith(".tar.gz") else "text/plain")
        try:
            self._call(f"PUT {key}", self._client.put_object, Bucket=self.bucket,
                       Key=self._key(key), Body=body, ContentType=content_type, **extra)
        except self._exceptions.ClientError as exc:
            if exclusive and self._error_code(exc) in ("PreconditionFailed", "412",
                                                        "ConditionalRequestConflict"):
                return False
            raise ArtefactError(f"store {self.url}: PUT {key} failed: {exc}") from None
        return True

    def put_record(self, key: str, data: bytes) -> bool:
        _check_record_key(key)
        if self._put(key, data, exclusive=True):
            return True
        if self._read(key) != data:
            raise ImmutableArtefactError(f"s3://{self.bucket}/{self._key(key)} exists with other "
                                         "bytes; records are immutable")
        return False

    def get_manifest(self, app: str, version: str) -> tuple[bytes, bytes | None]:
        validate_app_name(app, where="--app")
        validate_version(version, where="--version")
        response = self._get(release_key(app, version, MANIFEST_NAME))
        if response is None:
            raise self.not_found(app, version)
        manifest: bytes = response["Body"].read()
        # Prefer the signature committed atomically with the manifest.
        encoded = response.get("Metadata", {}).get(_SIGNATURE_METADATA)
        if encoded:
            try:
                return manifest, base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                pass
        return manifest, self._read(release_key(app, version, SIGNATURE_NAME))

    def publish(self, artefact_dir: Path) -> PublishResult:
        staged = StagedRelease.load(artefact_dir)
        m = staged.manifest
        tar_key = release_key(m.app, m.version, m.tarball)
        manifest_key = release_key(m.app, m.version, MANIFEST_NAME)
        where = f"s3://{self.bucket}/{self._key(f'{m.app}/{m.version}')}"
        if not self._put(tar_key, staged.tarball_path.read_bytes(), exclusive=True):
            existing = self._get(tar_key)
            if existing is None or existing.get("ContentLength") != m.size or (
                _sha256(existing["Body"].read()) != m.sha256
            ):
                raise ImmutableArtefactError(
                    f"{m.app} {m.version} is already published at {where} with a different "
                    "tarball; versions are immutable",
                    hint="publish under a new version",
                )
        committed = self._put(
            manifest_key, staged.manifest_bytes, exclusive=True,
            metadata={_SIGNATURE_METADATA: base64.b64encode(staged.signature).decode()},
        )
        if not committed:
            existing_manifest = self._read(manifest_key) or b""
            same_artefact(existing_manifest, staged, where=where)
            self._rewrite_indexes(m.app)
            return PublishResult(app=m.app, version=m.version, created=False)
        # The signature file for plain-HTTP readers; only the winner writes it.
        self._put(release_key(m.app, m.version, SIGNATURE_NAME), staged.signature,
                  exclusive=False)
        self._rewrite_indexes(m.app)
        return PublishResult(app=m.app, version=m.version, created=True)

    def _list_keys(self, prefix: str, *, delimiter: str | None = None) -> tuple[list[str],
                                                                                list[str]]:
        keys: list[str] = []
        prefixes: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._key(prefix)}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        while True:
            try:
                page = self._call("LIST", self._client.list_objects_v2, **kwargs)
            except self._exceptions.ClientError as exc:
                raise ArtefactError(f"store {self.url}: listing failed: {exc}") from None
            keys += [o["Key"][len(self.prefix):] for o in page.get("Contents", [])]
            prefixes += [p["Prefix"][len(self.prefix):] for p in page.get("CommonPrefixes", [])]
            if not page.get("IsTruncated"):
                return keys, prefixes
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def _rewrite_indexes(self, app: str) -> None:
        """Rebuild both indexes from the listing; repeat while concurrent publishes change it."""
        validate_app_name(app)
        previous: tuple[list[str], list[str]] | None = None
        for _ in range(_INDEX_ATTEMPTS):
            manifest_keys = sorted(
                k for k in self._list_keys(f"{app}/")[0]
                if k.endswith(f"/{MANIFEST_NAME}") and k.count("/") == 2
            )
            apps = sorted(
                p.rstrip("/") for p in self._list_keys("", delimiter="/")[1]
                if APP_NAME_PATTERN.match(p.rstrip("/"))
            )
            if (manifest_keys, apps) == previous:
                return
            manifests = []
            for key in manifest_keys:
                data = self._read(key)
                if data is not None:
                    manifests.append(Manifest.from_json(data, source=f"{self.url} {key}"))
            self._put(f"{app}/{INDEX_NAME}", app_index_bytes(app, manifests), exclusive=False)
            self._put(INDEX_NAME, root_index_bytes(apps), exclusive=False)
            previous = (manifest_keys, apps)

    def node_url(self, app: str, version: str, *, ttl: int = 900) -> str:
        validate_app_name(app, where="--app")
        validate_version(version, where="--version")
        url: str = self._call(
            "presign", self._client.generate_presigned_url, ClientMethod="get_object",
            Params={"Bucket": self.bucket,
                    "Key": self._key(release_key(app, version, tarball_name(app, version)))},
            ExpiresIn=ttl,
        )
        return url


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
