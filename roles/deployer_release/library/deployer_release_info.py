#!/usr/bin/python
"""Ansible module: report the releases installed on a node (read-only). Standard library only."""

from __future__ import annotations

# ruff: noqa: E402  (Ansible modules put their documentation before the imports)

DOCUMENTATION = r"""
---
module: deployer_release_info
short_description: Report the current, previous and staged releases under a base directory
description:
  - Reads C(<base_dir>/current) and C(<base_dir>/previous) (symlinks to C(releases/<version>))
    and lists the complete releases under C(<base_dir>/releases) (those with a
    C(.deployer-release.json) marker). Never changes anything.
options:
  base_dir:
    description: The application's base directory (for example C(/opt/hello)).
    type: path
    required: true
author: deployer
"""

EXAMPLES = r"""
- name: Read the releases installed on the node
  deployer_release_info:
    base_dir: /opt/hello
  register: releases
"""

RETURN = r"""
current:
  description: Version that C(current) points to, or an empty string.
  type: str
  returned: always
previous:
  description: Version that C(previous) points to, or an empty string.
  type: str
  returned: always
staged:
  description: Versions completely staged under C(releases/), oldest first.
  type: list
  elements: str
  returned: always
staged_sha256:
  description: The SHA-256 of the tarball each staged version was unpacked from.
  type: dict
  returned: always
ansible_facts:
  description: >-
    The same as the node's facts C(deployer_release_current), C(deployer_release_previous) and
    C(deployer_release_staged_sha256).
  type: dict
  returned: always
"""

import json
import os
from typing import Any

MARKER = ".deployer-release.json"


def linked_version(base_dir: str, name: str) -> str:
    """The release the link ``<base_dir>/<name>`` (``current``, ``previous``) points to, by a
    relative or an absolute target: the name of a directory directly in ``<base_dir>/releases``
    (not a hidden staging one). '' when the link is missing, dangling, or points anywhere else.
    The same function is in deployer_release_info and deployer_release_switch (each module is
    sent to the node on its own); tests/unit/test_modules_release.py checks that they agree."""
    try:
        target = os.readlink(os.path.join(base_dir, name))
    except OSError:
        return ""
    resolved = os.path.normpath(os.path.join(base_dir, target))
    version = os.path.basename(resolved)
    if (
        os.path.dirname(resolved) != os.path.join(base_dir, "releases")
        or version.startswith(".")
        or not os.path.isdir(resolved)
    ):
        return ""
    return version


def staged_releases(base_dir: str) -> list[tuple[str, str]]:
    """(version, tarball SHA-256) of each completely staged release, oldest first."""
    releases = os.path.join(base_dir, "releases")
    found: list[tuple[float, str, str]] = []
    try:
        names = os.listdir(releases)
    except OSError:
        return []
    for name in names:
        marker = os.path.join(releases, name, MARKER)
        try:
            with open(marker, encoding="utf-8") as handle:
                data = json.load(handle)
            stamp = os.stat(marker).st_mtime
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("version") == name:
            found.append((stamp, name, str(data.get("sha256") or "")))
    return [(name, sha256) for _, name, sha256 in sorted(found)]


def run(params: dict[str, Any]) -> dict[str, Any]:
    base_dir = os.path.abspath(params["base_dir"])
    staged = staged_releases(base_dir)
    return {
        "changed": False,
        "base_dir": base_dir,
        "current": linked_version(base_dir, "current"),
        "previous": linked_version(base_dir, "previous"),
        "staged": [name for name, _ in staged],
        "staged_sha256": dict(staged),
    }


ARGUMENT_SPEC: dict[str, Any] = {"base_dir": {"type": "path", "required": True}}


def execute(params: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
    """The whole task on validated parameters (it only reads, so check mode changes nothing).
    The releases are also the node's facts, so no set_fact task is needed."""
    result = run(params)
    result["ansible_facts"] = {
        "deployer_release_current": result["current"],
        "deployer_release_previous": result["previous"],
        "deployer_release_staged_sha256": result["staged_sha256"],
    }
    return result


def main() -> None:
    # Imported here: the deployer_release action plugin runs execute() on a bare interpreter.
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.exit_json(**execute(module.params, check_mode=module.check_mode))


if __name__ == "__main__":
    main()
