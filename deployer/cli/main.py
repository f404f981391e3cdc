"""Entry point of the ``deployer`` command: registers the command groups and maps errors to
exit codes (see :mod:`deployer._errors`). User errors print one clear message, never a traceback,
in one form whatever raised them::

    deployer: error: <what is wrong>
    deployer: hint: <how to fix it>
"""

from __future__ import annotations

import os
import sys

import click
from rich.markup import escape

from .. import __version__
from .._errors import DeployerError
from ._common import console


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="deployer")
def cli() -> None:
    """Zero-downtime rolling releases of signed artefacts onto fleets of VMs."""


def _register() -> None:
    from .admin_cmds import recover, unlock
    from .agent_cmds import agent, pointer, promotion
    from .artefact_cmd import artefact, keys
    from .deploy_cmds import deploy, resume, rollback
    from .gameday_cmd import gameday
    from .gate_cmds import approval, evidence, freeze, unfreeze
    from .lab_cmd import lab
    from .read_cmds import history, plan, status

    for command in (lab, keys, artefact, deploy, rollback, resume, status, history, plan, recover,
                    unlock, agent, pointer, promotion, freeze, unfreeze, approval, evidence,
                    gameday):
        cli.add_command(command)


_register()


def report_error(message: str, hint: str | None = None) -> None:
    """Print an error (and its hint) to stderr in deployer's one error format."""
    console.print(f"deployer: [bold red]error:[/] {escape(message)}", soft_wrap=True)
    if hint:
        console.print(f"deployer: [dim]hint:[/] {escape(hint)}", soft_wrap=True)


def _usage_hint(exc: click.UsageError) -> str | None:
    ctx = exc.ctx
    if ctx is None:
        return None
    usage = ctx.get_usage().replace("Usage: ", "usage: ", 1)
    return f"{' '.join(usage.split())}; see '{ctx.command_path} --help'"


def main(argv: list[str] | None = None) -> None:
    try:
        # A command's own exit code (click.exceptions.Exit) comes back as the result.
        result = cli.main(args=argv, prog_name="deployer", standalone_mode=False)
    except DeployerError as exc:
        report_error(exc.message, exc.hint)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except click.UsageError as exc:
        report_error(exc.format_message(), _usage_hint(exc))
        sys.exit(2)
    except click.ClickException as exc:
        report_error(exc.format_message())
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except Exception:
        if os.environ.get("DEPLOYER_DEBUG"):
            raise
        import traceback

        console.print("deployer: [bold red]internal error[/] (a bug in deployer; details follow)")
        console.print(traceback.format_exc(), markup=False)
        sys.exit(70)
    sys.exit(result if isinstance(result, int) else 0)
