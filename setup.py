"""Build hook: a wheel carries deployer's Ansible content and the lab's sample service.

``playbooks/``, ``roles/``, ``examples/hello-service`` and the changelog (which the collection
built from an installed deployer carries) live once, at the top of the source tree (and of the
sdist, see MANIFEST.in). Building a wheel copies them into the package as
``deployer/_content`` (symlinks resolved, molecule scenarios and caches left out), where
``deployer._resources`` finds them. An editable install copies nothing: it reads the checkout.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CONTENT = ("playbooks", "roles", "examples/hello-service", "CHANGELOG.md")
_SKIPPED = shutil.ignore_patterns("__pycache__", "*.pyc", "molecule", ".pytest_cache", ".ansible")


def _ignore(directory: str, names: list[str]) -> set[str]:
    skipped = set(_SKIPPED(directory, names))
    # A link to a directory (playbooks/roles -> ../roles) would copy that tree a second time.
    skipped.update(n for n in names if os.path.islink(os.path.join(directory, n))
                   and os.path.isdir(os.path.join(directory, n)))
    return skipped


class BuildPyWithContent(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        dest = Path(self.build_lib) / "deployer" / "_content"
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        for rel in CONTENT:
            src = ROOT / rel
            if src.is_file():
                shutil.copy2(src, dest / rel)
            elif src.is_dir():
                shutil.copytree(src, dest / rel, ignore=_ignore)
            else:
                raise SystemExit(f"setup.py: {src} is missing; build from the source tree or its sdist")


setup(cmdclass={"build_py": BuildPyWithContent})
