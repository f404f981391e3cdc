"""Action plugin for deployer_haproxy: when the task runs on the controller itself (the runtime
API is reachable from here, e.g. ``delegate_to: localhost``), call the module's code in this
process instead of starting a Python interpreter for it. Each drain and enable sits on the path
where a node is out of the load balancer, so the interpreter start-up saved there is downtime
saved. Anywhere else the module runs as usual on the target host.
"""

from __future__ import annotations

import importlib.util
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
        if getattr(self._connection, "transport", "") not in _LOCAL_TRANSPORTS:
            result.update(
                self._execute_module(
                    module_name=self._task.action, module_args=self._task.args, task_vars=task_vars
                )
            )
            return result
        module = _haproxy_module()
        validated = ArgumentSpecValidator(module.ARGUMENT_SPEC).validate(dict(self._task.args))
        if validated.error_messages:
            result.update(failed=True, msg="; ".join(validated.error_messages))
            return result
        params: dict[str, Any] = validated.validated_parameters
        names = {"backend": params["backend"], "server": params["server"]}
        try:
            outcome = module.run(params, check_mode=bool(self._play_context.check_mode))
        except module.RuntimeApiError as exc:
            result.update(failed=True, msg=str(exc), **names)
            return result
        result.update(outcome, **names)
        warning = module.drain_warning(params, outcome)
        if warning:
            result["warnings"] = [warning]
        return result
