"""`deployer lab up|down|status`: the local lab fleet."""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.table import Table

from .._errors import LabError
from ..lab import Lab, LabSpec, LabStatus, PathLab, PathSpec, PathStatus, default_lab_dir
from ._common import console, out, print_json


def _dir_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--dir",
        "lab_dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Lab directory (default: $DEPLOYER_LAB_DIR or ~/.local/share/deployer/lab).",
    )(func)


@click.group()
def lab() -> None:
    """Build and manage the local lab fleet."""


@lab.command()
@click.option("--nodes", type=int, default=3, show_default=True, help="Number of nodes.")
@_dir_option
@click.option("--net", default="127.0.1", show_default=True, help="Node N gets address NET.N.")
@click.option("--ssh-port", type=int, default=None, help="sshd port on every node (default: 22 if free).")
@click.option("--frontend", default=None, metavar="ADDR:PORT",
              help="HAProxy frontend (default: 127.0.0.1:8080 for the default lab, else a free port).")
@click.option("--store", default=None, metavar="ADDR:PORT",
              help="Artefact store HTTP address (default: 127.0.0.1:8081 for the default lab, else a "
              "free port).")
@click.option("--app", default="hello", show_default=True, help="Application name.")
@click.option("--seed", default=None, metavar="VERSION", help="Install this release on every node.")
@click.option("--legs", is_flag=True,
              help="Blue-green: two legs of --nodes nodes each; live traffic to one, a preview route "
              "to the other.")
@click.option("--preview", default=None, metavar="ADDR:PORT",
              help="HAProxy frontend reaching the idle leg, with --legs (default: 127.0.0.1:8082 for "
              "the default lab, else a free port).")
@click.option("--metrics", default=None, metavar="ADDR:PORT",
              help="HAProxy's Prometheus exporter (default: 127.0.0.1:8404 for the default lab, else "
              "a free port).")
@click.option("--prometheus", "with_prometheus", is_flag=True,
              help="Also run a Prometheus server scraping HAProxy.")
@click.option("--prometheus-address", default=None, metavar="ADDR:PORT",
              help="Where that Prometheus listens; implies --prometheus (default: 127.0.0.1:9090 for "
              "the default lab, else a free port).")
@click.option("--soak", type=float, default=12.0, show_default=True,
              help="Seconds of soak analysis in the lab's config (0: none).")
@click.option("--topology", type=click.Choice(["lab", "production"]), default="lab", show_default=True,
              help="production: a deploy user with limited sudo, HAProxy on a host of its own "
              "reached over SSH, nodes pulling the store over HTTP only.")
@click.option("--envs", default=None, metavar="ENV,ENV,...",
              help="A path to live: one fleet of --nodes per environment, in this order (each its "
              "own HAProxy, keys, pointer, state directory and config; one artefact store and one "
              "promotion store shared). Environment N is on the network after N-1's.")
@click.option("--ssm", is_flag=True,
              help="With --envs: SSM pointers, in moto's server on loopback, instead of files.")
def up(
    nodes: int,
    lab_dir: Path | None,
    net: str,
    ssh_port: int | None,
    frontend: str | None,
    store: str | None,
    app: str,
    seed: str | None,
    legs: bool,
    preview: str | None,
    metrics: str | None,
    with_prometheus: bool,
    prometheus_address: str | None,
    soak: float,
    topology: str,
    envs: str | None,
    ssm: bool,
) -> None:
    """Build the lab (or restart whatever part of it has died).

    Ports not given are chosen once and recorded in the lab's lab.json: the default lab (the
    default directory and network) takes the defaults shown, any other lab (its own --dir or
    --net) free ports, so it never holds one the default lab needs. A later `lab up` of the
    same lab keeps them; `lab status` shows them."""
    lab_dir = lab_dir or default_lab_dir()
    if envs is not None:
        _path_up(lab_dir, envs, nodes=nodes, net=net, app=app, seed=seed, legs=legs, soak=soak,
                 topology=topology, ssm=ssm)
        return
    if ssm:
        raise click.UsageError("--ssm is for a path to live: give --envs too")
    if PathLab.holds_one(lab_dir):
        raise LabError(f"{lab_dir} holds a path-to-live lab",
                       hint="pass --envs as it was built, or `deployer lab down` it first")
    spec = LabSpec(
        nodes=nodes, net=net, ssh_port=ssh_port, frontend=frontend, store=store, app=app, seed=seed,
        legs=legs, preview=preview, metrics=metrics,
        prometheus=with_prometheus or prometheus_address is not None,
        prometheus_address=prometheus_address, soak=soak, topology=topology,
    )
    the_lab = Lab(lab_dir)
    started = time.monotonic()
    with console.status(f"bringing up {nodes} lab node(s) in {the_lab.dir}"):
        state = the_lab.up(spec)
    console.print(
        f"lab up: {len(state.nodes)} node(s) in {time.monotonic() - started:.1f} s; "
        f"frontend {the_lab.frontend_url}, store {the_lab.store_url}, "
        "metrics http://{}:{}/metrics".format(*state.spec.metrics_address),
        soft_wrap=True,
    )
    console.print(f"config: {the_lab.config_path}", soft_wrap=True)
    console.print(
        f"use it with: export DEPLOYER_CONFIG={the_lab.config_path}  (or --config on each command)",
        soft_wrap=True,
    )
    console.print(
        f"its runner: deployer pointer set --env {spec.env} --version V --reason TEXT, then "
        f"deployer agent --env {spec.env} --once",
        soft_wrap=True,
    )


def _path_up(lab_dir: Path, envs: str, *, nodes: int, net: str, app: str, seed: str | None,
             legs: bool, soak: float, topology: str, ssm: bool) -> None:
    names = tuple(e.strip() for e in envs.split(",") if e.strip())
    spec = PathSpec(envs=names, nodes=nodes, net=net, app=app, seed=seed, legs=legs, soak=soak,
                    topology=topology, ssm=ssm)
    path = PathLab(lab_dir)
    started = time.monotonic()
    with console.status(f"bringing up {len(names)} environment(s) of {nodes} node(s) in {path.dir}"):
        state = path.up(spec)
    status = path.status()
    console.print(f"lab up: {', '.join(names)} in {time.monotonic() - started:.1f} s; store "
                  f"{status.store_url}, promotion store {status.promotion_store}"
                  + (f", SSM at {state.ssm_endpoint}" if state.ssm_endpoint else ""), soft_wrap=True)
    for name, env_status in status.envs.items():
        console.print(f"{name}: frontend {env_status.frontend_url}; config {env_status.config_path}",
                      soft_wrap=True)
    first = names[0]
    console.print(f"each environment's runner: deployer agent --env ENV --config "
                  f"{path.config_path('ENV')}; to deploy: deployer pointer set --env {first} "
                  f"--version 1.0.0 --reason ... --config {path.config_path(first)}", soft_wrap=True)


@lab.command()
@_dir_option
def down(lab_dir: Path | None) -> None:
    """Stop every lab process and remove the lab's files (every environment of a path to live)."""
    where = lab_dir or default_lab_dir()
    if PathLab.holds_one(where):
        PathLab(where).down()
    else:
        Lab(where).down()
    console.print(f"lab down: {Path(where).absolute()} removed")


def _yes_no(value: bool) -> str:
    return "[green]yes[/]" if value else "[red]no[/]"


def _render(status: LabStatus) -> None:
    if not status.exists:
        console.print(f"no lab in {status.dir} (run `deployer lab up`)")
        return
    table = Table(title=f"lab {status.dir}")
    legs = any(n.leg for n in status.nodes)
    columns = ("node", *(("leg",) if legs else ()), "address", "ssh", "sshd", "supervisord",
               "version", "healthy", "haproxy")
    for column in columns:
        table.add_column(column)
    for n in status.nodes:
        lb = n.lb_state or "-"
        colour = "green" if lb.startswith("UP") else "yellow" if lb in ("-", "DRAIN") else "red"
        leg = [f"{n.leg}{' (live)' if n.leg == status.live_leg else ''}"] if legs else []
        table.add_row(
            n.name, *leg, n.address, str(n.ssh_port), _yes_no(n.sshd_up), _yes_no(n.supervisord_up),
            n.app_version or "-", _yes_no(n.app_healthy), f"[{colour}]{lb}[/]",
        )
    out.print(table)
    where = (f"on its own host {status.lb_host} (runtime API there only, over SSH)"
             if status.lb_host else f"runtime API {status.haproxy_socket}")
    out.print(f"haproxy:   {'up' if status.haproxy_up else 'DOWN'}  frontend {status.frontend_url}"
              f"  {where}")
    if status.preview_url:
        out.print(f"preview:   {status.preview_url}  (the idle leg; live: {status.live_leg or 'unknown'})")
    out.print(f"metrics:   {status.metrics_url}")
    if status.prometheus_url:
        out.print(f"prometheus: {'up' if status.prometheus_up else 'DOWN'}  {status.prometheus_url}")
    out.print(f"store:     {'up' if status.store_up else 'DOWN'}  {status.store_url}"
              f"  (publishes to {status.store_dir})")
    out.print(f"releases:  {', '.join(status.published) or 'none'}")
    out.print(f"config:    {status.config_path}")
    out.print(f"inventory: {status.inventory_path}")
    out.print(f"keys:      {status.keys_dir}")


@lab.command()
@_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
def status(lab_dir: Path | None, as_json: bool) -> None:
    """Show the lab's nodes, services and files (each environment's, for a path to live)."""
    where = lab_dir or default_lab_dir()
    if PathLab.holds_one(where):
        path = PathLab(where).status()
        if as_json:
            print_json(path.to_dict())
        else:
            _render_path(path)
        return
    result = Lab(where).status()
    if as_json:
        print_json(result.to_dict())
    else:
        _render(result)


def _render_path(status: PathStatus) -> None:
    if not status.exists:
        console.print(f"no path-to-live lab in {status.dir}")
        return
    for name, env_status in status.envs.items():
        out.print(f"[bold]environment {name}[/]")
        _render(env_status)
    out.print("[bold]shared by the environments[/]")
    out.print(f"store:           {status.store_url}")
    out.print(f"promotion store: {status.promotion_store}")
    if status.ssm_endpoint:
        out.print(f"SSM (moto):      {'up' if status.ssm_up else 'DOWN'}  {status.ssm_endpoint}")
