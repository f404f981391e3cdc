"""Import the roles' own Ansible modules (roles/<role>/library/<name>.py) as Python modules."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROLES = Path(__file__).resolve().parents[2] / "roles"


def load_module(role: str, name: str) -> ModuleType:
    path = ROLES / role / "library" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"role_module_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
