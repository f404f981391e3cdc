"""The deployer_release action plugin's argument handling (action_plugins/_direct_module.py):
which arguments go the standard way, and what it keeps of Ansible's checks. Its results are
compared with Ansible's wrapper on a real node in tests/e2e/test_playbooks.py."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.module_utils.common.parameters import remove_values
from role_modules import load_module

ROLE = Path(__file__).resolve().parents[2] / "roles" / "deployer_release"


def load_plugin() -> ModuleType:
    path = ROLE / "action_plugins" / "_direct_module.py"
    spec = importlib.util.spec_from_file_location("deployer_direct_module_plugin", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plugin = load_plugin()
unpack = load_module("deployer_release", "deployer_release_unpack")
SPEC = unpack.ARGUMENT_SPEC


@pytest.mark.parametrize(
    ("args", "on_node"),
    [
        ({"dest": "/opt/hello/releases/1.0.0"}, False),
        ({"dest": "~/releases/1.0.0"}, True),
        ({"dest": "~hello/releases/1.0.0"}, True),
        ({"dest": "$NODE_ONLY_VARIABLE/releases/1.0.0"}, True),  # unknown here: unchanged by a check
        ({"dest": "/opt/${APP}/releases/1.0.0"}, True),
        ({"dest": "/opt/hello", "make_dirs": ["/var/log/hello", "$HOME/state"]}, True),
        ({"dest": "/opt/hello", "url": "http://store/~hello/$x.tar.gz"}, False),  # not a path option
    ],
)
def test_a_path_holding_a_tilde_or_a_dollar_goes_the_standard_way(
    args: dict[str, Any], on_node: bool
) -> None:
    assert plugin.expands_on_node(SPEC, args) is on_node


def test_alias_warnings_and_deprecations_of_the_checks_are_kept() -> None:
    spec = {
        "name": {"type": "str", "aliases": ["app"]},
        "old": {"type": "str", "removed_in_version": "9.0", "removed_from_collection": "deployer.vm"},
    }
    validated = ArgumentSpecValidator(spec).validate({"name": "a", "app": "b", "old": "x"})
    messages = plugin.check_messages(validated)
    assert messages["warnings"] == ["Both option name and its alias app are set."]
    [deprecation] = messages["deprecations"]
    assert deprecation["version"] == "9.0" and "old" in deprecation["msg"]
    assert plugin.check_messages(ArgumentSpecValidator(spec).validate({"name": "a"})) == {}


def censored_result(url: str) -> dict[str, Any]:
    """A failed download's result as the plugin returns it (and the module's main() under
    Ansible's wrapper): censored with the values the module says are secret."""
    args = {"url": url, "sha256": "0" * 64, "dest": "/opt/hello/releases/1.0.0", "version": "1.0.0"}
    validated = ArgumentSpecValidator(SPEC).validate(args)
    assert url in validated._no_log_values  # Ansible never logs the URL itself
    values = plugin.result_no_log_values(unpack, validated.validated_parameters, validated)
    result = {"failed": True, "msg": f"cannot download {unpack.shown_url(url)}: refused",
              "invocation": {"module_args": validated.validated_parameters}}
    censored: dict[str, Any] = remove_values(result, values)
    return censored


def test_a_failed_download_names_the_url_without_its_secret_parts() -> None:
    plain = "http://127.0.0.1:8099/hello/1.1.0/hello-1.1.0.tar.gz"
    assert censored_result(plain)["msg"] == f"cannot download {plain}: refused"

    signed = ("https://user:PLANTEDPASS@bucket.s3/hello.tar.gz?X-Amz-Credential=AKIA%2FPLANTED1"
              "&X-Amz-Signature=PLANTED2")
    censored = censored_result(signed)
    assert "PLANTED" not in repr(censored) and "AKIA/PLANTED1" not in repr(censored)
    assert censored["msg"] == "cannot download https://bucket.s3/hello.tar.gz?<query hidden>: refused"
    assert censored["invocation"]["module_args"]["url"].startswith("https://user:********@bucket.s3/")
    # A URL that cannot be parsed is censored whole.
    assert unpack.url_secrets("http://[::1/x?sig=PLANTED") == {"http://[::1/x?sig=PLANTED"}


def test_a_result_naming_a_path_gets_what_ansibles_wrapper_adds(tmp_path: Path) -> None:
    from ansible.module_utils.basic import AnsibleModule

    class Wrapper:
        """AnsibleModule's add_path_info without building a module (SELinux off, as here)."""

        def user_and_group(self, path: str) -> tuple[int, int]:
            return AnsibleModule.user_and_group(self, path)

        def selinux_enabled(self) -> bool:
            return False

    finish: dict[str, Any] = {}
    exec(plugin.FINISH, finish)
    (tmp_path / "dir").mkdir(mode=0o750)
    (tmp_path / "file").write_text("x" * 10)
    os.link(tmp_path / "file", tmp_path / "hard")
    (tmp_path / "link").symlink_to("dir")
    (tmp_path / "single").write_text("")
    for name in ("dir", "file", "hard", "link", "single", "missing"):
        for key in ("dest", "path"):
            direct = finish["add_path_info"]({key: str(tmp_path / name), "changed": False})
            standard = AnsibleModule.add_path_info(Wrapper(), {key: str(tmp_path / name), "changed": False})
            assert direct == standard, (name, key)
    assert finish["add_path_info"]({"changed": True}) == {"changed": True}


def test_the_node_censors_no_log_values_as_ansible_does() -> None:
    finish: dict[str, Any] = {}
    exec(plugin.FINISH, finish)
    secret = "https://store/x.tar.gz?sig=PLANTED"
    result = {"failed": True, "msg": f"cannot download {secret}: refused", "url": secret,
              "list": [secret, 1, None], "nested": {"note": f"{secret}!"}}
    assert finish["censor"](result, [secret]) == remove_values(result, {secret})
