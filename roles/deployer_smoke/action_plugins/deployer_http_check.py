"""Action plugin for deployer_http_check: when the task runs on the controller itself
(``delegate_to: localhost``, the controller reaching the application's address), check in this
process instead of starting a Python interpreter for it. The smoke check sits on the path where
a node is out of the load balancer, so the start-up saved is downtime saved. Anywhere else the
module runs as usual on the target host.
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
_MODULE_FILE = _LIBRARY / "deployer_http_check.py"
_LOCAL_TRANSPORTS = frozenset({"local", "ansible.builtin.local"})
_module: ModuleType | None = None


def _check_module() -> ModuleType:
    global _module
    if _module is None:
        spec = importlib.util.spec_from_file_location("_deployer_http_check_inprocess", _MODULE_FILE)
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
        module = _check_module()
        validated = ArgumentSpecValidator(module.ARGUMENT_SPEC).validate(dict(self._task.args))
        if validated.error_messages:
            result.update(failed=True, msg="; ".join(validated.error_messages))
            return result
        params: dict[str, Any] = validated.validated_parameters
        outcome = module.run(params)
        result.update(outcome)
        message = module.failure(params, outcome)
        if message:
            result.update(failed=True, msg=message)
        return result


# Loaded as Ansible's main process imports this plugin, before it queues the first check: each
# task's worker (a fork of that process) starts with the module loaded, where loading it took
# each smoke check ~0.007 s while its node is out of the load balancer.
if _MODULE_FILE.is_file():
    _check_module()
