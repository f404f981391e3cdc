"""Action plugin for this role's modules (deployer_release_info, _unpack and _switch are links
to this file): run the module's ``execute()`` on the node's plain Python interpreter instead of
through Ansible's module wrapper.

The standard way ships a zip of the module with ansible.module_utils (about 170 KB) and, on the
node, imports ansible.module_utils.basic out of it, compiling it afresh each time: about 0.25 s
of the node's CPU per run, most of the task when the module itself takes milliseconds, and the
switch runs while the node is out of the load balancer. These modules use the standard library
only, so over a pipelining connection this plugin checks the arguments here against the
module's own ARGUMENT_SPEC and sends the module's source and the arguments on the standard
input of ``python -I -S -c <loader>``, which prints one JSON result. Without pipelining, with
arguments the module would reject (so its own message is shown), or with a path value holding
``~`` or ``$`` (Ansible's wrapper expands those on the node, with the node's home directories
and environment), the module runs the standard way. Either way the result is the same, as
Ansible's wrapper would give it: the values of ``no_log`` options censored everywhere in it
(its ``invocation``, its messages; only their secret parts where the module's
``result_no_log_values`` says so, as its main() does under the wrapper), and the warnings and
deprecations of the argument checks and of the module returned for Ansible to display.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import ModuleType
from typing import Any

from ansible import constants as C
from ansible.executor.interpreter_discovery import discover_interpreter
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator, ValidationResult
from ansible.module_utils.common.parameters import remove_values
from ansible.plugins.action import ActionBase

# The modules sit in the role's library/ next to this action_plugins/ directory, or in
# plugins/modules/ next to plugins/action/ when the role is part of the collection.
_PLUGINS = Path(__file__).resolve().parents[1]
_LIBRARY = _PLUGINS / "library" if (_PLUGINS / "library").is_dir() else _PLUGINS / "modules"
_DISCOVERED = "discovered_interpreter_python"

# Runs on the node: the module's source is executed under a name other than __main__, so its
# main() (which imports ansible.module_utils) never runs; -I keeps the SSH session's working
# directory and PYTHON* variables out of the imports; -S leaves out the site directories, which
# the modules (standard library only) do not need: their .pth files, which may import packages
# of their own, cost the node's Python tens of milliseconds at each start, and the switch runs
# while the node is out of the load balancer. No single quotes: the command is quoted again by
# each shell it passes through.
LOADER = (
    "import json,sys\n"
    "r=json.loads(sys.stdin.buffer.read())\n"
    "g={\"__name__\":\"deployer_direct_module\"}\n"
    "exec(compile(r[\"source\"],r[\"path\"],\"exec\"),g)\n"
    "f={\"__name__\":\"deployer_direct_finish\"}\n"
    "exec(r[\"finish\"],f)\n"
    "o=f[\"add_path_info\"](g[\"execute\"](r[\"params\"],r[\"check_mode\"]))\n"
    "sys.stdout.write(json.dumps(f[\"censor\"](o,r[\"no_log\"])))\n"
)

# Sent with the module and run on the node after it, as AnsibleModule's exit_json and fail_json
# do: add_path_info adds what they add to a result naming an existing ``path`` or ``dest`` (its
# owner, mode, state and size); censor hides the values of no_log options before the result
# leaves the node (Ansible logs a module's raw output at -vvv). The controller censors again
# with Ansible's own remove_values.
FINISH = """
import grp, os, pwd, stat


def censor(value, secrets):
    if isinstance(value, str):
        if value in secrets:
            return "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
        for secret in secrets:
            value = value.replace(secret, "********")
        return value
    if isinstance(value, dict):
        return {censor(k, secrets): censor(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [censor(v, secrets) for v in value]
    return value


def add_path_info(result):
    path = result.get("path", result.get("dest"))
    if path is None or not os.path.exists(path):
        return result
    st = os.lstat(os.path.expandvars(os.path.expanduser(path)))
    result["uid"], result["gid"] = st.st_uid, st.st_gid
    try:
        result["owner"] = pwd.getpwuid(st.st_uid)[0]
    except KeyError:
        result["owner"] = str(st.st_uid)
    try:
        result["group"] = grp.getgrgid(st.st_gid)[0]
    except KeyError:
        result["group"] = str(st.st_gid)
    result["mode"] = "0%03o" % stat.S_IMODE(st.st_mode)
    if os.path.islink(path):
        result["state"] = "link"
    elif os.path.isdir(path):
        result["state"] = "directory"
    elif os.stat(path).st_nlink > 1:
        result["state"] = "hard"
    else:
        result["state"] = "file"
    # SELinux's Python binding is in the site directories (-S left them out): added only on a
    # kernel with SELinux, where there can be a context to report.
    if os.path.isdir("/sys/fs/selinux"):
        try:
            import site
            site.main()
            import selinux
            if selinux.is_selinux_enabled() == 1:
                result["secontext"] = selinux.lgetfilecon_raw(path)[1]
        except (ImportError, OSError):
            pass
    result["size"] = st.st_size
    return result
"""

_LOADED: dict[str, tuple[ModuleType, str]] = {}


def load_module(name: str) -> tuple[ModuleType, str]:
    """The module file as a Python module (for its ARGUMENT_SPEC), and its source text, read once
    per process."""
    if name not in _LOADED:
        path = _LIBRARY / f"{name}.py"
        source = path.read_text(encoding="utf-8")
        module = ModuleType(f"_deployer_direct_{name}")
        module.__file__ = str(path)
        exec(compile(source, str(path), "exec"), module.__dict__)
        _LOADED[name] = (module, source)
    return _LOADED[name]


def expands_on_node(spec: dict[str, Any], raw: dict[str, Any]) -> bool:
    """Whether a path argument holds ``~`` or ``$``: Ansible's wrapper expands it on the node
    (``~user``, ``$VAR``), with values the controller does not know."""
    for name, option in spec.items():
        if name not in raw or raw[name] is None:
            continue
        if option.get("type") == "path":
            values = [raw[name]]
        elif option.get("elements") == "path" and isinstance(raw[name], (list, tuple)):
            values = list(raw[name])
        else:
            continue
        if any("~" in str(value) or "$" in str(value) for value in values):
            return True
    return False


def result_no_log_values(
    module: ModuleType, params: dict[str, Any], validated: ValidationResult
) -> set[str]:
    """The values censored in the result: the no_log options' values, or what the module's own
    ``result_no_log_values(params, values)`` makes of them (as its main() does for Ansible's
    wrapper), e.g. only the secret parts of a download URL that its messages name."""
    values = {str(v) for v in getattr(validated, "_no_log_values", set()) if v}
    narrow = getattr(module, "result_no_log_values", None)
    if callable(narrow):
        values = {str(v) for v in narrow(params, values) if v}
    return values


def check_messages(validated: ValidationResult) -> dict[str, list[Any]]:
    """The warnings and deprecations Ansible's wrapper reports for these arguments (the same
    texts as AnsibleModule's), as a module result carries them."""
    messages: dict[str, list[Any]] = {}
    warnings = [
        f"Both option {w['option']} and its alias {w['alias']} are set."
        for w in getattr(validated, "_warnings", [])
    ]
    deprecations = [
        {key: d[key] for key in ("msg", "version", "date", "collection_name") if d.get(key) is not None}
        for d in getattr(validated, "_deprecations", [])
    ]
    if warnings:
        messages["warnings"] = warnings
    if deprecations:
        messages["deprecations"] = deprecations
    return messages


class ActionModule(ActionBase):
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        task_vars = task_vars if task_vars is not None else {}
        name = self._task.action.rsplit(".", 1)[-1]
        module, source = load_module(name)
        raw = dict(self._task.args)
        validated = ArgumentSpecValidator(module.ARGUMENT_SPEC).validate(raw)
        if (
            validated.error_messages
            or self._task.delegate_to
            or not self._is_pipelining_enabled("new")
            or expands_on_node(module.ARGUMENT_SPEC, raw)
        ):
            result.update(
                self._execute_module(module_name=self._task.action, module_args=raw, task_vars=task_vars)
            )
            return result
        params: dict[str, Any] = validated.validated_parameters
        no_log_values = result_no_log_values(module, params, validated)
        interpreter, facts = self._interpreter(task_vars)
        payload = json.dumps(
            {
                "source": source,
                "path": str(_LIBRARY / f"{name}.py"),
                "params": params,
                "check_mode": bool(self._play_context.check_mode),
                "finish": FINISH,
                "no_log": sorted(no_log_values),
            }
        ).encode("utf-8")
        cmd = f"{self._compute_environment_string()} {interpreter} -I -S -c {shlex.quote(LOADER)}".strip()
        res = self._low_level_execute_command(cmd, sudoable=True, in_data=payload)
        outcome = self._read_result(res)
        outcome.setdefault("changed", False)
        for kind, messages in check_messages(validated).items():
            outcome[kind] = messages + list(outcome.get(kind) or [])
        outcome["invocation"] = {"module_args": params}
        # As AnsibleModule does: no_log values censored in the whole result, messages included.
        if no_log_values:
            outcome = remove_values(outcome, no_log_values)
        result.update(outcome)
        if facts:
            result.setdefault("ansible_facts", {}).update(facts)
        return result

    def _interpreter(self, task_vars: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The node's Python as Ansible would choose it, and the discovered-interpreter fact to
        record when it had to be discovered now."""
        configured = task_vars.get("ansible_python_interpreter")
        if configured is None:
            configured = C.config.get_config_value("INTERPRETER_PYTHON", variables=task_vars)
        interpreter = str(self._templar.template(configured)).strip()
        if not interpreter.startswith("auto"):
            return interpreter, {}
        known = (task_vars.get("ansible_facts") or {}).get(_DISCOVERED)
        if known:
            return str(known), {}
        found = str(
            discover_interpreter(
                action=self, interpreter_name="python", discovery_mode=interpreter, task_vars=task_vars
            )
        )
        return found, {_DISCOVERED: found}

    @staticmethod
    def _read_result(res: dict[str, Any]) -> dict[str, Any]:
        stdout = str(res.get("stdout", ""))
        try:
            data = json.loads(stdout)
        except ValueError:
            data = None
        if res.get("rc") == 0 and isinstance(data, dict):
            return data
        return {
            "failed": True,
            "msg": "MODULE FAILURE: the module did not return a result\n"
            + (str(res.get("stderr", "")).strip() or stdout.strip())[-2000:],
            "rc": res.get("rc"),
            "module_stdout": stdout,
            "module_stderr": str(res.get("stderr", "")),
        }


# Ansible's main process imports this plugin, under the module's name, before it queues the
# module's first task: the module is read then, and each task's worker (a fork of that process)
# starts with it, where reading and compiling it again took each task ~0.01 s (the switch's
# while its node is out of the load balancer).
_OWN_MODULE = __name__.rsplit(".", 1)[-1]
if (_LIBRARY / f"{_OWN_MODULE}.py").is_file():
    load_module(_OWN_MODULE)
