"""The roles, their modules and their plugins as the Ansible collection ``deployer.vm``.

The collection is assembled from the very content deployer runs (:func:`deployer._resources.
content_dir`), so there is one copy of it: each role without its ``library/``,
``action_plugins/`` and molecule scenarios, each role's modules in ``plugins/modules/`` and its
action plugins in ``plugins/action/`` (links resolved), and a ``galaxy.yml`` whose version is
deployer's. ``ansible-galaxy collection build`` then makes the tarball that
``ansible-galaxy collection install`` takes. The roles' tasks call their modules by short name
(role-embedded modules have no other); in the collection they call them by full name.

``python -m deployer._collection [--out DIR] [--assemble-only DIR]`` (``scripts/build-collection``).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from . import __version__
from ._errors import DeployerError, PrerequisiteError
from ._resources import content_dir

__all__ = ["NAME", "NAMESPACE", "assemble", "build", "galaxy_manifest"]

NAMESPACE = "deployer"
NAME = "vm"
_SEMVER = re.compile(r"^\d+\.\d+\.\d+$")
_ROLE_SKIP = shutil.ignore_patterns(
    "library", "action_plugins", "filter_plugins", "molecule", "__pycache__", "*.pyc", ".ansible",
    ".pytest_cache",
)
_PLUGIN_DIRS = (("library", "modules"), ("action_plugins", "action"), ("filter_plugins", "filter"))

_README = """\
# Ansible collection {namespace}.{name}

The roles of [deployer](https://pypi.org/project/deployer/) {version}, for your own playbooks:

| Role | What it does |
|---|---|
{roles}

Modules: {modules}.

Install the tarball (Galaxy is not needed) and call the roles by their full names:

```sh
ansible-galaxy collection install {namespace}-{name}-{version}.tar.gz
```

```yaml
- name: Roll a release onto the web nodes, one at a time
  hosts: web
  serial: 1
  tasks:
    - name: Take the node out of HAProxy
      ansible.builtin.include_role:
        name: {namespace}.{name}.deployer_lb_haproxy
        tasks_from: drain
```

Each role's README (`roles/<role>/README.md`) lists its variables.
"""


def galaxy_manifest(version: str = __version__) -> dict[str, Any]:
    """The collection's ``galaxy.yml``; its version is deployer's (X.Y.Z)."""
    if not _SEMVER.match(version):
        raise DeployerError(
            f"deployer's version {version!r} is not a collection version (X.Y.Z)",
            hint="release the collection from a final version, e.g. 1.2.0",
        )
    return {
        "namespace": NAMESPACE,
        "name": NAME,
        "version": version,
        "readme": "README.md",
        "authors": ["deployer maintainers"],
        "description": "Zero-downtime releases of signed artefacts onto VMs behind HAProxy: "
        "pull and switch releases, drain and enable nodes, smoke-check them.",
        "license": ["Apache-2.0"],
        "tags": ["deployment", "haproxy", "release", "rollback", "tools"],
        "dependencies": {},
        "build_ignore": [".ansible-lint", "*.pyc", "__pycache__"],
    }


class _Dumper(yaml.SafeDumper):
    """Indents lists under their key, as yamllint (and so ansible-lint) wants."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _qualify(role: Path, modules: list[str]) -> None:
    """Call the collection's modules by full name in the role's task files."""
    names = "|".join(re.escape(m) for m in modules)
    action = re.compile(rf"^(?P<lead>\s*(?:-\s+)?)(?P<name>{names}):(?=\s*$)", re.MULTILINE)
    for tasks in sorted((role / "tasks").glob("*.yml")):
        text = tasks.read_text()
        qualified = action.sub(rf"\g<lead>{NAMESPACE}.{NAME}.\g<name>:", text)
        if qualified != text:
            tasks.write_text(qualified)


def _qualify_filters(role: Path, filters: list[str]) -> None:
    """Call the collection's filters by full name in the role's templates (a collection's
    filters are found by full name only; each filter file holds the one filter it is named after)."""
    names = "|".join(re.escape(f) for f in filters)
    use = re.compile(rf"(?<=\|)(?P<space>\s*)(?P<name>{names})\b")
    for template in sorted((role / "templates").glob("*.j2")):
        text = template.read_text()
        qualified = use.sub(rf"\g<space>{NAMESPACE}.{NAME}.\g<name>", text)
        if qualified != text:
            template.write_text(qualified)


def _role_summary(role: Path) -> str:
    meta = yaml.safe_load((role / "meta" / "main.yml").read_text()) or {}
    return str((meta.get("galaxy_info") or {}).get("description", "")).strip()


def assemble(dest: Path, *, content: Path | None = None, version: str = __version__) -> Path:
    """Lay the collection out in ``dest`` (which must be missing or empty); returns ``dest``."""
    source = content or content_dir()
    roles = sorted(p for p in (source / "roles").iterdir() if (p / "tasks").is_dir())
    if not roles:
        raise PrerequisiteError(f"no roles found in {source / 'roles'}")
    if dest.exists() and any(dest.iterdir()):
        raise DeployerError(f"{dest} is not empty", hint="give a new or empty directory")
    manifest = galaxy_manifest(version)
    modules: list[str] = []
    filters: list[str] = []
    for role in roles:
        shutil.copytree(role, dest / "roles" / role.name, ignore=_ROLE_SKIP)
        for role_dir, kind in _PLUGIN_DIRS:
            for plugin in sorted((role / role_dir).glob("*.py")):
                if plugin.name.startswith("_"):
                    continue  # shared code, reached through the links to it
                target = dest / "plugins" / kind / plugin.name
                if target.exists():
                    raise DeployerError(f"two roles have a {kind} plugin named {plugin.stem}")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(plugin.resolve(), target)
                if kind == "modules":
                    modules.append(plugin.stem)
                elif kind == "filter":
                    filters.append(plugin.stem)
    if modules:
        for role in roles:
            _qualify(dest / "roles" / role.name, modules)
    if filters:
        for role in roles:
            _qualify_filters(dest / "roles" / role.name, filters)
    (dest / "meta").mkdir()
    (dest / "meta" / "runtime.yml").write_text('---\nrequires_ansible: ">=2.16.0"\n')
    (dest / "galaxy.yml").write_text("---\n" + yaml.dump(manifest, Dumper=_Dumper, sort_keys=False))
    table = "\n".join(f"| `{NAMESPACE}.{NAME}.{r.name}` | {_role_summary(r)} |" for r in roles)
    (dest / "README.md").write_text(
        _README.format(
            namespace=NAMESPACE, name=NAME, version=version, roles=table,
            modules=", ".join(f"`{NAMESPACE}.{NAME}.{m}`" for m in modules),
        )
    )
    changelog = source / "CHANGELOG.md"
    if changelog.is_file():
        shutil.copyfile(changelog, dest / "CHANGELOG.md")
    return dest


def _ansible_galaxy() -> str:
    beside = Path(sys.executable).parent / "ansible-galaxy"
    found = str(beside) if beside.is_file() else shutil.which("ansible-galaxy")
    if found is None:
        raise PrerequisiteError("ansible-galaxy not found", hint="install ansible-core")
    return found


def build(out: Path, *, content: Path | None = None, version: str = __version__) -> Path:
    """Assemble the collection and build its tarball into ``out``; returns the tarball's path."""
    out.mkdir(parents=True, exist_ok=True)
    work = out / f".{NAMESPACE}-{NAME}-build"
    shutil.rmtree(work, ignore_errors=True)
    try:
        assemble(work, content=content, version=version)
        done = subprocess.run(
            [_ansible_galaxy(), "collection", "build", str(work), "--output-path", str(out), "--force"],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            raise DeployerError(f"ansible-galaxy collection build failed: {done.stderr.strip()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out / f"{NAMESPACE}-{NAME}-{version}.tar.gz"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployer._collection",
        description=f"Build the Ansible collection {NAMESPACE}.{NAME} from deployer's roles.",
    )
    parser.add_argument("--out", type=Path, default=Path("dist"), help="where the tarball goes")
    parser.add_argument(
        "--assemble-only", type=Path, metavar="DIR",
        help="only lay the collection out in DIR (for ansible-lint), build no tarball",
    )
    args = parser.parse_args(argv)
    try:
        if args.assemble_only is not None:
            print(assemble(args.assemble_only))
        else:
            print(build(args.out))
    except DeployerError as exc:
        print(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
