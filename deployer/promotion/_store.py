"""Where promotion records are kept: a directory (``file:///dir``) or an S3 prefix
(``s3://bucket/prefix``), written once and never changed::

    <root>/<app>/<version>/<environment>/<deployment>.json          the record
    <root>/<app>/<version>/<environment>/<deployment>.json.minisig  its signature

Every object is created exclusively (a hard link of a complete file; S3's ``If-None-Match:
*``): a record is never overwritten, and its signature is written first, so a reader that sees
a record always finds its signature. The lab's HTTP store is read-only, so it cannot hold them.
"""

from __future__ import annotations

import importlib
import os
import secrets
import urllib.parse
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from .._errors import ArtefactError, UsageError

__all__ = ["FileRecordStore", "RecordStore", "S3RecordStore", "open_record_store"]


class RecordStore(ABC):
    """A store of immutable objects by key."""

    url: str

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Write ``key`` if it does not exist; False (nothing written) when it does."""

    @abstractmethod
    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is none."""

    @abstractmethod
    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a directory-like prefix ending in '/'), sorted."""

    def where(self, key: str) -> str:
        return f"{self.url.rstrip('/')}/{key}"


class FileRecordStore(RecordStore):
    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key

    def create(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, path)  # atomic, and fails when the record exists
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise ArtefactError(f"promotion store {self.url}: cannot write {key}: {exc.strerror}",
                                hint="check that this user may write the store's directory") from None
        return True

    def read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ArtefactError(f"promotion store {self.url}: cannot read {key}: {exc.strerror}") from None

    def keys(self, prefix: str) -> list[str]:
        if not self.root.is_dir():
            # A missing store is a mistake in the config, not a store without records.
            raise ArtefactError(f"promotion store {self.url}: {self.root} is not a directory",
                                hint="create it, or check promotion.store")
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root)) for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )


class S3RecordStore(RecordStore):
    """Records in S3, through boto3 (endpoint, region and credentials from the standard AWS
    settings, as for the artefact store)."""

    def __init__(self, url: str, *, bucket: str, prefix: str = "") -> None:
        self.url = url
        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        boto3 = importlib.import_module("boto3")
        botocore_config = importlib.import_module("botocore.config")
        self._errors = importlib.import_module("botocore.exceptions")
        self._client: Any = boto3.client("s3", config=botocore_config.Config(
            connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}))

    def _call(self, what: str, func: Any, **kwargs: Any) -> Any:
        try:
            return func(**kwargs)
        except self._errors.ClientError:
            raise
        except self._errors.NoCredentialsError:
            raise ArtefactError(f"promotion store {self.url}: no AWS credentials found ({what})",
                                hint="set AWS credentials (an instance role, a profile)") from None
        except self._errors.BotoCoreError as exc:
            raise ArtefactError(f"promotion store {self.url}: {what} failed: {exc}") from None

    @staticmethod
    def _code(exc: BaseException) -> str:
        return str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))

    def create(self, key: str, data: bytes) -> bool:
        try:
            self._call(f"PUT {key}", self._client.put_object, Bucket=self.bucket,
                       Key=self.prefix + key, Body=data, IfNoneMatch="*",
                       ContentType="application/json" if key.endswith(".json") else "text/plain")
        except self._errors.ClientError as exc:
            if self._code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise ArtefactError(f"promotion store {self.url}: PUT {key} failed: {exc}") from None
        return True

    def read(self, key: str) -> bytes | None:
        try:
            response = self._call(f"GET {key}", self._client.get_object, Bucket=self.bucket,
                                  Key=self.prefix + key)
        except self._errors.ClientError as exc:
            if self._code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise ArtefactError(f"promotion store {self.url}: GET {key} failed: {exc}") from None
        body: bytes = response["Body"].read()
        return body

    def keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self.prefix + prefix}
        while True:
            try:
                page = self._call("LIST", self._client.list_objects_v2, **kwargs)
            except self._errors.ClientError as exc:
                raise ArtefactError(f"promotion store {self.url}: listing failed: {exc}") from None
            keys += [o["Key"][len(self.prefix):] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(keys)
            kwargs["ContinuationToken"] = page["NextContinuationToken"]


def open_record_store(url: str) -> RecordStore:
    """The promotion store at ``url``: ``file:///dir`` or ``s3://bucket/prefix``."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise UsageError(f"promotion store {url!r}: a file store needs an absolute path, as "
                             "file:///srv/promotions")
        return FileRecordStore(url, Path(urllib.parse.unquote(parsed.path)))
    if parsed.scheme == "s3" and parsed.netloc:
        return S3RecordStore(url, bucket=parsed.netloc, prefix=parsed.path.strip("/"))
    raise UsageError(f"promotion store {url!r}: use file:///dir or s3://bucket/prefix (records are "
                     "written, so a read-only http:// store cannot hold them)")
