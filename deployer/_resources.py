"""Where deployer finds the files it ships besides its Python code: the Ansible content
(``playbooks/``, ``roles/``) and the sample service the lab publishes (``examples/hello-service``).

An installed wheel carries them in the package, under ``deployer/_content`` (copied there from
the top of the source tree when the wheel is built, see ``setup.py``); a source checkout (an
editable install) has them at the top of the checkout. ``$DEPLOYER_CONTENT_DIR`` overrides both.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

from ._errors import PrerequisiteError

__all__ = ["CONTENT_ENV", "content_dir", "examples_dir"]

CONTENT_ENV = "DEPLOYER_CONTENT_DIR"


def _has_content(path: Path) -> bool:
    return (path / "playbooks").is_dir() and (path / "roles").is_dir()


def content_dir() -> Path:
    """The directory holding ``playbooks/``, ``roles/`` and ``examples/``: $DEPLOYER_CONTENT_DIR,
    else the installed package's copy, else the source checkout around the package."""
    env = os.environ.get(CONTENT_ENV)
    if env:
        return Path(env)
    packaged = files(__package__ or "deployer") / "_content"
    if isinstance(packaged, Path) and _has_content(packaged):
        return packaged
    checkout = Path(__file__).resolve().parent.parent
    if _has_content(checkout):
        return checkout
    raise PrerequisiteError(
        "deployer's Ansible content (playbooks/ and roles/) is missing from this installation",
        hint=f"reinstall deployer from its wheel, or set {CONTENT_ENV} to a directory that holds "
        "playbooks/ and roles/",
    )


def examples_dir() -> Path:
    """The sample service's directory (its ``build.py`` makes the lab's releases)."""
    return content_dir() / "examples" / "hello-service"
