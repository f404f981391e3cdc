"""A pointer in AWS SSM Parameter Store, through boto3: the version to run in one String
parameter, the runner's status in another. A requester needs ``ssm:PutParameter`` on the first
and ``ssm:GetParameter`` on both, nothing else (the README shows the policy); each write gives
the parameter a new version, the pointer's revision.

Credentials come from the standard AWS chain (the runner host's instance role), or a profile
read from a credentials file the config names; ``endpoint_url`` points elsewhere than AWS (a
VPC endpoint; moto's server on loopback in the tests and the lab).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from .._errors import PointerError
from ._pointer import PointerValue

__all__ = ["SsmPointer"]


class SsmPointer:
    def __init__(self, parameter: str, status_parameter: str, *, region: str | None = None,
                 endpoint_url: str | None = None, profile: str | None = None,
                 credentials_file: Path | None = None) -> None:
        self.parameter = parameter
        self.status_parameter = status_parameter
        boto3 = importlib.import_module("boto3")
        botocore_session = importlib.import_module("botocore.session")
        botocore_config = importlib.import_module("botocore.config")
        self._errors = importlib.import_module("botocore.exceptions")
        core = botocore_session.Session(profile=profile)
        if credentials_file is not None:
            core.set_config_variable("credentials_file", str(credentials_file))
        session = boto3.Session(botocore_session=core, region_name=region)
        self._client: Any = session.client(
            "ssm", endpoint_url=endpoint_url,
            config=botocore_config.Config(connect_timeout=5, read_timeout=15,
                                          retries={"max_attempts": 3}))

    @property
    def where(self) -> str:
        return f"ssm:{self.parameter}"

    @property
    def status_where(self) -> str:
        return f"ssm:{self.status_parameter}"

    def _call(self, what: str, name: str, func: Any, **kwargs: Any) -> Any:
        errors = self._errors
        try:
            return func(**kwargs)
        except errors.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "ParameterNotFound":
                return None
            message = exc.response.get("Error", {}).get("Message", "") or str(exc)
            hint = (f"this identity needs ssm:{what} on {name}" if code in
                    ("AccessDeniedException", "AccessDenied") else None)
            raise PointerError(f"ssm:{name}: {what} failed: {code}: {message}", hint=hint) from None
        except errors.NoCredentialsError:
            raise PointerError(f"ssm:{name}: no AWS credentials found",
                               hint="give the runner an instance role, or set pointer.profile "
                               "and pointer.credentials_file") from None
        except errors.BotoCoreError as exc:
            raise PointerError(f"ssm:{name}: {what} failed: {exc}") from None

    def _get(self, name: str) -> tuple[str, int] | None:
        response = self._call("GetParameter", name, self._client.get_parameter, Name=name)
        if response is None:
            return None
        parameter = response["Parameter"]
        return str(parameter["Value"]), int(parameter["Version"])

    def _put(self, name: str, text: str) -> int:
        response = self._call("PutParameter", name, self._client.put_parameter, Name=name,
                              Value=text, Type="String", Overwrite=True)
        return int(response["Version"]) if response else 0

    def read(self) -> PointerValue | None:
        found = self._get(self.parameter)
        return None if found is None else PointerValue(found[0], str(found[1]))

    def write(self, text: str) -> str:
        return str(self._put(self.parameter, text))

    def read_status(self) -> str | None:
        found = self._get(self.status_parameter)
        return None if found is None else found[0]

    def write_status(self, text: str) -> None:
        self._put(self.status_parameter, text)
