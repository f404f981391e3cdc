"""A pointer at an HTTP(S) URL: read with a conditional GET (``If-None-Match`` with the last
ETag: an unchanged pointer costs a 304 and no body), written with PUT; the status is PUT to
its own URL. A bearer token, when configured, comes from an environment variable."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request

from .._errors import PointerError
from ._pointer import PointerValue

__all__ = ["HttpPointer"]


class HttpPointer:
    def __init__(self, url: str, status_url: str, *, token_env: str | None = None,
                 timeout: float = 10.0) -> None:
        self.url = url
        self.status_url = status_url
        self.token_env = token_env
        self.timeout = timeout
        # The last value read and its ETag, for conditional GETs.
        self._cached: tuple[str, PointerValue] | None = None

    @property
    def where(self) -> str:
        return self.url

    @property
    def status_where(self) -> str:
        return self.status_url

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "deployer-agent"}
        if self.token_env:
            token = os.environ.get(self.token_env)
            if not token:
                raise PointerError(f"pointer {self.url}: ${self.token_env} is not set",
                                   hint=f"set {self.token_env} to the pointer's bearer token")
            headers["Authorization"] = f"Bearer {token}"
        return headers

    def _get(self, url: str, etag: str | None) -> tuple[int, bytes, str]:
        headers = self._headers()
        if etag:
            headers["If-None-Match"] = etag
        request = urllib.request.Request(url, headers=headers, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, response.read(), response.headers.get("ETag", "")
        except urllib.error.HTTPError as exc:
            if exc.code in (304, 404):
                return exc.code, b"", ""
            raise PointerError(f"GET {url} answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PointerError(f"GET {url} failed: {reason}") from None

    def _put(self, url: str, text: str) -> str:
        request = urllib.request.Request(
            url, data=text.encode("utf-8"), method="PUT",
            headers={**self._headers(), "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return str(response.headers.get("ETag", ""))
        except urllib.error.HTTPError as exc:
            raise PointerError(f"PUT {url} answered {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PointerError(f"PUT {url} failed: {reason}") from None

    def read(self) -> PointerValue | None:
        etag = self._cached[0] if self._cached else None
        status, body, new_etag = self._get(self.url, etag)
        if status == 304 and self._cached is not None:
            return self._cached[1]
        if status == 404:
            self._cached = None
            return None
        text = body.decode("utf-8", errors="replace")
        # Without an ETag the body's digest names the value.
        value = PointerValue(text, new_etag or hashlib.sha256(body).hexdigest()[:16])
        self._cached = (new_etag, value) if new_etag else None
        return value

    def write(self, text: str) -> str:
        etag = self._put(self.url, text)
        self._cached = None
        return etag or hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def read_status(self) -> str | None:
        status, body, _ = self._get(self.status_url, None)
        return None if status == 404 else body.decode("utf-8", errors="replace")

    def write_status(self, text: str) -> None:
        self._put(self.status_url, text)
