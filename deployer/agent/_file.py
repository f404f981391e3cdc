"""A pointer in a file (and its status in another beside it): on the runner host, or on a disk
the requester can write. Written atomically (a temporary file renamed), so a reader never sees
half a value."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from .._errors import PointerError
from ._pointer import PointerValue

__all__ = ["FilePointer"]


class FilePointer:
    def __init__(self, path: Path, status_path: Path) -> None:
        self.path = path
        self.status_path = status_path

    @property
    def where(self) -> str:
        return str(self.path)

    @property
    def status_where(self) -> str:
        return str(self.status_path)

    def read(self) -> PointerValue | None:
        try:
            data = self.path.read_bytes()
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PointerError(f"pointer {self.path}: cannot read it: {exc.strerror}") from None
        # Another write, even of the same version, is another request.
        revision = f"{stat.st_mtime_ns}-{hashlib.sha256(data).hexdigest()[:16]}"
        return PointerValue(_text(data, self.path), revision)

    def write(self, text: str) -> str:
        _write(self.path, text, what="pointer")
        value = self.read()
        assert value is not None
        return value.revision

    def read_status(self) -> str | None:
        try:
            return _text(self.status_path.read_bytes(), self.status_path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise PointerError(f"status {self.status_path}: cannot read it: {exc.strerror}") from None

    def write_status(self, text: str) -> None:
        _write(self.status_path, text, what="status")


def _text(data: bytes, path: Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PointerError(f"{path}: not UTF-8 text") from None


def _write(path: Path, text: str, *, what: str) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PointerError(f"{what} {path}: cannot write it: {exc.strerror}",
                           hint="check that this user may write that directory") from None
