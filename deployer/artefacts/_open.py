"""Opening a store by its URL: the one module that knows every kind of store (``_stores`` holds
the file and HTTP stores and what all stores share, ``_s3`` the S3 store, which builds on it)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from .._errors import UsageError
from ._s3 import S3Store
from ._stores import ArtefactStore, FileStore, HttpStore

__all__ = ["open_store"]


def open_store(url: str) -> ArtefactStore:
    """The store at ``url``: ``file:///dir``, ``http(s)://host/path`` or ``s3://bucket/prefix``."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise UsageError(
                f"store URL {url!r}: a file store needs an absolute path, as file:///srv/store"
            )
        return FileStore(url, Path(urllib.parse.unquote(parsed.path)))
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise UsageError(f"store URL {url!r} has no host")
        return HttpStore(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise UsageError(f"store URL {url!r} has no bucket (use s3://bucket/prefix)")
        return S3Store(url, bucket=parsed.netloc, prefix=parsed.path.strip("/"))
    raise UsageError(
        f"store URL {url!r}: unsupported scheme; use file://, http://, https:// or s3://"
    )
