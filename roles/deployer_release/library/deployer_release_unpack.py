#!/usr/bin/python
"""Ansible module: download a release tarball on the node, verify it and unpack it safely.

Standard library only (the node's system python3; its tarfile has no extraction filters, so
members are checked and written one by one here).
"""

from __future__ import annotations

# ruff: noqa: E402  (Ansible modules put their documentation before the imports)

DOCUMENTATION = r"""
---
module: deployer_release_unpack
short_description: Pull, verify and safely unpack one release into its own directory
description:
  - Downloads O(url) to a temporary file next to O(dest), refusing more than O(max_size) bytes,
    and checks its size and SHA-256.
  - Unpacks it into a temporary directory, then renames that directory to O(dest), so O(dest)
    is either absent or complete. A marker file (C(.deployer-release.json)) holding the version
    and SHA-256 is written last; when O(dest) already holds that marker with the same version and
    digest nothing is done.
  - Refuses absolute member names, C(..), links that point outside the release, device and
    FIFO members, and an unpacked size over O(max_size).
options:
  url:
    description:
      - Where the node downloads the tarball (http, https or file URL).
      - It may carry a credential (a presigned URL), so Ansible never logs it, and results and
        messages show it without its query and the password of its credentials.
    type: str
    required: true
  sha256:
    description: The expected SHA-256 of the tarball (hex).
    type: str
    required: true
  size:
    description: The expected size of the tarball in bytes; V(0) skips the size check.
    type: int
    default: 0
  max_size:
    description: The largest tarball accepted, and the largest total unpacked size, in bytes.
    type: int
    default: 536870912
  dest:
    description: The release directory to create (for example C(/opt/hello/releases/1.1.0)).
    type: path
    required: true
  version:
    description: The release version, recorded in the marker.
    type: str
    required: true
  timeout:
    description: Seconds the download may stall before it is abandoned.
    type: float
    default: 30
  make_dirs:
    description:
      - Directories the release needs outside its own (its log directory), created with mode
        C(0755) when missing, in the same task, so staging is one remote run per node.
    type: list
    elements: path
    default: []
  run_user:
    description:
      - The user the application runs as. When given, the directories of O(make_dirs) are owned
        by it and O(run_group) (created or fixed in the same task); the release itself stays
        owned by root and read-only to it.
      - V(root) is accepted with a warning.
    type: str
  run_group:
    description: The group of the directories of O(make_dirs); defaults to O(run_user).
    type: str
  create_user:
    description:
      - Create O(run_user) (a system user, no login shell, home O(user_home), not created) and
        O(run_group) when they are missing. When false a missing one fails the task.
    type: bool
    default: false
  user_home:
    description: The home directory of a user created by O(create_user).
    type: path
author: deployer
"""

EXAMPLES = r"""
- name: Stage release 1.1.0
  deployer_release_unpack:
    url: http://store.example.com/hello/1.1.0/hello-1.1.0.tar.gz
    sha256: 4f1c...
    size: 12345
    dest: /opt/hello/releases/1.1.0
    version: 1.1.0
"""

RETURN = r"""
dest:
  description: The release directory.
  type: str
  returned: always
files:
  description: Number of regular files unpacked (0 when the release was already staged).
  type: int
  returned: always
unpacked_size:
  description: Total bytes of the unpacked regular files.
  type: int
  returned: always
made_dirs:
  description: The directories of O(make_dirs) that were (or would be) created.
  type: list
  elements: str
  returned: when a directory was missing
owned_dirs:
  description: The directories of O(make_dirs) given (or that would be given) to O(run_user).
  type: list
  elements: str
  returned: when an owner was changed
created_accounts:
  description: The user and group created (or that would be), as C(user NAME) and C(group NAME).
  type: list
  elements: str
  returned: when one was missing
"""

import contextlib
import grp
import hashlib
import json
import os
import posixpath
import pwd
import re
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

MARKER = ".deployer-release.json"
VERSION_PATTERN = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+-]{0,127}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1024 * 1024


class UnpackError(Exception):
    """The release cannot be staged; the message says why."""


def read_marker(dest: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(dest, MARKER), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def shown_url(url: str) -> str:
    """The URL as messages show it: without its credentials or its query (a presigned URL's
    signature and session token live there)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "the release URL"
    query = "?<query hidden>" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) + query


def url_secrets(url: str) -> set[str]:
    """What of a download URL is secret: its query and each value in it (a presigned URL's
    signature and session token; as written and decoded) and the password of its credentials,
    the parts :func:`shown_url` leaves out. All of it when it cannot be parsed."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        return {url}
    found: set[str] = set()
    if password:
        found.update({password, urllib.parse.unquote(password)})
    if parts.query:
        found.add(parts.query)
        for pair in parts.query.split("&"):
            value = pair.partition("=")[2]
            if value:
                found.update({value, urllib.parse.unquote_plus(value)})
    return found


def result_no_log_values(params: dict[str, Any], no_log_values: set[str]) -> set[str]:
    """The values censored in this module's results: the URL's secret parts instead of the
    whole URL, so that a failed download names the URL (without them) rather than "********".
    Ansible's own log of the invocation, written before, still leaves the whole URL out."""
    url = str(params.get("url") or "")
    return (set(no_log_values) - {url}) | url_secrets(url)


def download(url: str, target: str, max_size: int, timeout: float) -> tuple[int, str]:
    """Stream url into target, stopping past max_size; returns (size, sha256 hex)."""
    shown = shown_url(url)
    # Proxies from the environment are ignored: the node talks to the store directly.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    digest = hashlib.sha256()
    size = 0
    try:
        with opener.open(url, timeout=timeout) as response, open(target, "wb") as out:
            while True:
                chunk = response.read(CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > max_size:
                    raise UnpackError(
                        f"the tarball at {shown} is larger than the limit of {max_size} bytes "
                        "(max_artefact_size); refusing it"
                    )
                digest.update(chunk)
                out.write(chunk)
    except urllib.error.HTTPError as exc:
        raise UnpackError(f"cannot download {shown}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc)).replace(url, shown)
        raise UnpackError(f"cannot download {shown}: {reason}") from None
    return size, digest.hexdigest()


def member_path(name: str) -> str:
    """The member's normalised relative path, or UnpackError if it could leave the release."""
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnpackError(f"the tarball holds an absolute path {name!r}")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"the tarball holds a path with '..': {name!r}")
    return "/".join(parts)


def check_members(archive: tarfile.TarFile, max_size: int) -> list[tuple[tarfile.TarInfo, str]]:
    """Validate every member before anything is written; returns (member, relative path)."""
    checked: list[tuple[tarfile.TarInfo, str]] = []
    total = 0
    for member in archive.getmembers():
        path = member_path(member.name)
        if not path:
            if member.isdir():
                continue
            raise UnpackError(f"the tarball holds a member with an empty name: {member.name!r}")
        if path == MARKER:
            raise UnpackError(f"the tarball holds a file named {MARKER}, which is reserved")
        if member.ischr() or member.isblk() or member.isfifo() or member.isdev():
            raise UnpackError(f"the tarball holds a device or FIFO file {member.name!r}")
        if member.issym():
            target = member.linkname
            if target.startswith("/"):
                raise UnpackError(
                    f"the tarball holds a symlink {member.name!r} -> {target!r} with an absolute target"
                )
            resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
            if resolved == ".." or resolved.startswith("../"):
                raise UnpackError(
                    f"the tarball holds a symlink {member.name!r} -> {target!r} that points "
                    "outside the release"
                )
        elif member.islnk():
            try:
                member_path(member.linkname)
            except UnpackError:
                raise UnpackError(
                    f"the tarball holds a hard link {member.name!r} -> {member.linkname!r} "
                    "that points outside the release"
                ) from None
        elif member.isfile():
            total += member.size
            if total > max_size:
                raise UnpackError(
                    f"the tarball unpacks to more than the limit of {max_size} bytes "
                    "(max_artefact_size); refusing it"
                )
        elif not member.isdir():
            raise UnpackError(f"the tarball holds an unsupported member type: {member.name!r}")
        checked.append((member, path))
    return checked


def inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def extract(
    archive: tarfile.TarFile, members: list[tuple[tarfile.TarInfo, str]], root: str
) -> tuple[int, int]:
    """Write the checked members under root; symlinks last so no write follows one."""
    real_root = os.path.realpath(root)
    files = 0
    written = 0
    links: list[tuple[tarfile.TarInfo, str]] = []
    for member, path in members:
        target = os.path.join(root, path)
        parent = os.path.dirname(target)
        os.makedirs(parent, mode=0o755, exist_ok=True)
        if not inside(real_root, os.path.realpath(parent)):
            raise UnpackError(f"the member {member.name!r} would be written outside the release")
        if member.isdir():
            os.makedirs(target, mode=0o755, exist_ok=True)
            # Never writable by the application's user: group and others get no write bit.
            os.chmod(target, (member.mode & 0o755) | 0o700)
        elif member.isfile():
            source = archive.extractfile(member)
            if source is None:
                raise UnpackError(f"cannot read the member {member.name!r} from the tarball")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            try:
                descriptor = os.open(target, flags, 0o600)
            except FileExistsError:
                raise UnpackError(f"the tarball holds {member.name!r} twice") from None
            with source, os.fdopen(descriptor, "wb") as out:
                shutil.copyfileobj(source, out, CHUNK)
            # Permissions only: no setuid/setgid/sticky bits from an archive, and no write bit
            # for group or others (the application's user must not change its release).
            os.chmod(target, member.mode & 0o755)
            files += 1
            written += member.size
        else:
            links.append((member, path))
    for member, path in links:
        target = os.path.join(root, path)
        if os.path.lexists(target):
            raise UnpackError(f"the tarball holds {member.name!r} twice")
        if member.issym():
            os.symlink(member.linkname, target)
        else:
            source = os.path.join(root, member_path(member.linkname))
            if not os.path.isfile(source) or os.path.islink(source):
                raise UnpackError(
                    f"the hard link {member.name!r} points to {member.linkname!r}, which is not "
                    "a regular file of the release"
                )
            os.link(source, target)
    # Chains of in-release symlinks can still resolve outside: check each link's real target.
    for member, path in links:
        if member.issym() and not inside(real_root, os.path.realpath(os.path.join(root, path))):
            raise UnpackError(
                f"the symlink {member.name!r} -> {member.linkname!r} resolves outside the release"
            )
    return files, written


def run(params: dict[str, Any], check_mode: bool = False) -> dict[str, Any]:
    """Stage the release described by params; raises UnpackError when it cannot."""
    dest = os.path.abspath(params["dest"]).rstrip("/")
    version = params["version"]
    sha256 = str(params["sha256"]).strip().lower()
    max_size = int(params.get("max_size") or 0)
    expected_size = int(params.get("size") or 0)
    if not VERSION_PATTERN.match(version):
        raise UnpackError(f"version {version!r} is not a valid release version")
    if not SHA256_PATTERN.match(sha256):
        raise UnpackError(f"sha256 {params['sha256']!r} is not a 64-character hex SHA-256 digest")
    if max_size <= 0:
        raise UnpackError(f"max_size must be a positive number of bytes (got {max_size})")
    if expected_size > max_size:
        raise UnpackError(
            f"the release is {expected_size} bytes, over the limit of {max_size} bytes (max_artefact_size)"
        )
    result: dict[str, Any] = {"dest": dest, "version": version, "files": 0, "unpacked_size": 0}
    marker = read_marker(dest)
    if marker and marker.get("version") == version and marker.get("sha256") == sha256:
        return {**result, "changed": False}
    if marker and marker.get("version") == version:
        raise UnpackError(
            f"{dest} already holds release {version} with SHA-256 {marker.get('sha256')}, not "
            f"{sha256}; a published version must never change (remove the directory to restage)"
        )
    if check_mode:
        return {**result, "changed": True}

    releases_dir = os.path.dirname(dest)
    os.makedirs(releases_dir, mode=0o755, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f".stage-{version}-", dir=releases_dir)
    try:
        tarball = os.path.join(work, "release.tar")
        size, digest = download(params["url"], tarball, max_size, float(params.get("timeout", 30)))
        if expected_size and size != expected_size:
            raise UnpackError(
                f"the tarball at {shown_url(params['url'])} is {size} bytes, but the manifest says "
                f"{expected_size}; refusing it"
            )
        if digest != sha256:
            raise UnpackError(
                f"the tarball at {shown_url(params['url'])} has SHA-256 {digest}, but the manifest says "
                f"{sha256}; refusing it"
            )
        tree = os.path.join(work, "tree")
        os.mkdir(tree, 0o755)
        try:
            with tarfile.open(tarball, "r:*") as archive:
                members = check_members(archive, max_size)
                files, written = extract(archive, members, tree)
        except tarfile.TarError as exc:
            raise UnpackError(
                f"the tarball at {shown_url(params['url'])} is not a readable tar archive: {exc}"
            ) from None
        os.chmod(tree, 0o755)
        # The marker is written last: its presence means the release is complete.
        with open(os.path.join(tree, MARKER), "w", encoding="utf-8") as handle:
            json.dump({"version": version, "sha256": sha256, "size": size}, handle)
            handle.write("\n")
        if os.path.lexists(dest):
            # A directory without a matching marker is a stage that never finished.
            if os.path.isdir(dest) and not os.path.islink(dest):
                shutil.rmtree(dest)
            else:
                os.unlink(dest)
        os.rename(tree, dest)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
    return {**result, "changed": True, "files": files, "unpacked_size": written}


def make_dirs(paths: list[str], check_mode: bool = False) -> list[str]:
    """Create the missing directories among ``paths`` (mode 0755); returns those created."""
    made = []
    for path in paths:
        if not os.path.isdir(path):
            if not check_mode:
                os.makedirs(path, mode=0o755, exist_ok=True)
            made.append(path)
    return made


CommandRunner = Callable[[list[str]], tuple[int, str]]
NOLOGIN_SHELLS = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")


def run_command(argv: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        return 127, str(exc)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def _exists(lookup: Callable[[str], Any], name: str) -> bool:
    try:
        lookup(name)
    except KeyError:
        return False
    return True


def ensure_account(
    user: str, group: str, home: str, *, create: bool, check_mode: bool, runner: CommandRunner
) -> list[str]:
    """Make sure ``user`` and ``group`` exist; returns those created (or that would be)."""
    missing = []
    if not _exists(grp.getgrnam, group):
        missing.append(("group", group))
    if not _exists(pwd.getpwnam, user):
        missing.append(("user", user))
    if missing and not create:
        names = " and ".join(f"{kind} {name!r}" for kind, name in missing)
        raise UnpackError(
            f"the application's {names} does not exist on the node; create it, or let the role "
            "create it (deployer_release_create_user: true)"
        )
    created = []
    shell = next((s for s in NOLOGIN_SHELLS if os.path.exists(s)), "/bin/false")
    for kind, name in missing:
        if kind == "group":
            argv = ["groupadd", "--system", name]
        else:
            argv = ["useradd", "--system", "--gid", group, "--home-dir", home or "/nonexistent",
                    "--no-create-home", "--shell", shell, name]
        if not check_mode:
            rc, output = runner(argv)
            if rc != 0:
                raise UnpackError(f"cannot create the {kind} {name!r}: {' '.join(argv)}: rc {rc}: {output}")
        created.append(f"{kind} {name}")
    return created


def own_dirs(paths: list[str], user: str, group: str, check_mode: bool) -> list[str]:
    """Give the directories among ``paths`` to user:group; returns those changed (or that would be)."""
    try:
        uid = pwd.getpwnam(user).pw_uid
        gid = grp.getgrnam(group).gr_gid
    except KeyError:  # only in check mode: the account would have been created
        return list(paths)
    owned = []
    for path in paths:
        try:
            st = os.stat(path)
        except FileNotFoundError:  # check mode: it would have been made
            owned.append(path)
            continue
        if (st.st_uid, st.st_gid) != (uid, gid):
            if not check_mode:
                os.chown(path, uid, gid)
            owned.append(path)
    return owned


ARGUMENT_SPEC: dict[str, Any] = {
    # no_log: a presigned URL is a credential. Ansible never logs it; results hide its secret
    # parts (result_no_log_values), and messages name it without them (shown_url).
    "url": {"type": "str", "required": True, "no_log": True},
    "sha256": {"type": "str", "required": True},
    "size": {"type": "int", "default": 0},
    "max_size": {"type": "int", "default": 536870912},
    "dest": {"type": "path", "required": True},
    "version": {"type": "str", "required": True},
    "timeout": {"type": "float", "default": 30},
    "make_dirs": {"type": "list", "elements": "path", "default": []},
    "run_user": {"type": "str"},
    "run_group": {"type": "str"},
    "create_user": {"type": "bool", "default": False},
    "user_home": {"type": "path"},
}

ROOT_WARNING = (
    "the application runs as root (deployer_release_run_user: root): anything that takes it "
    "over owns the node; give it an unprivileged user"
)


def execute(
    params: dict[str, Any], check_mode: bool = False, runner: CommandRunner = run_command
) -> dict[str, Any]:
    """The whole task on validated parameters: the result, with ``failed`` and ``msg`` when it
    failed, and ``warnings`` (messages) when there are any."""
    user = params.get("run_user")
    group = params.get("run_group") or user
    created: list[str] = []
    owned: list[str] = []
    try:
        if user and group:
            created = ensure_account(
                user, group, params.get("user_home") or "",
                create=bool(params.get("create_user")), check_mode=check_mode, runner=runner,
            )
        made = make_dirs(params["make_dirs"], check_mode=check_mode)
        if user and group:
            owned = own_dirs(params["make_dirs"], user, group, check_mode)
        result = run(params, check_mode=check_mode)
    except UnpackError as exc:
        return {"failed": True, "msg": f"cannot stage release {params['version']}: {exc}"}
    except OSError as exc:
        return {
            "failed": True,
            "msg": f"cannot stage release {params['version']} in {params['dest']}: {exc}",
        }
    if made:
        result.update(changed=True, made_dirs=made)
    if owned:
        result.update(changed=True, owned_dirs=owned)
    if created:
        result.update(changed=True, created_accounts=created)
    if user == "root":
        result["warnings"] = [ROOT_WARNING]
    return result


def main() -> None:
    # Imported here: the deployer_release action plugin runs execute() on a bare interpreter.
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.no_log_values = result_no_log_values(module.params, module.no_log_values)
    result = execute(module.params, check_mode=module.check_mode)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
