"""Action plugin for deployer_haproxy: when the task runs on the controller itself (the runtime
API is reachable from here, e.g. ``delegate_to: localhost``), call the module's code in this
process instead of starting a Python interpreter for it. Each drain and enable sits on the path
where a node is out of the load balancer, so the interpreter start-up saved there is downtime
saved.

On a load balancer's own host (``delegate_to: lb1``) over a pipelining connection, with the
host's Python named in the inventory, the module's source and its checked arguments go on the
standard input of ``python -I -S -c <loader>``, which runs its ``run()`` and prints one JSON
result: the module uses the standard library only, so neither the site directories (-S) nor the
~170 KB zip of Ansible's wrapper, and the ~0.25 s of the host's CPU it takes to unpack and
import each time, are needed there.
Anywhere else (no pipelining, an interpreter to discover, arguments the module would reject) the
module runs the standard way. The result is the same either way.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
from pathlib import Path
from types import ModuleType
from typing import Any

from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase

# The module sits in the role's library/, or in plugins/modules/ within the collection.
_PLUGINS = Path(__file__).resolve().parents[1]
_LIBRARY = _PLUGINS / "library" if (_PLUGINS / "library").is_dir() else _PLUGINS / "modules"
_MODULE_FILE = _LIBRARY / "deployer_haproxy.py"
_LOCAL_TRANSPORTS = frozenset({"local", "ansible.builtin.local"})
_module: ModuleType | None = None

# Runs on the load balancer's host: the module's source under a name other than __main__ (so
# its main(), which needs Ansible, never runs), then its run(). No single quotes: the command is
# quoted again by each shell it passes through.
LOADER = (
    "import json,sys\n"
    "r=json.loads(sys.stdin.buffer.read())\n"
    "g={\"__name__\":\"deployer_haproxy_direct\"}\n"
    "exec(compile(r[\"source\"],r[\"path\"],\"exec\"),g)\n"
    "try:\n"
    " o=g[\"run\"](r[\"params\"],r[\"check_mode\"])\n"
    " w=g[\"drain_warning\"](r[\"params\"],o)\n"
    " o={\"result\":o,\"warning\":w}\n"
    "except g[\"RuntimeApiError\"] as e:\n"
    " o={\"error\":str(e)}\n"
    "sys.stdout.write(json.dumps(o))\n"
)


def _haproxy_module() -> ModuleType:
    global _module
    if _module is None:
        spec = importlib.util.spec_from_file_location("_deployer_haproxy_inprocess", _MODULE_FILE)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {_MODULE_FILE}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _module = module
    return _module


class ActionModule(ActionBase):
    _supports_check_mode = True

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result: dict[str, Any] = super().run(tmp, task_vars)
        task_vars = task_vars if task_vars is not None else {}
        module = _haproxy_module()
        local = getattr(self._connection, "transport", "") in _LOCAL_TRANSPORTS
        validated = ArgumentSpecValidator(module.ARGUMENT_SPEC).validate(dict(self._task.args))
        interpreter = None if local else self._named_interpreter(task_vars)
        if not local and (
            validated.error_messages or interpreter is None or not self._is_pipelining_enabled("new")
        ):
            result.update(
                self._execute_module(
                    module_name=self._task.action, module_args=self._task.args, task_vars=task_vars
                )
            )
            return result
        if validated.error_messages:
            result.update(failed=True, msg="; ".join(validated.error_messages))
            return result
        params: dict[str, Any] = validated.validated_parameters
        names = {"backend": params["backend"], "server": params["server"]}
        check_mode = bool(self._play_context.check_mode)
        if interpreter is not None:
            outcome, warning, error = self._run_on_host(interpreter, params, check_mode)
        else:
            try:
                outcome = module.run(params, check_mode=check_mode)
                warning, error = module.drain_warning(params, outcome), ""
            except module.RuntimeApiError as exc:
                outcome, warning, error = {}, "", str(exc)
        if error:
            result.update(failed=True, msg=error, **names)
            return result
        result.update(outcome, **names)
        if interpreter is not None:
            result["invocation"] = {"module_args": params}  # as Ansible's wrapper reports it
        if warning:
            result["warnings"] = [warning]
        return result

    def _named_interpreter(self, task_vars: dict[str, Any]) -> str | None:
        """The Python the inventory names for the host the task runs on (the delegated one for
        ``delegate_to``); None when it must be discovered (the standard way does that)."""
        host_vars = task_vars
        if self._task.delegate_to:
            host_vars = (task_vars.get("ansible_delegated_vars") or {}).get(self._task.delegate_to) or {}
        configured = host_vars.get("ansible_python_interpreter")
        if not configured:
            return None
        interpreter = str(self._templar.template(configured)).strip()
        return None if not interpreter or interpreter.startswith("auto") else interpreter

    def _run_on_host(
        self, interpreter: str, params: dict[str, Any], check_mode: bool
    ) -> tuple[dict[str, Any], str, str]:
        """(the module's result, its drain warning, an error message) from one run of its code
        on the host the task runs on."""
        payload = json.dumps({
            "source": _MODULE_FILE.read_text(encoding="utf-8"), "path": str(_MODULE_FILE),
            "params": params, "check_mode": check_mode,
        }).encode("utf-8")
        cmd = f"{self._compute_environment_string()} {interpreter} -I -S -c {shlex.quote(LOADER)}".strip()
        res = self._low_level_execute_command(cmd, sudoable=True, in_data=payload)
        stdout = str(res.get("stdout", ""))
        try:
            data = json.loads(stdout)
        except ValueError:
            data = None
        if res.get("rc") != 0 or not isinstance(data, dict):
            detail = (str(res.get("stderr", "")).strip() or stdout.strip())[-2000:]
            return {}, "", f"MODULE FAILURE: deployer_haproxy did not return a result\n{detail}"
        if "error" in data:
            return {}, "", str(data["error"])
        return dict(data["result"]), str(data.get("warning") or ""), ""


# Loaded as Ansible's main process imports this plugin, before it queues the first drain: each
# task's worker (a fork of that process) starts with the module loaded instead of loading it
# again for each drain and enable.
if _MODULE_FILE.is_file():
    _haproxy_module()
